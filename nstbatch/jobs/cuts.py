"""A clip's cuts, found before any frame is stylized: a frame starts a new shot where the flow
from the previous frame is trusted on less than ``scene_cut`` of its pixels and the next frames
are unlike that previous frame too (``find_shots``, with the estimator the frames are tied with). The shots are kept in the clip's ``FrameStore``
(``frames.py``), so a rerun and every run sharing the frames read the same cuts."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..config import StyleParams
from ..engine.flow import links
from ..errors import InputError
from ..io.video import ClipInfo, read_frames
from .frames import Shots


def fitted(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))


# Frames after an untrusted one that must not resemble the frame before it either, for a cut:
# a flash, a glitch or a one-frame whip is over by then, and is no cut.
CUT_EVIDENCE = 2


def find_shots(info: ClipInfo, size: tuple[int, int], params: StyleParams, flow) -> Shots:
    """The cut pre-pass: a frame starts a new shot where the flow from the previous frame (by
    ``flow``, the estimator that ties the frames) is trusted on less than ``scene_cut`` of its
    pixels, and the ``CUT_EVIDENCE`` frames after it are no more like that previous frame (a
    flash or a glitch of a frame or two is no cut: the take goes on). One flow a frame, no
    optimisation: a few percent of a later frame's time; a few more around each candidate."""
    cuts, count = _Cuts(flow, params), 0
    for frame in read_frames(info):
        cuts.feed(frame.index, flow.prepare(fitted(frame.rgb, size)))
        count += 1
    check_count(info, count)
    return Shots(tuple(cuts.end()), count, cuts.bridges)


class _Cuts:
    """``find_shots``' bookkeeping: the last frame of the take so far (``anchor``) and the
    frames after it that are unlike it (``pending``, at most ``CUT_EVIDENCE`` + 1)."""

    def __init__(self, flow, params: StyleParams):
        self.flow, self.params = flow, params
        self.starts: list[int] = [0]
        self.anchor = None  # (index, prepared frame)
        self.pending: list = []
        self.bridges: dict[int, int] = {}  # a frame after a flash -> how far back the take's last frame is

    def feed(self, index: int, prepared) -> None:
        if self.anchor is None or _trusted(*self.anchor, index, prepared, self.flow, self.params):
            if self.anchor is not None and self.anchor[0] != index - 1:
                self.bridges[index] = index - self.anchor[0]  # the take goes on over a flash: tied across it
            self.anchor, self.pending = (index, prepared), []
            return
        self.pending.append((index, prepared))
        if len(self.pending) > CUT_EVIDENCE:
            self._cut()

    def _cut(self) -> None:
        """The first unlike frame starts a shot; the frames after it are judged against it."""
        (first, prepared), rest = self.pending[0], self.pending[1:]
        self.starts.append(first)
        self.anchor, self.pending = (first, prepared), []
        for index, later in rest:
            self.feed(index, later)

    def end(self) -> list[int]:
        """The shots' first frames, once the clip is read: frames still unlike the take when it
        ended start a shot (what evidence there was, agreed)."""
        while self.pending:
            self._cut()
        return self.starts


def _trusted(at: int, earlier, index: int, later, flow, params: StyleParams) -> bool:
    """Whether the flow from frame ``at`` (``earlier``) to frame ``index`` (``later``) is trusted
    on ``scene_cut`` of the pixels or more."""
    [link] = links({at: earlier, index: later}, index, (index - at,), flow)
    return float(link.weights.mean()) >= params.scene_cut


def check_count(info: ClipInfo, count: int) -> None:
    if count != info.frames:
        raise InputError(f"{info.path}: {count} frame(s) read of {info.frames}", hint="the clip may be truncated")
