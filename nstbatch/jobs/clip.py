"""One clip job: its frames stylized in order, each tied to the earlier outputs warped into it
along the optical flow (Ruder et al. 2016; ``engine/temporal.py``), as ``run`` and ``stylize``
do it. A frame after a shot's first starts from the previous output warped into it and takes
``frame_steps``; a scene cut (the flow from the previous frame trusted on less than
``scene_cut`` of the pixels) starts a new shot with no tie.

Resume by frame: each finished frame is written at once (atomically) to a ``FrameStore`` (the
output folder's ``000001.png``…, or the state directory's frames for a video output), and a
rerun skips the frames there, taking the earlier outputs back from them. A frame's ties are
always read from the written 8-bit frames, so an interrupted clip ends as an uninterrupted one
does. A video output is encoded from the frames at the end, with the input's timestamps and
audio, and moved into place whole.
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..config import StyleParams
from ..engine.flow import FlowAhead, Link, estimator
from ..engine.optimize import Result
from ..engine.pixels import to_pil, to_tensor
from ..engine.targets import StyleTarget
from ..engine.temporal import Frame, long_term_weights, warp, warped_start
from ..engine.vgg import VGGFeatures
from ..errors import InputError
from ..geometry import output_size
from ..fs import atomic_write
from ..io.images import load_image, probe_image, save_image
from ..io.manifest import Job
from ..io.video import (ClipInfo, ClipWriter, check_clip_output, clip_output_format, probe_clip,
                        read_frames)
from ..styles.store import StyleTargetStore
from .single import Hooks, optimize_job


def clip_size(info: ClipInfo, params: StyleParams, output: Path) -> tuple[int, int]:
    """The output frames' (height, width); even sides for a video file (yuv420p needs them)."""
    width, height = output_size(info.width, info.height, *params.geometry)
    if clip_output_format(output) is not None:
        width, height = max(2, width - width % 2), max(2, height - height % 2)
    return height, width


class FrameStore:
    """Where a clip's finished frames are kept, one PNG each, written atomically:
    ``000001.png``… (1-based) in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, index: int) -> Path:
        return self.folder / f"{index + 1:06d}.png"

    def has(self, index: int) -> bool:
        return self.path(index).is_file()

    def save(self, index: int, rgb: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_image(Image.fromarray(rgb), self.path(index))

    def load(self, index: int) -> np.ndarray:
        return np.asarray(load_image(self.path(index)))

    def count(self) -> int:
        return len(list(self.folder.glob("[0-9]*.png"))) if self.folder.is_dir() else 0

    def discard(self) -> None:
        """Remove the frames (once the output holds them)."""
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class ClipResult:
    frames: int  # in the clip
    stylized: int  # by this call (the others were written before: a resumed clip)
    shots: list[int]  # the index of each shot's first frame
    last: Result | None  # the last stylized frame's result (its costs)
    sources: list[str] = dataclasses.field(default_factory=list)  # where the style targets came from


def _fitted(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))


def stylize_clip(info: ClipInfo, style_targets: StyleTarget, params: StyleParams, store: FrameStore,
                 size: tuple[int, int], *, features: VGGFeatures | None = None, hooks: Hooks | None = None,
                 on_frame: Callable[[int, int], None] | None = None, device: torch.device | None = None,
                 result: ClipResult | None = None) -> tuple[ClipResult, list[int | None]]:
    """Every frame of the clip not in ``store`` yet, in order; returns what was done (in
    ``result`` where given, so that a caller sees it when the clip stops early) and every
    frame's input timestamp. ``on_frame(index, frames)`` hears of each frame written. The flows
    of frame t+1 are computed on threads while frame t is optimised."""
    distances = tuple(int(d) for d in params.temporal_frames)
    device = device or (next(features.parameters()).device if features is not None else torch.device("cpu"))
    flow = estimator(params.flow, device)
    flows = FlowAhead(threads=2)
    seen: dict[int, object] = {}  # the content frames as the flow reads them, as far back as the ties reach
    outputs: dict[int, np.ndarray] = {}  # the written outputs, as far back
    pts: list[int | None] = []
    done = result if result is not None else ClipResult(info.frames, 0, [], None)
    done.frames = info.frames

    def finish(index: int, rgb: np.ndarray) -> None:
        links = flows.result(index) if index > 0 else []
        if not links or float(links[0].weights.mean()) < params.scene_cut:
            done.shots.append(index)  # a cut (or the first frame): a new shot, tied to nothing before
        links = [link for link in links if index - link.earlier >= done.shots[-1]]
        if not store.has(index):
            result = _stylize_frame(rgb, links, outputs, index, style_targets, params, features, hooks, device)
            store.save(index, np.asarray(to_pil(result.image[:1])))
            done.stylized, done.last = done.stylized + 1, result
            if on_frame is not None:
                on_frame(index, info.frames)
        outputs[index] = store.load(index)  # the ties of later frames: the output as written, always
        for old in [k for k in outputs if k <= index - max(distances)]:
            del outputs[old]

    pending = None
    try:
        for frame in read_frames(info):
            rgb = _fitted(frame.rgb, size)
            pts.append(frame.pts)
            seen[frame.index] = flow.prepare(rgb)
            if frame.index > 0:
                flows.submit(frame.index, seen, distances, flow)
            for old in [k for k in seen if k < frame.index - max(distances)]:
                del seen[old]
            if pending is not None:
                finish(*pending)
            pending = (frame.index, rgb)
        if pending is not None:
            finish(*pending)
    finally:
        flows.close()
    if len(pts) != info.frames:
        raise InputError(f"{info.path}: {len(pts)} frame(s) read of {info.frames}", hint="the clip may be truncated")
    return done, pts


def _stylize_frame(rgb: np.ndarray, links: list[Link], outputs: dict[int, np.ndarray], index: int,
                   style_targets: StyleTarget, params: StyleParams, features, hooks, device) -> Result:
    """One frame: alone (a shot's first), or from the previous output warped into it, tied to
    the earlier outputs where the flow is trusted, in ``frame_steps``."""
    content = to_tensor(Image.fromarray(rgb)).to(device)
    if not links:
        return optimize_job(content, style_targets, params, features=features, hooks=hooks)
    warped = [warp(to_tensor(Image.fromarray(outputs[index - link.earlier])).to(device), link.backward.to(device))
              for link in links]
    weights = long_term_weights([link.weights.to(device) for link in links])
    frame = Frame(warped_start(content, warped[0], links[0].weights.to(device)), tuple(zip(warped, weights)))
    later = dataclasses.replace(params, steps=params.frame_steps or params.steps)
    if params.frame_scales == "finest":  # the warped start is at the full size: no coarse pass to blur it
        later = dataclasses.replace(later, scales=(1.0,), scale_steps=(1.0,))
    return optimize_job(content, style_targets, later, features=features, init=frame, hooks=hooks)


def check_clip_files(content: Path, styles: Sequence[tuple[Path, float]], output: Path,
                     params: StyleParams) -> ClipInfo:
    """Everything about a clip job's files that can be known before a frame is decoded."""
    info = probe_clip(content)
    for style, _ in styles:
        probe_image(style)
    check_clip_output(output)
    if Path(output).resolve() == Path(content).resolve():
        raise InputError(f"{output}: the output is also the clip; it would be overwritten",
                         hint="choose another output")
    if params.preserve_color == "histogram":
        raise InputError(f"{content}: preserve_color histogram recolours the style to one image's"
                         " colours, not a clip's", hint="use preserve_color luminance or none for clips")
    return info


def clip_job(job: Job, store: StyleTargetStore, frames: FrameStore, *, features: VGGFeatures | None = None,
             hooks: Hooks | None = None, on_frame: Callable[[int, int], None] | None = None,
             device: torch.device | None = None, result: ClipResult | None = None) -> tuple[ClipInfo, ClipResult]:
    """One clip job from its files, as ``run`` and ``stylize`` do it: checked, its styles'
    targets from ``store`` at the frames' size, its frames (kept in ``frames``, which a rerun
    resumes from), then its output written."""
    content, styles, output, params = job.content, job.styles, job.output, job.params
    info = check_clip_files(content, styles, output, params)
    size = clip_size(info, params, output)
    style_targets, sources = store.for_files(styles, params, content, max(size))
    done = result if result is not None else ClipResult(info.frames, 0, [], None)
    done.sources = sources
    done, pts = stylize_clip(info, style_targets, params, frames, size, features=features, hooks=hooks,
                             on_frame=on_frame, device=device, result=done)
    write_clip(info, frames, output, size, pts)
    return info, done


def write_clip(info: ClipInfo, store: FrameStore, output: Path, size: tuple[int, int], pts: list[int | None]) -> None:
    """The clip's output from its written frames: a video (``encode_clip``), or the frames
    copied into the output folder, each atomically."""
    if clip_output_format(output) is not None:
        encode_clip(info, store, output, size, pts)
        return
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for index in range(len(pts)):
        source = store.path(index)
        atomic_write(output / source.name, lambda f, source=source: f.write(source.read_bytes()))


def encode_clip(info: ClipInfo, store: FrameStore, output: Path, size: tuple[int, int], pts: list[int | None]) -> None:
    """The video output from the written frames, with the input's timestamps and audio; moved
    into place whole."""
    height, width = size
    writer = ClipWriter(output, info, width, height)
    try:
        for index, stamp in enumerate(pts):
            writer.write(store.load(index), stamp)
    except BaseException as error:
        writer.abort(error)
        raise
    writer.close()
