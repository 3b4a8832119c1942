"""A clip's cuts, found before any frame is stylized: a frame starts a new shot where the flow
from the previous frame is trusted on less than ``scene_cut`` of its pixels (``find_shots``,
with the estimator the frames are tied with). The shots are kept in the clip's ``FrameStore``
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


def find_shots(info: ClipInfo, size: tuple[int, int], params: StyleParams, flow) -> Shots:
    """The cut pre-pass: a frame starts a new shot where the flow from the previous frame (by
    ``flow``, the estimator that ties the frames) is trusted on less than ``scene_cut`` of its
    pixels. Two flows a frame, no optimisation: a few percent of a later frame's time."""
    starts, previous, count = [0], None, 0
    for frame in read_frames(info):
        current = flow.prepare(fitted(frame.rgb, size))
        if previous is not None:
            [link] = links({frame.index - 1: previous, frame.index: current}, frame.index, (1,), flow)
            if float(link.weights.mean()) < params.scene_cut:
                starts.append(frame.index)
        previous, count = current, count + 1
    check_count(info, count)
    return Shots(tuple(starts), count)


def check_count(info: ClipInfo, count: int) -> None:
    if count != info.frames:
        raise InputError(f"{info.path}: {count} frame(s) read of {info.frames}", hint="the clip may be truncated")
