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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX-512 BF16), where bf16 autocast pays."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the network's forward pass, or None for plain float32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise UsageError("precision fp16 needs a GPU", hint="use bf16 or fp32 on the CPU")
        return torch.float16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None
