"""One stage's descent over the pixels: Adam or L-BFGS with its schedule and budgets, the
average of its iterates, the stopping rule, and the guard that undoes a failed update. Each
``Descent.step`` is costs → backward → optimizer step → clamp → average; what it descends is a
``Gradient`` (``criterion.Criterion.gradient``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .criterion import Gradient
from ..config import LBFGS_HISTORY, StyleParams
from ..errors import OptimizationError


class Stage(NamedTuple):
    """One scale of the schedule: steps ``start`` to ``end`` at ``size`` (height, width)."""

    start: int
    end: int
    size: tuple[int, int]


# A failed update (``Descent``): undone when its line search overflows, a cost or gradient is
# not finite, or an update's start costs more than BLOWUP times the last good start (the costs
# only fall within a stage); after FAILURES_BEFORE_SMALLER_STEPS failures in a row the stage's
# learning rate shrinks by SMALLER_STEPS each time, and after GIVE_UP_AFTER the stage gives up.
BLOWUP = 1e3
FAILURES_BEFORE_SMALLER_STEPS = 2
SMALLER_STEPS = 0.1
GIVE_UP_AFTER = 8


@dataclass
class DescentState:
    """What a stage's descent continues from (``Descent.state_dict``), all on the CPU: the
    one record of it, which a ``Checkpoint`` holds beside the image and the history."""

    optimizer: dict  # the optimizer's state_dict
    scale: float = 1.0  # L-BFGS's objective normalisation, fixed at the stage's start
    average: Tensor | None = None  # with params.average: the stage's biased average
    average_weight: float = 0.0  # ...and the weight its bias correction divides by
    # with params.stop_tol: each image's total cost (N,) at the stage's last convergence check
    reference: Tensor | None = None
    lr_factor: float = 1.0  # the stage's learning rate as its failed updates left it

    def image(self, fallback: Tensor) -> Tensor:
        """The stage's picture as it stood: its average where it averages, else ``fallback``."""
        return Average.debiased(self.average, self.average_weight) if self.average is not None else fallback


class _Diverged(Exception):
    """An update that cannot stand; its message says why."""


class Descent:
    """One stage's optimizer over the image's pixels (and the average of its iterates): each
    ``step`` is costs → backward → optimizer step → clamp to [0, 1] → average.

    Guarded (not in the paper): L-BFGS's strong-Wolfe line search answers a NaN cost by
    stepping further, until its step no longer fits a float (torch raises), and an fp16 or
    bf16 network can overflow. An update that fails so is undone where it happens: the image
    (and the average) go back to the last update start whose costs were finite and in range,
    L-BFGS's history or Adam's moments are dropped, and the stage goes on; failures in a row
    shrink the learning rate. Each is said in ``recoveries``."""

    def __init__(self, image: Tensor, gradient: Gradient, params: StyleParams, stage: Stage,
                 record: Callable[[int, tuple], None], fp16: bool = False, check_every: int = 1,
                 recoveries: list[str] | None = None):
        """``gradient(image, scale_loss)``: the costs ``(total, content, style, tv)``, each
        ``(N,)``, with the gradient of ``scale_loss(total.sum())`` accumulated into
        ``image.grad`` (``scale_loss`` None: the costs alone); ``record(step, costs)``: the
        loop's history of the costs at a step's start. Adam's costs are checked every
        ``check_every`` steps (a host synchronisation each; L-BFGS syncs every evaluation);
        undone updates are appended to ``recoveries``."""
        self.image, self.gradient, self.params, self.stage, self.record = image, gradient, params, stage, record
        self.optimizer, self.scale = _optimizer(params, image, gradient)
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none.
        self.scaler = torch.amp.GradScaler(image.device.type, enabled=fp16)
        self.average = Average(params.average, image) if params.average else None
        self.latest: Tensor | None = None  # each image's total cost (N,) at the last update's start
        self.reference: Tensor | None = None  # ...and at the last convergence check (stop_tol)
        self.check_every = max(1, check_every)
        self.recoveries = recoveries if recoveries is not None else []
        self.lr_factor = 1.0  # shrunk by failures in a row
        self.failures = 0  # failures since the last good update start
        self.restored = False  # the image is the last good start, put back
        # the last good update start: its step, image, average (biased, weight) and total cost
        self.good: tuple[int, Tensor, Tensor | None, float, float] | None = None

    def state_dict(self) -> DescentState:
        """The optimizer's state, L-BFGS's objective scale, the average, the stopping rule's
        reference and the learning rate's factor, on the CPU."""
        average = self.average.biased.detach().cpu().clone() if self.average is not None else None
        return DescentState(_cpu_copy(self.optimizer.state_dict()), self.scale, average,
                            self.average.weight if self.average is not None else 0.0,
                            self.reference.cpu().clone() if self.reference is not None else None, self.lr_factor)

    def load_state_dict(self, state: DescentState) -> None:
        self.optimizer.load_state_dict(state.optimizer)
        self.scale, self.lr_factor = state.scale, state.lr_factor
        if self.average is not None and state.average is not None:
            self.average.biased.copy_(state.average)
            self.average.weight = state.average_weight
        if state.reference is not None:
            self.reference = state.reference.to(self.image.device)

    def warm(self, previous: dict) -> None:
        """Start from the previous scale's Adam moments, upsampled to this one's size (not in
        the paper; crowsonkb/style-transfer-pytorch does this): the first bicubic, the second
        bilinear and clamped >= 0 (a variance), the step count, and so the bias correction, kept."""
        old = previous["state"].get(0)
        if old is None:
            return
        size = tuple(self.image.shape[-2:])

        def up(moment: Tensor, mode: str) -> Tensor:
            moment = moment.to(self.image.device, torch.float32)
            return torch.nn.functional.interpolate(moment, size=size, mode=mode, align_corners=False)

        state = {"step": old["step"].clone(), "exp_avg": up(old["exp_avg"], "bicubic"),
                 "exp_avg_sq": up(old["exp_avg_sq"], "bilinear").clamp_min(0)}
        self.optimizer.load_state_dict({"state": {0: state}, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def result(self) -> Tensor:
        return self.average.value() if self.average is not None else self.image

    def learning_rate(self, step: int) -> float:
        """``lr`` at ``step`` of this stage: from ``lr`` at its first step down a half cosine
        to ``lr · lr_end`` at its last (constant with ``lr_end`` 1)."""
        params, (start, end, _) = self.params, self.stage
        lr = params.lr * self.lr_factor
        if params.lr_end == 1.0 or end - start < 2:
            return lr
        done = (step - start) / (end - start - 1)  # 0 at the stage's first step, 1 at its last
        return lr * (params.lr_end + (1 - params.lr_end) * (1 + math.cos(math.pi * done)) / 2)

    def step(self, step: int) -> int:
        """One update, then the pixels clipped to [0, 1]; the steps done after it (``step``
        itself when the update failed and was undone). An Adam update is one step; an L-BFGS
        one runs ``clip_every`` iterations (fewer at the stage's end) in one call of the
        optimizer, so that each iteration after the first starts from its line search's last
        evaluation, and clips after them."""
        adam = self.params.optimizer == "adam"
        iterations = 1 if adam else min(self.params.clip_every, self.stage.end - step)
        self._budget(step, iterations)
        try:
            parts = self._adam(step) if adam else self._lbfgs(step)
        except _Diverged as failure:
            self._recover(step, str(failure))
            return step
        except RuntimeError as error:
            if "overflow" not in str(error):
                raise
            # torch's strong-Wolfe line search extrapolated its step past the float range
            self._recover(step, "its line search's step overflowed")
            return step
        self.record(step, parts)  # the costs at the update's start
        self.latest = parts[0].detach()
        with torch.no_grad():
            self.image.clamp_(0, 1)
        if self.average is not None:
            self.average.update(self.image)
        return step + iterations

    def _budget(self, step: int, iterations: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
            if self.params.optimizer == "lbfgs":
                # max_eval is the line searches' budget per call: 25 an iteration (torch's
                # default, max_iter * 5 // 4, would stall a one-iteration call completely)
                group["max_iter"], group["max_eval"] = iterations, 25 * iterations

    def _adam(self, step: int) -> tuple:
        """An Adam step; the costs at its start."""
        self.optimizer.zero_grad(set_to_none=True)
        # images of a batch are independent: the gradient of their sum is each one's own
        parts = self.gradient(self.image, self.scaler.scale)
        if self.good is None or step % self.check_every == 0:
            self._check(step, parts[0])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return parts

    def _lbfgs(self, step: int) -> tuple:
        """One call of L-BFGS (its iterations and line searches); the costs at its start."""
        first = []  # the call's first evaluation

        def closure():
            self.optimizer.zero_grad(set_to_none=True)
            parts = self.gradient(self.image, lambda loss: loss * self.scale)
            if not first:
                self._check(step, parts[0])
                first.append(parts)
            loss = parts[0].detach().sum() * self.scale
            if not torch.isfinite(loss):
                raise _Diverged(f"its line search met a cost of {float(loss)}")
            return loss

        self.optimizer.step(closure)
        return first[0]

    def _check(self, step: int, total: Tensor) -> None:
        """An update's start: a good one (finite costs and gradient, the costs in range of the
        last good start's) is kept to come back to; any other undoes the update before it."""
        cost = float(total.detach().sum())
        if not math.isfinite(cost):
            raise _Diverged(f"the cost became {cost}")
        if self.good is not None and self.good[4] > 0 and cost > BLOWUP * self.good[4]:
            raise _Diverged(f"the cost rose from {self.good[4]:.4g} to {cost:.4g}")
        # (under fp16 the loss scaler owns non-finite gradients: it skips the step and scales down)
        if (self.image.grad is not None and not self.scaler.is_enabled()
                and not bool(torch.isfinite(self.image.grad).all())):
            raise _Diverged("the gradient became non-finite")
        average = self.average
        self.good = (step, self.image.detach().clone(),
                     average.biased.clone() if average is not None else None,
                     average.weight if average is not None else 0.0, cost)
        if not self.restored:  # (the image restored is no new evidence: the failures stay counted)
            self.failures = 0
        self.restored = False

    def _recover(self, step: int, why: str) -> None:
        """Back to the last good start with a fresh optimizer state, the learning rate shrunk
        after failures in a row; OptimizationError once they are too many."""
        self.failures += 1
        if self.failures > GIVE_UP_AFTER or self.good is None:
            raise OptimizationError(f"the descent failed {self.failures} time(s) in a row at step {step}: {why}",
                                    hint=_what_to_try(self.params))
        if self.failures >= FAILURES_BEFORE_SMALLER_STEPS:
            self.lr_factor *= SMALLER_STEPS
        smaller = f", learning rate x{self.lr_factor:g}" if self.lr_factor != 1 else ""
        self._restore(f"step {step}: {why}; restarted from step {self.good[0]}'s image{smaller}")

    def _restore(self, said: str) -> None:
        back, image, biased, weight, _ = self.good
        with torch.no_grad():
            self.image.copy_(image)
            self.image.grad = None
        if self.average is not None:
            self.average.biased.copy_(biased)
            self.average.weight = weight
        self.optimizer.state.clear()  # L-BFGS's history, Adam's moments: built on the failed steps
        self.restored = True
        self.recoveries.append(said)

    def finish(self, step: int) -> None:
        """The stage's end: a result that is not finite (a failure after the last check) goes
        back to the last good start."""
        if bool(torch.isfinite(self.result()).all()):
            return
        if self.good is None:
            raise OptimizationError(f"the image became non-finite by step {step}", hint=_what_to_try(self.params))
        self._restore(f"step {step}: the stage ended on a non-finite image; kept step {self.good[0]}'s")


    def converged(self, previous: int, done: int) -> bool:
        """The stopping rule (``params.stop_tol``, as artistic-videos stops): at each update
        that reaches or passes a multiple of ``stop_window`` steps into the stage, whether every
        image's total cost changed by less than ``stop_tol`` of itself since the last check
        (the first check compares with the stage's first cost). One host synchronisation a
        window."""
        params, start = self.params, self.stage.start
        if not params.stop_tol or self.latest is None:
            return False
        if self.reference is None:
            self.reference = self.latest
            return False
        if (done - start) // params.stop_window <= (previous - start) // params.stop_window:
            return False
        change = (self.reference - self.latest).abs() / self.reference.abs().clamp_min(1e-30)
        self.reference = self.latest
        return bool((change < params.stop_tol).all())


def _what_to_try(params: StyleParams) -> str:
    return f"lower the learning rate (lr={params.lr:g})" + (", or precision: fp32" if params.precision != "fp32" else "")


def _optimizer(params: StyleParams, image: Tensor, gradient: Gradient):
    if params.optimizer == "adam":
        return torch.optim.Adam([image], lr=params.lr), 1.0
    # clip_every L-BFGS iterations per .step() call (Descent.step sets max_iter and max_eval
    # each call; the history persists between calls), so progress and clipping happen per
    # call: per iteration with clip_every 1, as with Adam.
    optimizer = torch.optim.LBFGS([image], lr=params.lr, max_iter=1, max_eval=25,
                                  history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe")
    # L-BFGS's tolerances and first step length are absolute; on costs of ~1e12 (the
    # paper's weights on 0-255 activations) its float32 line search overflows. Dividing
    # the objective by its initial value changes no minimiser and keeps it near 1.
    with torch.no_grad():
        scale = float(1.0 / gradient(image, None)[0].sum().clamp_min(1e-12))
    return optimizer, scale


class Average:
    """A bias-corrected exponential moving average of the iterates (as crowsonkb's
    style-transfer-pytorch keeps): the output is the average, which the noise of the last
    steps does not reach. Not in the paper: the seed's loop has none (``average`` 0); the
    default preset averages (0.7)."""

    def __init__(self, decay: float, like: Tensor):
        self.decay = decay
        self.biased = torch.zeros_like(like, memory_format=torch.contiguous_format)
        self.weight = 0.0  # 1 - decay^n after n updates: what the bias correction divides by

    def update(self, image: Tensor) -> None:
        with torch.no_grad():
            self.biased.mul_(self.decay).add_(image.detach(), alpha=1 - self.decay)
        self.weight = 1 - (1 - self.weight) * self.decay

    def value(self) -> Tensor:
        return self.debiased(self.biased, self.weight)

    @staticmethod
    def debiased(biased: Tensor, weight: float) -> Tensor:
        return biased / weight if weight else biased  # (no update yet: nothing to correct)


def _cpu_copy(obj):
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj
