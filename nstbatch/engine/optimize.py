"""The optimisation loop: pixels of the generated image, costs from ``losses``, features from
``vgg``. Tensors in, tensors out; progress goes to a callback, never to a file or the screen.

Read top down: what the loop takes and gives (``Targets``, ``Checkpoint``, ``Point``, ``Stage``);
``optimize``; ``Stylization``, one call, stage after stage, which its caller drives update by
update (snapshots, checkpoints and stopping are the caller's); ``_Descent``, one stage, whose
``step`` is costs → backward → optimizer step → clamp → average; then what a job is pulled towards
(``job_targets``, ``stage_targets``), where it starts (``initial_image``), its schedule
(``stages``) and the costs of a step (``costs``)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Sequence, Union

import torch
from torch import Tensor

from . import losses, temporal
from .temporal import Frame
from .color import luminance, prepare_style, recolor, with_chroma
from ..config import LBFGS_HISTORY, StyleParams
from .devices import autocast_dtype
from ..geometry import long_side_size
from .pixels import resize_tensor
from ..errors import OptimizationError
from .targets import StyleTarget, blend_targets, torch_style_targets
from .tiles import Tile, backpropagate, plan_tiles, read
from ..layers import min_image_side, pools_before
from .vgg import VGGFeatures, check_image_size
from .weights import load_weights


@dataclass(frozen=True)
class Progress:
    """Costs of the image after ``step`` updates (step 0: the initial image); batch means."""

    step: int
    steps: int
    content: float
    style: float
    tv: float
    total: float


@dataclass
class Result:
    image: Tensor  # (N, 3, H, W) in [0, 1]
    history: list[Progress] = field(default_factory=list)  # batch means
    finals: list[Progress] = field(default_factory=list)  # each image's own final costs
    # with params.stop_tol: the steps at which a scale met the stopping rule in this call (its
    # remaining steps were skipped; a scale that ran to its end is not listed)
    converged: list[int] = field(default_factory=list)
    # updates that failed and were undone (``_Descent``'s guard), each said in words, the
    # resumed run's included
    recoveries: list[str] = field(default_factory=list)

    def final(self, index: int = 0) -> Progress:
        """Image ``index``'s final costs (the history's last entry is the batch's mean)."""
        return self.finals[index] if self.finals else self.history[-1]


@dataclass(frozen=True)
class Targets:
    """What the generated image is pulled towards, computed once per job."""

    content: dict[str, Tensor]  # layer -> activation of the content image, (N, C, H, W)
    # the blended style target (targets.py): per layer the style image(s)' channel means and
    # Gram matrix per position, G_S / (n_H·n_W), (1, ...) or one per image (N, ...)
    style: StyleTarget
    # (N,): each image's share of beta under params.style_cap (None: no cap, the full beta)
    style_factor: Tensor | None = None
    # style_loss w2: layer -> losses.w2_target of the style (covariance, its root, eps)
    w2: dict[str, tuple[Tensor, Tensor, Tensor]] | None = None
    # a video frame's ties to earlier outputs: (that output warped into this frame (N, 3, H, W),
    # where the warp is trusted (N, 1, H, W)), weighted by params.temporal_weight (temporal.py)
    temporal: tuple[tuple[Tensor, Tensor], ...] = ()


Styles = Union[Tensor, Sequence[tuple[Tensor, float]]]
# gradient(image, scale_loss): the costs (total, content, style, tv), each (N,), and the gradient
# of scale_loss(total.sum()) accumulated into image.grad (scale_loss None: the costs alone)
Gradient = Callable[[Tensor, "Callable[[Tensor], Tensor] | None"], tuple]


@dataclass
class Checkpoint:
    """Everything needed to continue a job exactly where it stopped: after ``step`` updates."""

    step: int
    image: Tensor  # (N, 3, H, W), on the CPU
    optimizer: dict  # the optimizer's state_dict, tensors on the CPU
    history: list[Progress]
    scale: float = 1.0  # L-BFGS's objective normalisation, fixed at step 0
    average: Tensor | None = None  # with params.average: the stage's biased average, on the CPU
    average_weight: float = 0.0  # ...and the weight its bias correction divides by
    # with params.stop_tol: each image's total cost (N,) at the stage's last convergence check
    reference: Tensor | None = None
    lr_factor: float = 1.0  # the stage's learning rate as its failed updates left it (``_Descent``)
    recoveries: list[str] = field(default_factory=list)  # the run's undone updates so far

    def descent_state(self) -> dict:
        """The part a stage's descent continues from (``_Descent.load_state_dict``)."""
        return {"optimizer": self.optimizer, "scale": self.scale, "average": self.average,
                "average_weight": self.average_weight, "reference": self.reference, "lr_factor": self.lr_factor}


@dataclass(frozen=True)
class Memory:
    """How a run fits in memory: ``checkpointing`` recomputes VGG activations in the backward
    pass instead of storing them (None: on for stages of more than 6 megapixels per image on a
    GPU, a 4000 px side, where they would not fit); ``tile``, a side in px: stages larger than
    that are stepped tile by tile (``tiles``; None: never). ``jobs.memory.plan_memory`` chooses
    both for a job from what the device has free."""

    checkpointing: bool | None = None
    tile: int | None = None


class Point(NamedTuple):
    """A point between two updates, where ``Stylization`` hands control to its caller:
    ``step`` updates are done; ``previous``, those done at the point before (at the first
    point, the same)."""

    step: int
    previous: int

    def passed(self, every: int) -> bool:
        """Whether the update that led here reached or passed a multiple of ``every`` (0: never):
        the cadence of snapshots and checkpoints, which an L-BFGS call of several iterations
        may step over."""
        return bool(every) and self.step // every > self.previous // every


class Stage(NamedTuple):
    """One scale of the schedule: steps ``start`` to ``end`` at ``size`` (height, width)."""

    start: int
    end: int
    size: tuple[int, int]


def optimize(content: Tensor, style: Styles | None, params: StyleParams, *,
             features: VGGFeatures | None = None,
             style_targets: StyleTarget | None = None,
             init: Tensor | Frame | None = None,
             resume: Checkpoint | None = None,
             on_step: Callable[[Progress], None] | None = None,
             report_every: int = 1,
             memory: Memory = Memory()) -> Result:
    """Stylize ``content`` ``(N, 3, H, W)`` with ``style`` ``(1, 3, h, w)``, both in [0, 1];
    or with a blend, a sequence of ``(style, weight)`` (weights are normalised to sum to 1);
    or with precomputed ``style_targets`` (then ``style`` may be None). ``init``: an image
    to start from instead of the content plus noise (``initial_image``); ``resume``: a
    ``Checkpoint`` to continue from.

    Runs ``params.steps`` updates of Adam or L-BFGS over the pixels, clipping them to [0, 1]
    after each (L-BFGS: after each call of ``clip_every`` iterations); returns the image and
    the costs after every reported step (step 0 included). This is ``Stylization`` run to its
    end; a caller that snapshots, checkpoints or stops between updates drives one itself
    (``jobs.single.optimize_job`` does).
    With several ``params.scales`` the steps are shared out coarse to fine (``stages``): each
    scale starts from the previous one's result (``scale_carry``: upsampled, or its departure
    from the content laid on this scale's content), with a fresh optimizer or the previous
    scale's Adam moments (``scale_start``), and ends in its last image or the average of its
    iterates (``average``); the style targets (Grams per position) serve every scale, the
    content targets are taken at each.

    ``on_step`` hears the costs every ``report_every`` steps and at the end: they are read back
    from the device (a host synchronisation) only then, the history holds those steps, and a
    non-finite cost is caught there (``OptimizationError``). ``params.precision`` runs the
    network under autocast (Grams stay fp32). ``memory`` (``Memory``): activation
    checkpointing, and the tiles a print is stepped in (memory bounded by a tile and its
    margin, the gradient the whole image's to float rounding).
    ``init`` may be a video frame's ``temporal.Frame``: its start (the earlier output warped
    into it) and its ties to earlier outputs, each (that output warped into this frame, where
    the warp is trusted), pulled towards with ``params.temporal_weight``.

    Colour: with ``preserve_color: luminance`` the content and styles are reduced to their
    luminance and the result (and every snapshot) gets the content's chroma back.
    """
    with Stylization(content, style, params, features=features, style_targets=style_targets, init=init,
                     resume=resume, on_step=on_step, report_every=report_every, memory=memory) as run:
        for _ in run:
            pass
    return run.result()


class Stylization:
    """One call's descent, driven by its caller::

        with Stylization(content, style, params, features=features) as run:
            for point in run:  # between two updates (the first: before any)
                if point.passed(50):
                    save(point.step, run.image())
                if stop_requested():
                    keep(run.checkpoint())  # passed back as resume=, it continues the run
                    break
        result = run.result()  # once the iteration has ended

    Each ``next`` runs one update of the schedule (``stages``): each stage is a ``_Descent`` of
    its own, started from the previous stage's result. The loop owns no file, clock or
    signal: snapshots, checkpoints and preemption are the caller's. The ``with`` block sets
    the network's memory layout and activation checkpointing for the run and puts them back
    afterwards, whatever happens (the executor shares one network between jobs)."""

    def __init__(self, content: Tensor, style: Styles | None, params: StyleParams, *,
                 features: VGGFeatures | None = None, style_targets: StyleTarget | None = None,
                 init: Tensor | Frame | None = None, resume: Checkpoint | None = None,
                 on_step: Callable[[Progress], None] | None = None, report_every: int = 1,
                 memory: Memory = Memory()):
        self.features = features if features is not None else build_features(params, content.device)
        self.tile = memory.tile
        self.params, self.on_step, self.report_every = params, on_step, report_every
        # a video frame (temporal.Frame): its start is the init, its ties pull with temporal_weight
        self.temporal = tuple(init.ties) if isinstance(init, Frame) else ()
        init = init.start if isinstance(init, Frame) else init
        self.inputs = (content, style, style_targets, init, resume)
        self.checkpointing = memory.checkpointing
        self.device = next(self.features.parameters()).device
        dtype = autocast_dtype(params.precision, self.device)
        # L-BFGS has no loss scaling: fp16 gradients would underflow.
        self.dtype = None if dtype == torch.float16 and params.optimizer == "lbfgs" else dtype
        # Channels-last pays with cuDNN and with oneDNN's bf16 kernels; plain fp32 on the CPU
        # gains nothing from it (benchmarks/RESULTS.md), so it is left alone there. The image
        # follows the network, except under L-BFGS, which flattens gradients with .view(-1) and
        # so needs the default layout for the image (the network still takes channels-last:
        # the first convolution converts, and the gradient comes back in the image's layout).
        self.network_format = (torch.channels_last if self.device.type == "cuda" or self.dtype is not None
                               else torch.contiguous_format)
        self.memory_format = self.network_format if params.optimizer == "adam" else torch.contiguous_format
        self.history: list[Progress] = []
        self.first = resume.step if resume else 0  # the step we resume from
        self.carried: dict | None = None  # the last stage's optimizer state, for a warm start
        self.colors: tuple[Tensor, Tensor] | None = None  # the style's palette, for init: palette
        self.content: Tensor | None = None  # at full size, as the costs see it
        self.original: Tensor | None = None  # ...and as the user gave it
        self.descent: _Descent | None = None  # the stage now running
        self.converged: list[int] = []  # where a stage met the stopping rule (params.stop_tol)
        self.recoveries: list[str] = list(resume.recoveries) if resume else []  # undone updates
        self.step = self.first  # updates done
        self._network_was: tuple | None = None  # set by __enter__
        self._iteration: Iterator[Point] | None = None
        self._result: Result | None = None

    def __enter__(self) -> "Stylization":
        weight = next(self.features.parameters())
        was = torch.channels_last if weight.dim() == 4 and weight.is_contiguous(
            memory_format=torch.channels_last) and not weight.is_contiguous() else torch.contiguous_format
        self._network_was = (was, self.features.checkpointing)
        self.features.to(memory_format=self.network_format)
        return self

    def __exit__(self, *exc) -> None:
        if self._iteration is not None:
            self._iteration.close()
        was, was_checkpointing = self._network_was
        self.features.checkpointing = was_checkpointing
        if was != self.network_format:
            self.features.to(memory_format=was)
        self._network_was = None

    def __iter__(self) -> Iterator[Point]:
        if self._network_was is None:
            raise RuntimeError("iterate a Stylization inside its with block: it sets the network up for the run")
        if self._iteration is not None:
            raise RuntimeError("a Stylization runs once")
        self._iteration = self._run()
        return self._iteration

    def image(self) -> Tensor:
        """The picture so far as the user would see it (the stage's average where it averages;
        with the content's chroma under ``preserve_color: luminance``), ``(N, 3, h, w)`` at
        the stage's size."""
        return self._as_seen(self.descent.result(), self.original).contiguous()

    def checkpoint(self) -> Checkpoint:
        """What continues the run from here: the image, the cost history, and the descent's
        own state (``_Descent.state_dict``), all on the CPU."""
        return Checkpoint(self.step, self.descent.image.detach().cpu().clone(), history=list(self.history),
                          recoveries=list(self.recoveries), **self.descent.state_dict())

    def result(self) -> Result:
        """The image and the costs, once the iteration has run to its end."""
        if self._result is None:
            raise RuntimeError("the Stylization has not run to its end")
        return self._result

    def _run(self) -> Iterator[Point]:
        params, layout = self.params, self.memory_format
        content, style, style_targets, init, resume = self.inputs
        original = content = content.to(self.device).contiguous(memory_format=layout)
        if params.preserve_color == "luminance":
            content = luminance(content).contiguous(memory_format=layout)
        self.content, self.original = content, original
        if style_targets is None:
            style_targets = style_targets_of(self.features, style, params, max(content.shape[-2:]), content)
        full = job_targets(self.features, content, style_targets, params, self.dtype,
                           self._tiles(tuple(content.shape[-2:])))
        if self.temporal:
            full = dataclasses.replace(full, temporal=tuple(
                (warped.to(content), weights.to(content)) for warped, weights in self.temporal))
        self.colors = full.style.palette() if params.palette_init else None
        self.history = list(resume.history) if resume else []
        image, targets, first_point = None, full, True
        for stage in stages(params, *content.shape[-2:]):
            if stage.end <= self.first and stage.start != stage.end:
                continue  # done before the checkpoint we resume from
            stage_content = resize_tensor(content, stage.size, "bilinear").contiguous(memory_format=layout)
            targets = full if stage.size == tuple(content.shape[-2:]) else stage_targets(
                self.features, stage_content, full, params, self.dtype, self._tiles(stage.size))
            image, resuming = self._start(stage, stage_content, image, init, resume)
            if stage.start == stage.end:
                continue
            descent = self._descent(stage, image, targets, resume if resuming else None)
            if first_point:
                yield Point(self.step, self.step)
                first_point = False
            while self.step < stage.end:
                previous = self.step
                self.step = descent.step(previous)  # one more, or with clip_every up to clip_every more
                if self.step < stage.end and descent.converged(previous, self.step):
                    self.converged.append(self.step)
                    self.step = stage.end  # the stage's remaining steps are skipped
                if self.step < params.steps:
                    yield Point(self.step, previous)
            descent.finish(self.step)
            self.carried = descent.optimizer.state_dict() if params.scale_start == "warm" else None
            image = descent.result()
        if image is None:  # zero steps: the initial image, at full size
            image, targets = initial_image(content, params, init, self.colors), full
        parts = self._gradient(targets, self._tiles(tuple(image.shape[-2:])))(image, None)
        self._record(params.steps, parts)
        finals = [Progress(params.steps, params.steps, *(float(p[i]) for p in parts[1:]), float(parts[0][i]))
                  for i in range(image.shape[0])]
        self._result = Result(self._as_seen(image, original).contiguous(), self.history, finals, self.converged,
                              self.recoveries)

    def _tiles(self, size: tuple[int, int]) -> list[Tile] | None:
        """The tiles a step at ``size`` takes (``tile``), or None where one covers it."""
        if not self.tile:
            return None
        tiles = plan_tiles(*size, self.tile, self.params.feature_layers)
        return tiles if len(tiles) > 1 else None

    def _gradient(self, targets: Targets, tiles: list[Tile] | None) -> Gradient:
        """The costs of an image against ``targets`` (and their gradient where asked), whole or
        tile by tile: what every step and the final costs take."""
        params = self.params

        def gradient(x: Tensor, scale_loss) -> tuple:
            if tiles is not None:
                return tiled_costs(self.features, x, targets, params, self.dtype, tiles, scale_loss)
            if scale_loss is None:
                with torch.no_grad():
                    return costs(self.features, x, targets, params, self.dtype)
            parts = costs(self.features, x, targets, params, self.dtype)
            scale_loss(parts[0].sum()).backward()
            return parts
        return gradient

    def _descent(self, stage: Stage, image: Tensor, targets: Targets, resume: Checkpoint | None) -> "_Descent":
        """The stage's descent, from its start or from ``resume``, or warm from the last stage's."""
        params = self.params
        self.features.checkpointing = (self.checkpointing if self.checkpointing is not None
                                       else self.device.type == "cuda" and stage.size[0] * stage.size[1] > 6_000_000)
        self.descent = _Descent(image, self._gradient(targets, self._tiles(stage.size)), params, stage, self._record,
                                fp16=self.dtype == torch.float16, check_every=self.report_every,
                                recoveries=self.recoveries)
        if resume is not None:
            self.descent.load_state_dict(resume.descent_state())
        elif params.scale_start == "warm" and self.carried is not None:
            self.descent.warm(self.carried)
        self.step = max(stage.start, self.first)
        return self.descent

    def _start(self, stage: Stage, stage_content: Tensor, image: Tensor | None, init: Tensor | None,
               resume: Checkpoint | None) -> tuple[Tensor, bool]:
        """A stage's first image, and whether it continues ``resume``'s optimizer state."""
        resuming = resume is not None and stage.start <= resume.step < stage.end
        if resuming and tuple(resume.image.shape[-2:]) != stage.size:
            # saved at the very end of the previous scale: continue as that scale would have,
            # from its average where it averaged
            last = (_Average.debiased(resume.average, resume.average_weight) if resume.average is not None
                    else resume.image)
            image, resuming = self._upsampled(last.to(self.device), stage_content), False
            self.carried = resume.optimizer
        elif resuming:
            image = resume.image.to(self.device)
        elif image is None:
            image = initial_image(stage_content, self.params, init, self.colors)
        else:
            image = self._upsampled(image.detach(), stage_content)
        return image.contiguous(memory_format=self.memory_format).requires_grad_(True), resuming

    def _upsampled(self, previous: Tensor, stage_content: Tensor) -> Tensor:
        """The previous scale's result carried to this one (``scale_carry``): upsampled
        (``image``), or (``detail``) this scale's content plus the previous result's departure
        from the content as that scale saw it, upsampled, so the photo's fine detail is there
        from the first step and the coarse scale's painting lies on it."""
        size = tuple(stage_content.shape[-2:])
        if self.params.scale_carry == "image":
            return resize_tensor(previous, size, "bicubic")
        coarse = resize_tensor(self.content, tuple(previous.shape[-2:]), "bilinear")
        departure = torch.nn.functional.interpolate(previous - coarse, size=size, mode="bicubic", align_corners=False)
        return (stage_content + departure).clamp(0, 1)

    def _as_seen(self, image: Tensor, original: Tensor) -> Tensor:
        """The image as the user sees it: with the content's chroma where asked."""
        image = image.detach()
        if self.params.preserve_color != "luminance":
            return image
        return with_chroma(image.float(), resize_tensor(original, tuple(image.shape[-2:]), "bilinear").float())

    def _record(self, step: int, parts) -> None:
        if step % self.report_every and step != self.params.steps:
            return
        self.history.append(_progress(step, self.params, parts))
        if self.on_step is not None:
            self.on_step(self.history[-1])


# A failed update (``_Descent``): undone when its line search overflows, a cost or gradient is
# not finite, or an update's start costs more than BLOWUP times the last good start (the costs
# only fall within a stage); after FAILURES_BEFORE_SMALLER_STEPS failures in a row the stage's
# learning rate shrinks by SMALLER_STEPS each time, and after GIVE_UP_AFTER the stage gives up.
BLOWUP = 1e3
FAILURES_BEFORE_SMALLER_STEPS = 2
SMALLER_STEPS = 0.1
GIVE_UP_AFTER = 8


class _Diverged(Exception):
    """An update that cannot stand; its message says why."""


class _Descent:
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
        self.average = _Average(params.average, image) if params.average else None
        self.latest: Tensor | None = None  # each image's total cost (N,) at the last update's start
        self.reference: Tensor | None = None  # ...and at the last convergence check (stop_tol)
        self.check_every = max(1, check_every)
        self.recoveries = recoveries if recoveries is not None else []
        self.lr_factor = 1.0  # shrunk by failures in a row
        self.failures = 0  # failures since the last good update start
        self.restored = False  # the image is the last good start, put back
        # the last good update start: its step, image, average (biased, weight) and total cost
        self.good: tuple[int, Tensor, Tensor | None, float, float] | None = None

    def state_dict(self) -> dict:
        """The optimizer's state, L-BFGS's objective scale and the average, on the CPU: what
        a ``Checkpoint`` holds beside the image and the history."""
        average = self.average.biased.detach().cpu().clone() if self.average is not None else None
        return {"optimizer": _cpu_copy(self.optimizer.state_dict()), "scale": self.scale, "average": average,
                "average_weight": self.average.weight if self.average is not None else 0.0,
                "reference": self.reference.cpu().clone() if self.reference is not None else None,
                "lr_factor": self.lr_factor}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scale = state["scale"]
        self.lr_factor = state.get("lr_factor", 1.0)
        if self.average is not None and state["average"] is not None:
            self.average.biased.copy_(state["average"])
            self.average.weight = state["average_weight"]
        if state.get("reference") is not None:
            self.reference = state["reference"].to(self.image.device)

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
        params = self.params
        iterations = 1 if params.optimizer == "adam" else min(params.clip_every, self.stage.end - step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
            if params.optimizer == "lbfgs":
                # max_eval is the line searches' budget per call: 25 an iteration (torch's
                # default, max_iter * 5 // 4, would stall a one-iteration call completely)
                group["max_iter"], group["max_eval"] = iterations, 25 * iterations
        try:
            if params.optimizer == "adam":
                self.optimizer.zero_grad(set_to_none=True)
                # images of a batch are independent: the gradient of their sum is each one's own
                parts = self.gradient(self.image, self.scaler.scale)
                if self.good is None or step % self.check_every == 0:
                    self._check(step, parts[0])
                self.record(step, parts)
                self.latest = parts[0].detach()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                first = []  # the call's first evaluation: the costs at the step's start

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
                self.record(step, first[0])
                self.latest = first[0][0].detach()
        except _Diverged as failure:
            self._recover(step, str(failure))
            return step
        except RuntimeError as error:
            if "overflow" not in str(error):
                raise
            # torch's strong-Wolfe line search extrapolated its step past the float range
            self._recover(step, "its line search's step overflowed")
            return step
        with torch.no_grad():
            self.image.clamp_(0, 1)
        if self.average is not None:
            self.average.update(self.image)
        return step + iterations

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
                                    hint=f"lower the learning rate (lr={self.params.lr:g}), or try precision fp32")
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
            raise OptimizationError(f"the image became non-finite by step {step}",
                                    hint=f"lower the learning rate (lr={self.params.lr:g}), or try precision fp32")
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


def _optimizer(params: StyleParams, image: Tensor, gradient: Gradient):
    if params.optimizer == "adam":
        return torch.optim.Adam([image], lr=params.lr), 1.0
    # clip_every L-BFGS iterations per .step() call (_Descent.step sets max_iter and max_eval
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


class _Average:
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


def build_features(params: StyleParams, device: torch.device | str = "cpu") -> VGGFeatures:
    """The VGG-19 that ``params`` asks for, truncated after its deepest layer, on ``device``."""
    weights = load_weights(params.weights)
    return VGGFeatures(weights, params.feature_layers, params.pooling).to(device)


def style_targets_of(features: VGGFeatures, styles: Styles, params: StyleParams, output_side: int,
                     content: Tensor) -> StyleTarget:
    """The blended style target of style images given as tensors, on the engine's own network:
    each resized to its long side ``params.style_side(output_side)``, prepared for
    ``preserve_color`` (``color.prepare_style``, against ``content``). The doors (``stylize``,
    ``run``) take theirs from ``styles.store.StyleTargetStore`` instead: the same statistics,
    from ONNX Runtime by default, cached."""
    if not params.style_layers:
        return StyleTarget({})
    per_style = []
    for style, weight in _as_blend(styles):
        if not weight:
            continue
        height, width = style.shape[-2:]
        side = params.style_side(output_side)
        style = resize_tensor(style.to(content.device), long_side_size(width, height, side)[::-1])
        check_image_size(*style.shape[-2:], params.style_layers, "style image")
        style = prepare_style(style, params, content)
        per_style.append((torch_style_targets(features, style, params.style_layers), weight))
    return blend_targets(per_style or [(StyleTarget({}), 1.0)], params.feature_scale, content.device)


def job_targets(features: VGGFeatures, content: Tensor, style_targets: StyleTarget, params: StyleParams,
                dtype: torch.dtype | None = None, tiles: Sequence[Tile] | None = None) -> Targets:
    """What a job is pulled towards, once per job at its full size: the content's activations,
    the blended style target (``targets.blend_targets``) on the content's device, its W2
    targets (``style_loss: w2``), and under ``style_cap`` each image's share of beta, from the
    content image's own style cost."""
    check_image_size(*content.shape[-2:], params.feature_layers, "content image")
    style = style_targets.to(content.device)
    w2 = ({name: losses.w2_target(style.layers[name].mean, style.layers[name].second)
           for name in params.style_layers} if params.style_loss == "w2" else None)
    capped = bool(params.style_cap and params.style_layers)
    if tiles is not None:  # a print: the content's activations and own style cost, in one pass of tiles
        acts, sums = read(_features_of(features, params, dtype), content, tiles, params.content_layers,
                          _style_sizes(content, params) if capped else None)
        factor = losses.style_cap_factor(_style_cost_of_sums(sums, style, params, w2), params.style_cap) if capped else None
        return Targets(acts, style, factor, w2)
    layers = params.feature_layers if capped else params.content_layers
    with torch.no_grad():
        acts = _scaled(features, content, layers, params.feature_scale, dtype) if layers else {}
        factor = losses.style_cap_factor(_style_cost(acts, style, params, w2), params.style_cap) if capped else None
    return Targets({name: acts[name] for name in params.content_layers}, style, factor, w2)


def stage_targets(features: VGGFeatures, content: Tensor, job: Targets, params: StyleParams,
                  dtype: torch.dtype | None = None, tiles: Sequence[Tile] | None = None) -> Targets:
    """A stage's targets: the content's activations at the stage's size; the job's style
    target, style_cap factors and W2 targets serve every stage (Grams are per position)."""
    size = tuple(content.shape[-2:])
    ties = tuple((resize_tensor(warped, size, "bilinear"), resize_tensor(weights, size, "bilinear"))
                 for warped, weights in job.temporal)
    if tiles is not None:
        acts, _ = read(_features_of(features, params, dtype), content, tiles, params.content_layers)
        return dataclasses.replace(job, content=acts, temporal=ties)
    with torch.no_grad():
        acts = (_scaled(features, content, params.content_layers, params.feature_scale, dtype)
                if params.content_layers else {})
    return dataclasses.replace(job, content=acts, temporal=ties)


def initial_image(content: Tensor, params: StyleParams, init: Tensor | None = None,
                  colors: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """The seed's init is content + U(−noise, noise), clipped; noise comes from a CPU generator
    seeded by ``params.seed`` so a seed gives the same start on every device. Each image of a
    batch gets the noise it would get alone, so batching does not change results. ``init``
    (an image ``(1, 3, h, w)``, the ``init_file`` its caller read) replaces all that: resized
    to the content, and reduced to its luminance where ``preserve_color`` asks. ``palette``
    and ``palette+noise`` start from the content recoloured to ``colors`` (the style target's
    colour mean ``(N, 3)`` and covariance ``(N, 3, 3)``, ``targets.palette``), each image to
    its own style's, ``palette_mix`` of the way from the content's own colours (without style
    layers there is no palette: they start from the content)."""
    if init is not None:
        start = resize_tensor(init.to(content), tuple(content.shape[-2:]), "bilinear")
        start = start.expand(content.shape[0], -1, -1, -1).contiguous()
        return luminance(start) if params.preserve_color == "luminance" else start
    if params.palette_init:
        if colors is None:
            raise ValueError(f"init {params.init} needs the style target's colours")
        mean, cov = colors
        recolored = torch.cat([recolor(content[i:i + 1], mean[min(i, len(mean) - 1)], cov[min(i, len(cov) - 1)])
                               for i in range(content.shape[0])])
        content = recolored if params.palette_mix == 1 else torch.lerp(content, recolored, params.palette_mix)
    if params.init in ("content", "palette"):
        return content.clone(memory_format=torch.contiguous_format)
    uniform = torch.cat([torch.rand((1, *content.shape[1:]), dtype=torch.float32,
                                    generator=torch.Generator().manual_seed(params.seed))
                         for _ in range(content.shape[0])]).to(content)
    if params.init == "noise":
        return uniform
    return (content + (2 * uniform - 1) * params.noise).clamp(0, 1)


def stages(params: StyleParams, height: int, width: int) -> list[Stage]:
    """The coarse-to-fine schedule. A coarse scale too small for the layers is skipped and
    its steps go to the next one; the full size must fit."""
    plan, start = [], 0
    need = min_image_side(params.feature_layers)
    for i, (scale, share) in enumerate(zip(params.scales, params.scale_steps)):
        last = i == len(params.scales) - 1
        end = params.steps if last else min(params.steps, start + round(params.steps * share))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        if not last and min(size) < need:
            start = end  # skipped: the next kept scale starts where the last kept one ended
            continue
        check_image_size(*size, params.feature_layers, f"content image at scale {scale:g}")
        plan.append(Stage(plan[-1].end if plan else 0, end, size))
        start = end
    return plan


def costs(features: VGGFeatures, image: Tensor, targets: Targets, params: StyleParams,
          dtype: torch.dtype | None = None):
    """``(total, content, style, tv)``, each of shape ``(N,)``."""
    acts = _scaled(features, image, params.feature_layers, params.feature_scale, dtype)
    zero = image.new_zeros(image.shape[0], dtype=torch.float32)
    j_content = (losses.content_cost_layers(targets.content, acts, params.content_layers,
                                            params.content_norm)
                 if params.content_layers else zero)
    j_style = _style_cost(acts, targets.style, params, targets.w2) if params.style_layers else zero
    j_tv = losses.tv_cost(image) if params.tv_weight else zero
    beta = params.style_weight if targets.style_factor is None else params.style_weight * targets.style_factor
    total = losses.total_cost(j_content, j_style, params.content_weight, beta, j_tv, params.tv_weight)
    if targets.temporal:
        total = total + params.temporal_weight * _temporal_cost(image, targets.temporal)
    return total, j_content, j_style, j_tv


def _temporal_cost(image: Tensor, ties: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """A video frame's temporal cost ``(N,)``: the sum over its ties to earlier outputs."""
    return sum(temporal.temporal_cost(image, warped, weights) for warped, weights in ties)


def tiled_costs(features: VGGFeatures, image: Tensor, targets: Targets, params: StyleParams,
                dtype: torch.dtype | None, tiles: Sequence[Tile],
                scale_loss: Callable[[Tensor], Tensor] | None = None) -> tuple:
    """``costs`` of an image too large to step at once, read tile by tile (``tiles``); with
    ``scale_loss`` also the gradient of ``scale_loss(total.sum())``, accumulated into
    ``image.grad`` as its backward would. The costs come back detached."""
    features_of = _features_of(features, params, dtype)
    zero = image.new_zeros(image.shape[0], dtype=torch.float32)
    j_style, sum_gradients = zero, {}
    beta = params.style_weight if targets.style_factor is None else params.style_weight * targets.style_factor
    if params.style_layers:
        _, sums = read(features_of, image.detach(), tiles, summed=_style_sizes(image, params))
        wanted = scale_loss is not None
        for part in sums.values():
            part.first.requires_grad_(wanted)
            part.second.requires_grad_(wanted)
        with torch.enable_grad() if wanted else torch.no_grad():
            j_style = _style_cost_of_sums(sums, targets.style, params, targets.w2)
        if wanted:
            leaves = [t for part in sums.values() for t in (part.first, part.second)]
            grads = torch.autograd.grad(scale_loss((beta * j_style).sum()), leaves, allow_unused=True)
            sum_gradients = {name: (grads[2 * i], grads[2 * i + 1]) for i, name in enumerate(sums)}
        j_style = j_style.detach()
    j_content = [zero]
    divisors = {name: losses.content_divisor(targets.content[name], params.content_norm)
                for name in params.content_layers}

    def content(tile: Tile, acts: dict[str, Tensor]) -> Tensor:
        """The tile's content terms: its core's squared errors over the whole target's divisor."""
        part = zero
        for name in params.content_layers:
            generated = tile.core_of(acts[name], name)
            target = tile.core_in_image(targets.content[name], name)
            part = part + ((target - generated) ** 2).sum(dim=(1, 2, 3)) / divisors[name]
        j_content[0] = j_content[0] + part.detach()
        return scale_loss(params.content_weight * part.sum()) if scale_loss is not None else part.sum()

    if params.content_layers or sum_gradients:
        with torch.enable_grad() if scale_loss is not None else torch.no_grad():
            backpropagate(features_of, image, tiles, params.feature_layers if sum_gradients else params.content_layers,
                          sum_gradients, content)
    j_tv = zero
    if params.tv_weight:
        j_tv = losses.tv_cost(image)
        if scale_loss is not None:
            scale_loss(params.tv_weight * j_tv.sum()).backward()
        j_tv = j_tv.detach()
    total = losses.total_cost(j_content[0], j_style, params.content_weight, beta, j_tv, params.tv_weight)
    if targets.temporal:  # a pixel cost, like TV: on the whole image
        with torch.enable_grad() if scale_loss is not None else torch.no_grad():
            j_temporal = params.temporal_weight * _temporal_cost(image, targets.temporal)
            if scale_loss is not None:
                scale_loss(j_temporal.sum()).backward()
        total = total + j_temporal.detach()
    return total.detach(), j_content[0], j_style, j_tv


def _features_of(features: VGGFeatures, params: StyleParams, dtype: torch.dtype | None):
    return lambda crop, layers: _scaled(features, crop, layers, params.feature_scale, dtype)


def _style_sizes(image: Tensor, params: StyleParams) -> dict[str, tuple[int, int]]:
    """Each style layer's (n_H, n_W) on the whole image."""
    height, width = image.shape[-2:]
    return {name: (height >> pools_before(name), width >> pools_before(name)) for name in params.style_layers}


def _style_cost_of_sums(sums, style: StyleTarget, params: StyleParams,
                        w2: dict[str, tuple[Tensor, Tensor, Tensor]] | None = None) -> Tensor:
    """``_style_cost`` from each layer's sums over the image (``tiles.Sums``)."""
    weights = dict(zip(params.style_layers, params.style_layer_weights))
    if w2 is not None:
        return sum(weight * losses.w2_moments_cost(sums[name].first / sums[name].count,
                                                   sums[name].second / sums[name].count,
                                                   style.layers[name].mean, style.layers[name].second, w2[name],
                                                   params.style_norm)
                   for name, weight in weights.items())
    at_size = {name: style.layers[name].second * sums[name].count for name in weights}  # G_S at this size
    return losses.style_cost_of_grams(at_size, {name: sums[name].second for name in weights},
                                      {name: sums[name].size for name in weights}, weights, params.style_norm)


def _style_cost(acts: dict[str, Tensor], style: StyleTarget, params: StyleParams,
                w2: dict[str, tuple[Tensor, Tensor, Tensor]] | None = None) -> Tensor:
    """The style cost (N,) of activations against a style target: its per-position Grams, or
    with ``w2`` (``style_loss: w2``) its moments."""
    weights = dict(zip(params.style_layers, params.style_layer_weights))
    if w2 is not None:
        return sum(weight * losses.w2_layer_cost(acts[name], style.layers[name].mean, style.layers[name].second,
                                                 w2[name], params.style_norm)
                   for name, weight in weights.items())
    at_size = {name: moments.second * (acts[name].shape[-2] * acts[name].shape[-1])
               for name, moments in style.layers.items()}  # back to G_S at this size
    return losses.style_cost(at_size, acts, weights, params.style_norm)


def _scaled(features: VGGFeatures, image: Tensor, layers, scale: float,
            dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Activations at ``layers`` times ``scale``, in float32 (float64 from a float64 network).
    With ``dtype`` the network runs under autocast; its outputs are cast back so Gram matrices
    and costs are float32."""
    with torch.autocast(image.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        acts = features(image, layers)
    return {name: a.to(torch.promote_types(a.dtype, torch.float32)) * scale for name, a in acts.items()}


def _as_blend(styles: Styles) -> list[tuple[Tensor, float]]:
    return [(styles, 1.0)] if isinstance(styles, Tensor) else list(styles)


def _progress(step: int, params: StyleParams, parts) -> Progress:
    total, content, style, tv = (float(p.detach().mean()) for p in parts)
    if not torch.isfinite(torch.tensor(total)):
        raise OptimizationError(f"the cost became {total} at step {step}",
                                hint=f"lower the learning rate (lr={params.lr:g})")
    return Progress(step, params.steps, content, style, tv, total)


def _cpu_copy(obj):
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj
