"""A descent that survives its optimiser (issue 46): an update whose line search overflows,
whose cost or gradient is not finite, or that makes the cost far worse is undone where it
happens, and the stage goes on to a finite picture. Each case is provoked by a criterion built
for it; the engine's own loop (``Descent``) runs it."""
import pytest
import torch

from nstbatch.config import resolve_params
from nstbatch.engine.descent import Descent, GIVE_UP_AFTER, Stage
from nstbatch.errors import OptimizationError
from tests.conftest import style_target, stylized

SIZE = (8, 8)
TARGET = torch.linspace(0.2, 0.8, 3 * SIZE[0] * SIZE[1]).reshape(1, 3, *SIZE)


class Criterion:
    """A bowl around ``TARGET``, the costs as the loop's ``Gradient`` gives them. ``slope``:
    evaluations (counted from 1) that see instead a slope falling without end, down which
    torch's strong-Wolfe line search extrapolates tenfold an evaluation until its step no
    longer fits a float; ``nan``: evaluations whose cost and gradient are NaN (a transient
    overflow of a half-precision network)."""

    def __init__(self, slope=(), nan=()):
        self.slope, self.nan, self.calls = set(slope), set(nan), 0

    def cost(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls in self.slope:
            return 1 - 1e-3 * x.double().sum(dim=(1, 2, 3))  # (float64: no -inf before the step overflows)
        cost = ((x - TARGET) ** 2).sum(dim=(1, 2, 3))
        return cost * float("nan") if self.calls in self.nan else cost

    def __call__(self, x: torch.Tensor, scale_loss):
        self.calls += 1
        with torch.enable_grad() if scale_loss is not None else torch.no_grad():
            cost = self.cost(x)
            if scale_loss is not None:
                scale_loss(cost.sum()).backward()
        zero = torch.zeros_like(cost)
        return cost.detach(), cost.detach(), zero, zero


def descend(criterion, start, steps=30, **overrides):
    """A stage of ``steps`` from ``start``: the descent and its costs at each update's start."""
    preset = "fast" if overrides.get("optimizer", "lbfgs") == "lbfgs" else "seed"
    params = resolve_params(preset, {"steps": steps, "average": 0.0, **overrides})
    image = start.clone().requires_grad_(True)
    recorded = []
    descent = Descent(image, criterion, params, Stage(0, steps, SIZE), lambda step, parts: recorded.append(parts))
    step = 0
    while step < steps:
        step = descent.step(step)
    descent.finish(step)
    return descent, [float(parts[0].sum()) for parts in recorded]


def final_cost(descent) -> float:
    return float(((descent.result().detach() - TARGET) ** 2).sum())


START = torch.full((1, 3, *SIZE), 0.5)


def test_a_line_search_that_overflows_is_restarted_from_the_last_good_image():
    # the first call's line search extrapolates down the slope until torch raises "value cannot
    # be converted to type float without overflow" in _add_grad, as on a real pair in fp32
    descent, costs = descend(Criterion(slope=range(1, 60)), START, clip_every=5)
    assert len(descent.recoveries) >= 1 and "overflowed" in descent.recoveries[0], descent.recoveries
    assert "restarted from step 0's image" in descent.recoveries[0]
    image = descent.result()
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert final_cost(descent) < 1e-3 * float(((START - TARGET) ** 2).sum())  # the bowl's bottom, after all


def test_the_criterion_really_overflows_torchs_line_search():
    """The case above, without the guard: the traceback users met."""
    image = START.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image], lr=1, max_iter=5, max_eval=125, line_search_fn="strong_wolfe")
    criterion = Criterion(slope=range(1, 60))

    def closure():
        optimizer.zero_grad()
        return criterion(image, lambda loss: loss)[0].sum()

    with pytest.raises(RuntimeError, match="overflow"):
        optimizer.step(closure)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_non_finite_cost_is_undone_and_the_stage_goes_on(optimizer):
    # evaluation 4: at an Adam update's start (its check), or inside an L-BFGS line search
    descent, costs = descend(Criterion(nan=[4]), START, optimizer=optimizer, clip_every=1, lr=0.05)
    assert len(descent.recoveries) == 1, descent.recoveries
    assert "nan" in descent.recoveries[0], descent.recoveries
    assert all(cost == cost for cost in costs)  # the history never holds the NaN
    assert torch.isfinite(descent.result()).all()
    assert final_cost(descent) < 0.5 * float(((START - TARGET) ** 2).sum())
    assert descent.lr_factor == 1.0  # one failure: the same steps again, from a fresh state


def test_a_step_that_makes_the_cost_far_worse_is_undone_with_smaller_steps():
    # Adam at lr 5 from next to the bowl's bottom: its first step throws every pixel to 0 or 1,
    # a cost orders of magnitude above the start's
    near = TARGET + 1e-3 * torch.sin(torch.arange(TARGET.numel(), dtype=torch.float32)).reshape(TARGET.shape)
    descent, costs = descend(Criterion(), near, optimizer="adam", lr=5.0, steps=20)
    assert any("the cost rose" in said for said in descent.recoveries), descent.recoveries
    assert descent.lr_factor < 1 and "learning rate x" in descent.recoveries[-1]
    assert max(costs) < 1e3 * costs[0]  # no recorded start ever far above the first
    assert torch.isfinite(descent.result()).all()
    assert final_cost(descent) < 10 * costs[0]


def test_a_descent_that_keeps_failing_says_so_instead_of_looping():
    with pytest.raises(OptimizationError, match=f"failed {GIVE_UP_AFTER + 1} time\\(s\\) in a row") as failure:
        descend(Criterion(nan=range(3, 100_000)), START, clip_every=5)  # NaN after the first start
    assert "lr=" in failure.value.hint


def test_the_recoveries_reach_the_result_and_a_checkpoint_carries_them(monkeypatch):
    """Through ``Stylization``: a real network whose cost turns NaN once; the run resumed from
    a checkpoint taken after it ends on the same picture and still lists it."""
    from nstbatch.engine import criterion, optimize as engine
    from nstbatch.engine.vgg import build_features

    params = resolve_params("seed", {"steps": 6, "size": 32, "content_layers": ("relu2_2",),
                                     "style_layers": ("relu1_1", "relu2_1"), "init": "content"})
    content = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    features = build_features(params)
    real = criterion.costs
    count = [0]

    def once_nan(*args, **kwargs):
        parts = real(*args, **kwargs)
        count[0] += 1
        return (parts[0] * float("nan"), *parts[1:]) if count[0] == 3 else parts

    monkeypatch.setattr(criterion, "costs", once_nan)
    whole = stylized(content, style, params, features=features)
    assert len(whole.recoveries) == 1 and whole.recoveries[0].startswith("step 2: the cost became nan")
    count[0] = 0
    with engine.Stylization(content, style_target(style, params, content), params, features=features) as run:
        for point in run:
            if point.step == 4:
                checkpoint = run.checkpoint()
                break
    assert checkpoint.recoveries == whole.recoveries
    count[0] = 100  # no NaN after the resume
    resumed = stylized(content, style, params, features=features, resume=checkpoint)
    assert resumed.recoveries == whole.recoveries
    assert torch.equal(resumed.image, whole.image)
