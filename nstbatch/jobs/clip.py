"""One clip job: its frames stylized in order, each tied to the earlier outputs warped into it
along the optical flow (Ruder et al. 2016; ``engine/temporal.py``), as ``run`` and ``stylize``
do it. A frame after a shot's first starts from the previous output warped into it and takes
``frame_steps``; a scene cut (the flow from the previous frame trusted on less than
``scene_cut`` of the pixels) starts a new shot with no tie.

Resume by frame: each finished frame is written at once (atomically) to a ``FrameStore`` in the
state directory (``frames/<job>-<hash>/000001.png``…, for a video output and a folder output
alike: nothing lands among the outputs before the clip is whole), and a rerun skips the frames
there, taking the earlier outputs back from them; it decodes from the first missing frame (less
the frames that one is tied to), sought to, not from the clip's first. A frame's ties are always
read from the written 8-bit frames, so an interrupted clip ends as an uninterrupted one does. For
a video output the frames are encoded as they are made, a segment at a time, and their PNGs
deleted (``frames.FrameStore.seal``: bounded disk), and at the end the segments are joined into
the output without encoding them again, with the input's timestamps and audio, moved into place
whole (``io.video.join_segments``); a folder output gets the frames copied in, each atomically
(``write_clip``).

Shots: a cut pre-pass (``cuts.find_shots``: the flow from each frame's predecessor, the
estimator the frames are tied with) splits the clip into shots before any frame is stylized,
kept in the store (``shots.json``) so a rerun and every run sharing the store read the same cuts. Nothing
ties frames across a cut, so shots are independent: each is stylized under a claim of its own
(``shot-000001.lock``…), and runs that share the store (the tasks of an array helping with a
long clip, ``run._help``) stylize different shots of one clip at once, every frame still once
and equal to an uninterrupted run's. The clip's owner (the run holding the job) waits for the
shots others hold, taking over any whose claim goes stale, then writes the output.

Batches: ``stylize_clips`` runs clips of one frame size and parameters in lockstep
(``lockstep.drive``), each clip's pass a generator (``_ShotWork.needs``) that yields the frames
it needs made (``lockstep.Need``) and takes their pictures back, so frame t of every clip is made
in one optimisation pass (a shot's first frames apart from the later ones); a single clip is a
batch of one.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator, Sequence

import numpy as np
from PIL import Image
import torch

from ..config import StyleParams
from ..engine.flow import FlowAhead, estimator, links
from ..engine.optimize import Memory, Result
from ..engine.regions import Regions
from ..engine.pixels import to_pil, to_tensor, to_uint16
from ..engine.targets import StyleTarget
from ..engine.vgg import VGGFeatures
from ..errors import InputError
from ..geometry import output_size
from ..fs import atomic_write
from ..io.images import load_image, probe_image
from ..io.manifest import Job
from ..io.video import (ClipInfo, check_clip_output, check_clip_streams, clip_output_format, frame_files,
                        join_segments, probe_clip, read_frames)
from ..styles.store import StyleTargetStore
from .claims import CLAIM_STALE, Claim, claim_at
from .cuts import check_count, find_shots, fitted
from .frames import FrameStore, Sealing, Shots, ShotState
from .lockstep import Need, drive, frame_need, pass_need
from .single import Hooks, Preempted, region_targets

# Seconds between looks at the shots other runs hold, while a clip's owner waits for them.
SHOT_POLL = 1.0


def clip_size(info: ClipInfo, params: StyleParams, output: Path) -> tuple[int, int]:
    """The output frames' (height, width); even sides for a video file (yuv420p needs them)."""
    width, height = output_size(info.width, info.height, *params.geometry)
    if clip_output_format(output) is not None:
        width, height = max(2, width - width % 2), max(2, height - height % 2)
    return height, width


@dataclass
class ClipResult:
    frames: int  # in the clip
    stylized: int = 0  # by this call (the others were written before: a resumed clip)
    shots: list[int] = dataclasses.field(default_factory=list)  # the index of each shot's first frame
    last: Result | None = None  # the pass that made the last stylized frame (its costs: ``final``)
    sources: list[str] = dataclasses.field(default_factory=list)  # where the style targets came from
    last_index: int = 0  # the clip's image in that pass (several clips' frames share one)

    def final(self):
        """The last stylized frame's final costs (``Progress``), or None."""
        return self.last.final(self.last_index) if self.last is not None else None


class FramesKept(Preempted):
    """A stop signal between frames: the frames written are the clip's checkpoint."""

    def __init__(self, why: str):
        Exception.__init__(self, why)
        self.checkpoint = None


@dataclass
class ClipCall:
    """How a clip is stylized, beside what: the network, the loop's hooks, who hears of each
    written frame (``on_frame(index, frames)``), the device; and, for runs that share a clip's
    frames, ``join`` (a helper: the shots nobody holds, then leave), ``claim_stale`` and
    ``on_wait`` (called between looks while the owner waits for shots others hold); ``memory``:
    how each pass fits the device (``Memory``: activation checkpointing, tiles)."""

    features: VGGFeatures | None = None
    hooks: Hooks | None = None
    on_frame: Callable[[int, int], None] | None = None
    device: torch.device | None = None
    join: bool = False
    claim_stale: float = CLAIM_STALE
    on_wait: Callable[[], None] | None = None
    memory: Memory | None = None  # None: as the memory check plans each pass (``single.optimize_job``)
    regions: Callable[[int], Regions] | None = None  # a clip with masks: frame index -> its regions (``clip_regions``)


def stylize_clip(info: ClipInfo, style_targets: StyleTarget, params: StyleParams, store: FrameStore,
                 size: tuple[int, int], call: ClipCall | None = None,
                 result: ClipResult | None = None) -> tuple[ClipResult, list[int | None]]:
    """Every frame of the clip not in ``store`` yet, shot by shot under the shots' claims;
    returns what was done (in ``result`` where given, so that a caller sees it when the clip
    stops early) and every frame's input timestamp. The flows of frame t+1 are computed on
    threads while frame t is optimised.

    Shots other runs hold are waited for, and taken over when their claims go stale, until
    every frame is written; with ``call.join`` (a helper, not the clip's owner) the free shots
    are stylized and the rest left to their holders."""
    return stylize_clips([(info, style_targets, store, result)], params, size, call)[0]


def stylize_clips(clips: Sequence[tuple[ClipInfo, StyleTarget, FrameStore, ClipResult | None]], params: StyleParams,
                  size: tuple[int, int], call: ClipCall | None = None) -> list[tuple[ClipResult, list[int | None]]]:
    """Several clips of one frame size and parameters, each with its own style targets, in
    lockstep: frame t of every clip in one optimisation pass (a mixed-style batch: each frame
    pulled towards its own clip's style), the first frames of shots apart from the later ones
    (their schedules differ). Each clip ends as ``stylize_clip`` would end it alone, up to
    the batch's rounding. ``call.on_frame`` hears ``(index, frames)`` of every clip's frames."""
    call = call or ClipCall()
    if call.device is None:
        call = dataclasses.replace(call, device=next(call.features.parameters()).device if call.features is not None
                                   else torch.device("cpu"))
    flow = estimator(params.flow, call.device)
    works = []
    for info, style_targets, store, result in clips:
        if not call.join:
            store.start_over_if_torn(info.frames)
        shots = store.shots()
        if shots is None or shots.frames != info.frames:
            shots = store.save_shots(find_shots(info, size, params, flow))
        done = result if result is not None else ClipResult(info.frames)
        done.frames, done.shots = info.frames, list(shots.starts)
        works.append(_ShotWork(info, size, style_targets, params, store, shots, flow, call, done))
    everyone = drive(works, params, call.features, call.memory)
    return [(work.done, _rest(work, pts, params, call)) for work, pts in zip(works, everyone)]


def _rest(work: "_ShotWork", pts: list[int | None], params: StyleParams, call: ClipCall) -> list[int | None]:
    """After the first pass: the shots other runs held, waited for (and taken over where their
    claims went stale) unless this run only joins the clip; the clip's timestamps."""
    store, shots = work.store, work.shots
    while not call.join:
        standings = store.standings(shots, call.claim_stale)
        if all(state == ShotState.DONE for state in standings):
            break
        if ShotState.OPEN in standings:
            # a holder's claim went stale (or it let go): take its shot over
            pts = drive([work], params, call.features, call.memory)[0]
            continue
        if call.hooks is not None and call.hooks.should_stop is not None and call.hooks.should_stop():
            raise FramesKept("stopped while other runs held shots of the clip")
        if call.on_wait is not None:
            call.on_wait()
        time.sleep(SHOT_POLL)
    return pts


class _ShotWork:
    """One clip's pass over its frames: each shot not written yet and not held by another run
    is claimed and its frames are made in order; the rest are decoded and passed over."""

    def __init__(self, info: ClipInfo, size: tuple[int, int], style_targets: StyleTarget, params: StyleParams,
                 store: FrameStore, shots: Shots, flow, call: ClipCall, done: ClipResult):
        self.info, self.size, self.style_targets, self.params = info, size, style_targets, params
        self.store, self.shots, self.flow, self.call, self.done = store, shots, flow, call, done
        self.claim: Claim | None = None
        self.distances = tuple(int(d) for d in params.temporal_frames)
        self.reach = max(self.distances) + shots.beyond  # the farthest frame back a tie looks at
        self.soft = params.temporal_mask == "soft"
        # each pass's pictures (the last pass's in the store itself), and the content frames the
        # passes after the first read back (``passes``)
        self.stores = [store.pass_store(k) for k in range(1, params.passes)] + [store]
        self.content = store.pass_store(0) if params.passes > 1 else None
        inner = call.hooks or Hooks()

        def beat() -> bool:  # asked before every update: the shot's claim lives while its frames are made
            if self.claim is not None:
                self.claim.heartbeat()
            return inner.should_stop is not None and inner.should_stop()
        self.hooks = dataclasses.replace(inner, should_stop=beat)

    def needs(self) -> Generator[Need, torch.Tensor, list[int | None]]:
        """Yields each frame to make (``_Need``) and takes its stylized image back; returns
        the clip's timestamps."""
        shots = self.shots
        flows = FlowAhead(threads=2)
        seen: dict[int, object] = {}  # the shot's content frames as the flow reads them, as far back as ties reach
        outputs: dict[int, np.ndarray] = {}  # its written outputs, as far back
        submitted: set[int] = set()
        start = self._first_needed()
        pts: list[int | None] = [None] * start  # those of frames written before: in their PNGs and segments
        pending, active, current = None, False, None
        try:
            for frame in read_frames(self.info, start):
                pts.append(frame.pts)
                index, shot = frame.index, shots.of(frame.index)
                if shot != current:  # a shot begins (or the pass does): the last one's last frame first
                    if pending is not None:
                        yield from self._finish(*pending, flows, submitted, outputs)
                        pending = None
                    if active:
                        yield from self._later_passes(current)
                    self._let_go()
                    seen.clear()
                    outputs.clear()
                    active, current = self._take(shot), shot
                if not active:
                    continue
                rgb = fitted(frame.rgb, self.size)
                if self.content is not None and not self.content.has(index):
                    self.content.save(index, rgb, frame.pts)
                seen[index] = self.flow.prepare(rgb)
                if index > shots.starts[shot] and not self._made(index):
                    flows.submit(index, seen, self._distances(index), self.flow, self.soft)
                    submitted.add(index)
                for old in [k for k in seen if k < index - self.reach]:
                    del seen[old]
                if pending is not None:
                    yield from self._finish(*pending, flows, submitted, outputs)
                pending = (index, rgb, frame.pts)
            if pending is not None:
                yield from self._finish(*pending, flows, submitted, outputs)
            if active:
                yield from self._later_passes(current)
        finally:
            flows.close()
            self._let_go()
        check_count(self.info, len(pts))
        return pts

    def _first_needed(self) -> int:
        """Where this pass starts decoding: the first shot not done, at its first missing frame
        less the frames that one is tied to (their pictures, and their outputs as written)."""
        shots = self.shots
        for shot in range(len(shots.starts)):
            span = shots.span(shot)
            if self.store.has(span[-1]):  # its last pass runs forward: its last frame says the shot is made
                continue
            missing = next((index for index in span if not self._made(index)), None)
            if missing is None:  # its first pass is made: the later ones read their frames back
                return span[-1]
            return max(span.start, missing - self.reach)
        return shots.frames

    def _distances(self, index: int) -> tuple[int, ...]:
        """How far back frame ``index``'s ties look: ``temporal_frames``, from the last frame
        of the take before a flash for the frame after it (``Shots.bridges``), so that the
        style goes on through the flash instead of starting again after it."""
        bridge = self.shots.bridges.get(index, 1)
        return tuple(d + bridge - 1 for d in self.distances)

    def _made(self, index: int) -> bool:
        """Whether frame ``index``'s first pass is made."""
        return self.stores[0].has(index) or (len(self.stores) > 1 and self.store.passes_done(self.shots.of(index)) >= 1)

    def _take(self, shot: int) -> bool:
        """Claim ``shot`` unless its frames are written; True if this pass makes them."""
        if self.store.shot_standing(self.shots, shot, self.call.claim_stale) == ShotState.DONE:
            return False
        self.store.folder.mkdir(parents=True, exist_ok=True)
        claim = claim_at(self.store.claim_path(shot), self.call.claim_stale)
        if isinstance(claim, Claim):
            self.claim = claim
        return self.claim is not None

    def _let_go(self) -> None:
        if self.claim is not None:
            self.claim.release()
            self.claim = None

    def _finish(self, index: int, rgb: np.ndarray, pts: int | None, flows: FlowAhead, submitted: set[int],
                outputs: dict[int, np.ndarray]) -> Generator[Need, torch.Tensor, None]:
        store, done = self.stores[0], self.done
        if not self._made(index):
            ties = flows.result(index) if index in submitted else []
            submitted.discard(index)
            image = yield self._in_regions(frame_need(rgb, ties, outputs, index, self.call.device), index)
            deep = _deep(image, self.params) if len(self.stores) == 1 else None  # the last pass's only
            store.save(index, np.asarray(to_pil(image)), pts, deep)
            done.stylized += 1
            start = self.shots.starts[self.shots.of(index)]
            self._heard(start, 1, index - start)
        if store.kept(index):  # encoded ones are past every later frame's reach (``FrameStore.seal``)
            outputs[index] = store.load(index)  # the ties of later frames: the output as written, always
        for old in [k for k in outputs if k <= index - self.reach]:
            del outputs[old]
        store.seal(self.info.frames)


    def _later_passes(self, shot: int) -> Generator[Need, torch.Tensor, None]:
        """The passes after the first over ``shot`` (``passes``): backward, then forward, in
        turn, each frame from its picture of the pass before (``lockstep.pass_need``). A pass's
        pictures are kept until the next one is whole; the content frames until the last is."""
        span, passes = self.shots.span(shot), len(self.stores)
        if passes == 1:
            return
        if self.store.passes_done(shot) < 1:
            self.store.save_passes_done(shot, 1)
        for number in range(self.store.passes_done(shot) + 1, passes + 1):
            order = list(span) if number % 2 else list(reversed(span))
            yield from self._pass(number, order)
            self.store.save_passes_done(shot, number)
            self.stores[number - 2].drop(span)
        self.content.drop(span)

    def _pass(self, number: int, order: list[int]) -> Generator[Need, torch.Tensor, None]:
        """Pass ``number`` over a shot's frames in ``order``; frames made before are passed over."""
        before, store, reach = self.stores[number - 2], self.stores[number - 1], max(self.distances)
        seen: dict[int, object] = {}  # the content frames as the flow reads them, by position in ``order``
        outputs: dict[int, np.ndarray] = {}  # this pass's pictures as written, by position
        for position, index in enumerate(order):
            rgb = self.content.load(index)
            seen[position] = self.flow.prepare(rgb)
            if not store.has(index):
                ties = links(seen, position, self.distances, self.flow, self.soft) if position else []
                need = pass_need(rgb, before.load(index), ties, outputs, position, self.call.device)
                image = yield self._in_regions(need, index)
                store.save(index, np.asarray(to_pil(image)), self.content.stamp(index),
                           _deep(image, self.params) if store is self.store else None)
                self.done.stylized += 1
                self._heard(min(order), number, position)
            if store.kept(index):
                outputs[position] = store.load(index)
            for old in [k for k in (*seen, *outputs) if k <= position - reach]:
                seen.pop(old, None)
                outputs.pop(old, None)
            store.seal(self.info.frames)

    def _in_regions(self, need: Need, index: int) -> Need:
        """``need`` with frame ``index``'s regions, for a clip with masks."""
        if self.call.regions is not None:
            need.regions = self.call.regions(index)
        return need

    def _heard(self, start: int, number: int, position: int) -> None:
        """Tell ``call.on_frame`` of a frame made: the ``position``-th of pass ``number`` over
        the shot that begins at frame ``start``, counted in frames × passes for the clip."""
        if self.call.on_frame is not None:
            passes, length = len(self.stores), self.shots.span(self.shots.of(start)).stop - start
            self.call.on_frame(start * passes + (number - 1) * length + position, self.info.frames * passes)


def _deep(image: torch.Tensor, params: StyleParams) -> np.ndarray | None:
    """A frame's 16-bit pixels where the output asks for them (``bit_depth: 16``), else None."""
    return to_uint16(image) if params.bit_depth == 16 else None


def check_clip_files(content: Path, styles: Sequence[tuple[Path, float]], output: Path,
                     params: StyleParams) -> ClipInfo:
    """Everything about a clip job's files that can be known before a frame is decoded."""
    info = probe_clip(content)
    for style, _ in styles:
        probe_image(style)
    check_clip_streams(info, output, params)  # before a frame is made, not when the file is closed
    check_clip_output(output, params)
    if Path(output).resolve() == Path(content).resolve():
        raise InputError(f"{output}: the output is also the clip; it would be overwritten",
                         hint="choose another output")
    if params.preserve_color == "histogram":
        raise InputError(f"{content}: preserve_color histogram recolours the style to one image's"
                         " colours, not a clip's", hint="use preserve_color luminance or none for clips")
    return info


def clip_regions(job: Job, info: ClipInfo, size: tuple[int, int],
                 store: StyleTargetStore) -> Callable[[int], Regions] | None:
    """A clip job's regions frame by frame (None: it has none): each mask one image for every
    frame or a folder of one a frame (sorted by name), drawn over the frames and brought to
    their ``size``, with its painting's target (its part of it, with ``style_masks``); a keep
    mask the same way. As a still's regions (``single.job_regions``), a frame at a time."""
    files = job.regions
    if files is None:
        return None
    targets = region_targets(files, job.styles, job.params, job.content, max(size), store)
    listed = {path: frame_files(path) if path.is_dir() else None for path in files.files}
    once: dict[Path, torch.Tensor] = {}  # a mask for every frame, read once

    def mask(path: Path, index: int) -> torch.Tensor:
        if listed[path] is None and path in once:
            return once[path]
        drawn = load_image(listed[path][index] if listed[path] else path).convert("L")
        drawn = drawn.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(drawn, dtype=np.float32) / 255)[None, None]
        if listed[path] is None:
            once[path] = pixels
        return pixels

    def at(index: int) -> Regions:
        masks = torch.cat([mask(path, index) for path in files.masks], 1) if files.masks else torch.ones(1, 1, *size)
        return Regions.of(masks, targets, mask(files.keep, index) if files.keep is not None else None)
    return at


def clip_job(job: Job, store: StyleTargetStore, frames: FrameStore, call: ClipCall | None = None,
             result: ClipResult | None = None) -> tuple[ClipInfo, ClipResult]:
    """One clip job from its files, as ``run`` and ``stylize`` do it: checked, its styles'
    targets from ``store`` at the frames' size, its frames (kept in ``frames``, which a rerun
    resumes from), then its output written. With ``call.join`` (a run helping the clip's
    owner) only the shots nobody holds are stylized, and the output is left to the owner."""
    info, size, style_targets, sources = clip_inputs(job, store)
    frames = sealed(frames, info, job.output, size, job.params)
    done = result if result is not None else ClipResult(info.frames)
    done.sources = sources
    if job.regions is not None:
        call = dataclasses.replace(call or ClipCall(), regions=clip_regions(job, info, size, store))
    done, pts = stylize_clip(info, style_targets, job.params, frames, size, call, done)
    if not (call and call.join):
        write_clip(info, frames, job.output, size, pts, job.params)
    return info, done


def clip_inputs(job: Job, store: StyleTargetStore) -> tuple[ClipInfo, tuple[int, int], StyleTarget, list[str]]:
    """A clip job's files checked (``check_clip_files``), its frames' (height, width), and its
    styles' targets from ``store`` at that size, with where they came from."""
    info = check_clip_files(job.content, job.styles, job.output, job.params)
    size = clip_size(info, job.params, job.output)
    style_targets, sources = store.for_files(job.styles, job.params, job.content, max(size))
    return info, size, style_targets, sources


# Frames a trained network paints in one pass.
NETWORK_FRAMES = 8


@dataclass(frozen=True)
class NetworkFrames:
    """How a clip's frames go through a trained network: ``paint`` turns frames ``(N, 3, H, W)``
    into their pictures (one pass of the network: no flow, no ties; a network trained with the
    temporal cost is steady on its own, issue 48), ``batch`` frames a pass; ``on_frame(index,
    frames)`` hears of each written frame and ``should_stop`` is asked before each pass."""

    paint: Callable[[torch.Tensor], torch.Tensor]
    batch: int = NETWORK_FRAMES
    on_frame: Callable[[int, int], None] | None = None
    should_stop: Callable[[], bool] | None = None


def network_clip_job(job: Job, frames: FrameStore, call: NetworkFrames) -> tuple[ClipInfo, int]:
    """A clip job whose frames go through a trained network (``job.network``), as ``run`` and
    ``stylize --network`` do it: checked as any clip job is, each frame not in ``frames`` yet
    painted and written there at once (a rerun resumes at the first missing one; a stop between
    passes raises ``FramesKept``), then the output written from the frames (``write_clip``).
    The clip's facts and how many frames this call painted."""
    info = check_clip_files(job.content, (), job.output, job.params)  # the painting: the network's card's
    size = clip_size(info, job.params, job.output)
    frames = sealed(frames, info, job.output, size, job.params, reach=0)  # no ties: nothing kept back
    frames.start_over_if_torn(info.frames)
    start = next((index for index in range(info.frames) if not frames.has(index)), info.frames)
    pts: list[int | None] = [None] * start  # those of frames written before: in their PNGs and segments
    waiting: list[tuple[int, np.ndarray, int | None]] = []
    painted = 0

    def paint() -> None:
        nonlocal painted
        if call.should_stop is not None and call.should_stop():
            raise FramesKept(f"stopped after {frames.count()} frame(s) of the clip; they are kept")
        images = call.paint(torch.cat([to_tensor(Image.fromarray(rgb)) for _, rgb, _ in waiting]))
        for (index, _, stamp), image in zip(waiting, images):
            frames.save(index, np.asarray(to_pil(image[None])), stamp, _deep(image[None], job.params))
            painted += 1
            if call.on_frame is not None:
                call.on_frame(index, info.frames)
        waiting.clear()
        frames.seal(info.frames)

    for frame in read_frames(info, start):
        pts.append(frame.pts)
        if not frames.has(frame.index):
            waiting.append((frame.index, fitted(frame.rgb, size), frame.pts))
        if len(waiting) == call.batch:
            paint()
    if waiting:
        paint()
    check_count(info, len(pts))
    write_clip(info, frames, job.output, size, pts, job.params)
    return info, painted


def sealed(store: FrameStore, info: ClipInfo, output: Path, size: tuple[int, int], params: StyleParams,
           reach: int | None = None) -> FrameStore:
    """``store``, its frames encoded as they are made where ``output`` is a video (bounded disk:
    ``frames.Sealing``), each kept as a PNG while a frame within ``reach`` (default: the
    farthest of ``temporal_frames``, which the warped start and the ties look back) is to come."""
    if clip_output_format(output) is None:
        return store
    reach = max(int(d) for d in params.temporal_frames) if reach is None else reach
    return store.sealed_as(Sealing(info, Path(output), size, params, reach))


def write_clip(info: ClipInfo, store: FrameStore, output: Path, size: tuple[int, int], pts: list[int | None],
               params: StyleParams | None = None) -> None:
    """The clip's output from its written frames: a video joined from their encoded segments
    (``io.video.join_segments``: the last ones encoded now, each segment's disk freed as the
    output takes it in), or the frames copied into the output folder, each atomically, under the
    input's frame names where the input is a folder (``000001.png``… for a video file's)."""
    if clip_output_format(output) is not None:
        store = sealed(store, info, output, size, params or StyleParams(), reach=0)  # every frame is made
        store.seal(len(pts))
        with store.joining(len(pts)):
            join_segments(info, store.segments(len(pts)), output, params, len(pts),
                          on_joined=lambda segment: segment.unlink(missing_ok=True))
        return
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    names = [f"{file.stem}.png" for file in frame_files(info.path)] if info.folder else None
    deep = params is not None and params.bit_depth == 16
    for index in range(len(pts)):
        source = store.deep_path(index) if deep else store.path(index)
        atomic_write(output / (names[index] if names else source.name),
                     lambda f, source=source: f.write(source.read_bytes()))