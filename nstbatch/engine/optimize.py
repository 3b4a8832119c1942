"""The optimisation loop over the pixels of the generated image. Tensors in, tensors out;
progress goes to a callback, never to a file or the screen.

Read top down: what the loop takes and gives (``Progress``, ``Result``, ``Checkpoint``,
``Memory``, ``Point``); ``optimize``; ``Stylization``, one call, stage after stage, which its
caller drives update by update (snapshots, checkpoints and stopping are the caller's); then
where a job starts (``initial_image``) and its schedule (``stages``). A stage is a
``descent.Descent`` over a ``criterion.Criterion`` (its costs bound to its targets)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from torch import Tensor

from .color import luminance, recolor, with_chroma
from .criterion import Criterion, Targets, job_targets, stage_targets
from .targets import StyleTarget
from .descent import Descent, DescentState, Stage
from ..config import StyleParams
from .devices import run_precision
from .pixels import resize_tensor
from .regions import Regions, keep_photo
from ..errors import OptimizationError
from .tiles import Tile, plan_tiles
from ..layers import min_image_side
from .vgg import VGGFeatures, build_features, check_image_size


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
    # updates that failed and were undone (``Descent``'s guard), each said in words, the
    # resumed run's included
    recoveries: list[str] = field(default_factory=list)

    def final(self, index: int = 0) -> Progress:
        """Image ``index``'s final costs (the history's last entry is the batch's mean)."""
        return self.finals[index] if self.finals else self.history[-1]


@dataclass
class Checkpoint:
    """Everything needed to continue a job exactly where it stopped: after ``step`` updates,
    the image (``(N, 3, H, W)``, on the CPU), the cost history, the stage's descent as it stood
    and the run's undone updates so far."""

    step: int
    image: Tensor
    history: list[Progress]
    descent: DescentState
    recoveries: list[str] = field(default_factory=list)


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


def optimize(content: Tensor, style: StyleTarget | Regions, params: StyleParams, *,
             features: VGGFeatures | None = None,
             init: Tensor | None = None,
             ties: Sequence[tuple[Tensor, Tensor]] = (),
             resume: Checkpoint | None = None,
             on_step: Callable[[Progress], None] | None = None,
             report_every: int = 1,
             memory: Memory = Memory()) -> Result:
    """Stylize ``content`` ``(N, 3, H, W)`` in [0, 1] towards ``style``, the style's targets
    (a ``StyleTarget``, one or one per image: ``styles.store.StyleTargetStore`` makes them from
    files or images, blends included, as every door does). ``init``: an image
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
    A video frame's ``ties`` to earlier outputs, each (that output warped into this frame
    ``(N, 3, H, W)``, where the warp is trusted ``(N, 1, H, W)``), pull with
    ``params.temporal_weight``; its ``init`` is then the earlier output warped into it.

    ``style`` may be ``regions.Regions``: a painting per part of the picture, each region's
    guided Grams against its own painting's target (the first region's painting gives the
    palette), and parts kept as photographed (the photo laid back over them in the result and
    snapshots).

    Colour: with ``preserve_color: luminance`` the content and styles are reduced to their
    luminance and the result (and every snapshot) gets the content's chroma back.
    """
    with Stylization(content, style, params, features=features, init=init, ties=ties, resume=resume,
                     on_step=on_step, report_every=report_every, memory=memory) as run:
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

    Each ``next`` runs one update of the schedule (``stages``): each stage is a ``Descent`` of
    its own, started from the previous stage's result. The loop owns no file, clock or
    signal: snapshots, checkpoints and preemption are the caller's. The run never changes the
    network it is given (one serves every job of a worker): it takes the network laid out as
    its precision runs best (``VGGFeatures.laid_out``) and passes activation checkpointing to
    its forward. Leaving the ``with`` block ends the iteration."""

    def __init__(self, content: Tensor, style: StyleTarget | Regions, params: StyleParams, *,
                 features: VGGFeatures | None = None, init: Tensor | None = None, ties: Sequence[tuple[Tensor, Tensor]] = (),
                 resume: Checkpoint | None = None,
                 on_step: Callable[[Progress], None] | None = None, report_every: int = 1,
                 memory: Memory = Memory()):
        features = features if features is not None else build_features(params, content.device)
        self.device = next(features.parameters()).device
        # the image follows the network's layout, except under L-BFGS, which flattens gradients
        # with .view(-1) and so needs the default layout for the image (the network still takes
        # channels-last: the first convolution converts, and the gradient comes back in the
        # image's layout)
        self.dtype, self.network_format = run_precision(params, self.device)
        self.memory_format = self.network_format if params.optimizer == "adam" else torch.contiguous_format
        self.features = features.laid_out(self.network_format)
        self.tile = memory.tile
        self.params, self.on_step, self.report_every = params, on_step, report_every
        self.temporal = tuple(ties)  # a video frame's ties: they pull with temporal_weight
        self.regions = style if isinstance(style, Regions) else None  # a painting per part, parts kept (regions.py)
        style = style.styles[0] if isinstance(style, Regions) else style
        self.inputs = (content, style, init, resume)
        self.checkpointing = memory.checkpointing
        self.history: list[Progress] = []
        self.first = resume.step if resume else 0  # the step we resume from
        self.carried: dict | None = None  # the last stage's optimizer state, for a warm start
        self.colors: tuple[Tensor, Tensor] | None = None  # the style's palette, for init: palette
        self.content: Tensor | None = None  # at full size, as the costs see it
        self.original: Tensor | None = None  # ...and as the user gave it
        self.descent: Descent | None = None  # the stage now running
        self.converged: list[int] = []  # where a stage met the stopping rule (params.stop_tol)
        self.recoveries: list[str] = list(resume.recoveries) if resume else []  # undone updates
        self.step = self.first  # updates done
        self._iteration: Iterator[Point] | None = None
        self._result: Result | None = None

    def __enter__(self) -> "Stylization":
        return self

    def __exit__(self, *exc) -> None:
        if self._iteration is not None:
            self._iteration.close()

    def __iter__(self) -> Iterator[Point]:
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
        own state (``Descent.state_dict``), all on the CPU."""
        return Checkpoint(self.step, self.descent.image.detach().cpu().clone(), list(self.history),
                          self.descent.state_dict(), list(self.recoveries))

    def result(self) -> Result:
        """The image and the costs, once the iteration has run to its end."""
        if self._result is None:
            raise RuntimeError("the Stylization has not run to its end")
        return self._result

    def _run(self) -> Iterator[Point]:
        params, layout = self.params, self.memory_format
        content, style, init, resume = self.inputs
        original = content = content.to(self.device).contiguous(memory_format=layout)
        if params.preserve_color == "luminance":
            content = luminance(content).contiguous(memory_format=layout)
        self.content, self.original = content, original
        full = job_targets(self.features, content, style, params, self.dtype,
                           self._tiles(tuple(content.shape[-2:])), self.regions)
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
        parts = self._criterion(targets, tuple(image.shape[-2:]))(image)
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

    def _criterion(self, targets: Targets, size: tuple[int, int], checkpointing: bool = False) -> Criterion:
        """The costs against ``targets`` at ``size``, whole or tile by tile (``tile``): what
        every step and the final costs take."""
        return Criterion(self.features, targets, self.params, self.dtype, self._tiles(size), checkpointing)

    def _descent(self, stage: Stage, image: Tensor, targets: Targets, resume: Checkpoint | None) -> "Descent":
        """The stage's descent, from its start or from ``resume``, or warm from the last stage's."""
        params = self.params
        checkpointing = (self.checkpointing if self.checkpointing is not None
                         else self.device.type == "cuda" and stage.size[0] * stage.size[1] > 6_000_000)
        self.descent = Descent(image, self._criterion(targets, stage.size, checkpointing).gradient, params, stage,
                               self._record, fp16=self.dtype == torch.float16, check_every=self.report_every,
                               recoveries=self.recoveries)
        if resume is not None:
            self.descent.load_state_dict(resume.descent)
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
            last = resume.descent.image(resume.image)
            image, resuming = self._upsampled(last.to(self.device), stage_content), False
            self.carried = resume.descent.optimizer
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
        """The image as the user sees it: with the content's chroma where asked, and the photo
        laid back where a region keeps it (``regions.keep_photo``)."""
        image = image.detach()
        if self.params.preserve_color != "luminance" and (self.regions is None or self.regions.keep is None):
            return image
        photo = resize_tensor(original, tuple(image.shape[-2:]), "bilinear").float()
        if self.params.preserve_color == "luminance":
            image = with_chroma(image.float(), photo)
        return keep_photo(image, photo, self.regions)

    def _record(self, step: int, parts) -> None:
        if step % self.report_every and step != self.params.steps:
            return
        self.history.append(_progress(step, self.params, parts))
        if self.on_step is not None:
            self.on_step(self.history[-1])


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


def _progress(step: int, params: StyleParams, parts) -> Progress:
    total, content, style, tv = (float(p.detach().mean()) for p in parts)
    if not torch.isfinite(torch.tensor(total)):
        raise OptimizationError(f"the cost became {total} at step {step}",
                                hint=f"lower the learning rate (lr={params.lr:g})")
    return Progress(step, params.steps, content, style, tv, total)
