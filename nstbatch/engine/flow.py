"""Optical flow between frames, for the temporal terms (``temporal.py``): OpenCV's DIS
(dense inverse search; ``opencv-python-headless``, no weights to download), computed on CPU
threads ahead of the optimiser (OpenCV releases the GIL), so a GPU never waits for it.

A flow from frame a to frame b is ``(1, 2, H, W)`` float32 in pixels: ``a(x) ≈ b(x + flow(x))``,
channel 0 horizontal. For frame t and an earlier frame s: the *backward* flow (t → s) is what
warps s's output into t; the *forward* flow (s → t) checks it (``temporal.reliable``).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .temporal import reliable

# DIS's presets by name (OpenCV's: ultrafast, fast, medium); medium is the default here
PRESETS = ("ultrafast", "fast", "medium")


def _dis(preset: str):
    """A new DIS object for each flow: one that computed a flow before starts the next from
    what it kept (measured: 1.3 px apart on a drawn pan), which would make a frame's flow depend
    on which frames a thread did before it, and a resumed clip differ from an uninterrupted one."""
    import cv2

    code = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset]
    return cv2.DISOpticalFlow_create(code)


def gray(rgb: np.ndarray) -> np.ndarray:
    """An RGB ``uint8`` frame as the 8-bit luma DIS reads."""
    import cv2

    return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))


def dis_flow(a: np.ndarray, b: np.ndarray, preset: str = "medium") -> Tensor:
    """The flow from gray frame ``a`` to gray frame ``b``, ``(1, 2, H, W)``."""
    flow = _dis(preset).calc(a, b, None)  # (H, W, 2)
    return torch.from_numpy(flow).permute(2, 0, 1).unsqueeze(0).contiguous()


@dataclass(frozen=True)
class Link:
    """Frame t's tie to an earlier frame s: the backward flow (t → s) that warps s's output
    into t, and where that warp can be trusted (``temporal.reliable``)."""

    earlier: int  # s, as a distance back from t (1: the previous frame)
    backward: Tensor  # (1, 2, H, W)
    weights: Tensor  # (1, 1, H, W) in [0, 1]


def links(frames: dict[int, np.ndarray], t: int, distances: tuple[int, ...], preset: str = "medium") -> list[Link]:
    """Frame ``t``'s links to the frames ``t − d`` (``frames``: gray frames by index) that exist."""
    out = []
    for d in distances:
        if t - d not in frames:
            continue
        backward = dis_flow(frames[t], frames[t - d], preset)
        forward = dis_flow(frames[t - d], frames[t], preset)
        out.append(Link(d, backward, reliable(backward, forward)))
    return out


class FlowAhead:
    """Computes each frame's links on worker threads while earlier frames are optimised:
    ``submit(t, ...)`` early, ``result(t)`` when frame t starts."""

    def __init__(self, threads: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="flow")
        self._pending: dict[int, Future] = {}

    def submit(self, t: int, frames: dict[int, np.ndarray], distances: tuple[int, ...], preset: str) -> None:
        if t not in self._pending:
            needed = {i: frames[i] for i in [t, *(t - d for d in distances)] if i in frames}
            self._pending[t] = self._pool.submit(links, needed, t, distances, preset)

    def result(self, t: int) -> list[Link]:
        return self._pending.pop(t).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
