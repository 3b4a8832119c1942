"""Which torch device a run uses: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
from __future__ import annotations

import torch

from .errors import UsageError


def resolve_device(spec: str = "auto") -> torch.device:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec!r} asked for, but torch sees no CUDA GPU",
                             hint="use --device cpu or auto")
        device = torch.device(spec if spec != "cuda" else "cuda:0")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {spec!r} does not exist: {torch.cuda.device_count()} GPU(s) visible")
        return device
    raise UsageError(f"unknown device {spec!r}", hint="use auto, cpu, cuda or cuda:N")
