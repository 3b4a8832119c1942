"""Optical flow between frames, for the temporal terms (``temporal.py``): OpenCV's DIS
(dense inverse search; ``opencv-python-headless``, no weights to download), computed on CPU
threads ahead of the optimiser (OpenCV releases the GIL), so a GPU never waits for it; or
torchvision's RAFT from a weights file the user supplies (``flow: raft-small:PATH``), on the
job's device.

A flow from frame a to frame b is ``(1, 2, H, W)`` float32 in pixels: ``a(x) ≈ b(x + flow(x))``,
channel 0 horizontal. For frame t and an earlier frame s: the *backward* flow (t → s) is what
warps s's output into t; the *forward* flow (s → t) checks it (``temporal.reliable``).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import split_flow_spec
from ..errors import InputError
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


class DisFlow:
    """OpenCV's DIS at a preset: frames as 8-bit luma, flows on the CPU."""

    def __init__(self, preset: str = "medium"):
        self.preset = preset

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        return gray(rgb)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> Tensor:
        return dis_flow(a, b, self.preset)


class RaftFlow:
    """torchvision's RAFT (small or large) with the weights of ``path`` (a state dict, as
    torchvision publishes them; never downloaded), on ``device``: frames as ``(1, 3, H, W)`` in
    [-1, 1], padded (the border repeated) to sides the network takes; one flow at a time on the device."""

    def __init__(self, model: str, path: Path, device: torch.device | str = "cpu", updates: int = 12):
        from torchvision.models import optical_flow

        self.device, self.updates, self._lock = torch.device(device), updates, threading.Lock()
        net = {"raft-small": optical_flow.raft_small, "raft-large": optical_flow.raft_large}[model](weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        except FileNotFoundError:
            raise InputError(f"flow: RAFT weights file {path} does not exist",
                             hint="name torchvision's raft_small/raft_large .pth file (nothing is downloaded)") from None
        except Exception as e:
            raise InputError(f"flow: {path} holds no {model} weights ({type(e).__name__}: {str(e)[:200]})",
                             hint=f"give {model} torchvision's {model.replace('-', '_')} state dict, or use dis-medium") from None
        self.net = net.eval().to(self.device)

    def prepare(self, rgb: np.ndarray) -> Tensor:
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        h, w = a.shape[-2:]
        # RAFT's features are at 1/8 of the size, and its correlation pyramid halves them three
        # times more: sides a multiple of 8, at least 128
        pad = (0, max(128, w + -w % 8) - w, 0, max(128, h + -h % 8) - h)
        a, b = (torch.nn.functional.pad(x, pad, mode="replicate").to(self.device) for x in (a, b))
        with self._lock, torch.inference_mode():
            flow = self.net(a, b, num_flow_updates=self.updates)[-1]
        return flow[:, :, :h, :w].float().cpu().contiguous()


def estimator(spec: str, device: torch.device | str = "cpu") -> DisFlow | RaftFlow:
    """The flow ``params.flow`` names: ``dis-<preset>`` or ``raft-small:PATH``/``raft-large:PATH``."""
    model, path = split_flow_spec(spec)
    if path is not None:
        return RaftFlow(model, path, device)
    return DisFlow(spec.removeprefix("dis-"))


@dataclass(frozen=True)
class Link:
    """Frame t's tie to an earlier frame s: the backward flow (t → s) that warps s's output
    into t, and where that warp can be trusted (``temporal.reliable``)."""

    distance: int  # t − s: how far back the earlier frame is (1: the previous frame)
    backward: Tensor  # (1, 2, H, W)
    weights: Tensor  # (1, 1, H, W) in [0, 1]


def links(frames: dict, t: int, distances: tuple[int, ...], flow: DisFlow | RaftFlow, soft: bool = False) -> list[Link]:
    """Frame ``t``'s links to the frames ``t − d`` that exist (``frames``: by index, as
    ``flow.prepare`` made them; ``flow``: an ``estimator``), nearest first whatever the order of
    ``distances`` (the first is the warped start; a farther one counts where no nearer is
    trusted), as artistic-videos sorts them; ``soft``: the masks as artistic-videos smooths them."""
    out = []
    for d in sorted(distances):
        if t - d not in frames:
            continue
        backward = flow(frames[t], frames[t - d])
        forward = flow(frames[t - d], frames[t])
        out.append(Link(d, backward, reliable(backward, forward, soft)))
    return out


class FlowAhead:
    """Computes each frame's links on worker threads while earlier frames are optimised:
    ``submit(t, ...)`` early, ``result(t)`` when frame t starts."""

    def __init__(self, threads: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="flow")
        self._pending: dict[int, Future] = {}

    def submit(self, t: int, frames: dict, distances: tuple[int, ...], flow, soft: bool = False) -> None:
        if t not in self._pending:
            needed = {i: frames[i] for i in [t, *(t - d for d in distances)] if i in frames}
            self._pending[t] = self._pool.submit(links, needed, t, distances, flow, soft)

    def result(self, t: int) -> list[Link]:
        return self._pending.pop(t).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
