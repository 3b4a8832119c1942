"""Every decision about devices: which one a job runs on, one per worker, the precision and
how often costs are read back there, how much memory it offers, and what its out-of-memory
error looks like."""
from __future__ import annotations

import torch

from ..environment import MemoryLimit, cpu_has_bf16, cpu_memory_limit, local_rank
from ..errors import UsageError


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


def run_precision(params, device: torch.device) -> tuple[torch.dtype | None, torch.memory_format]:
    """How a run of ``params`` on ``device`` takes the network: its autocast dtype (None: plain
    float32; L-BFGS never fp16, which has no loss scaling and whose gradients would underflow)
    and the network's memory layout. Channels-last pays with cuDNN and with oneDNN's bf16
    kernels; plain fp32 on the CPU gains nothing from it (benchmarks/RESULTS.md)."""
    dtype = autocast_dtype(params.precision, device)
    if dtype == torch.float16 and params.optimizer == "lbfgs":
        dtype = None
    return dtype, (torch.channels_last if device.type == "cuda" or dtype is not None else torch.contiguous_format)


def worker_devices(devices: str = "auto", workers: int | None = None) -> list[str]:
    """One device per worker: ``auto`` (every visible GPU, else the CPU; under torchrun the GPU
    of ``LOCAL_RANK``), ``all`` (every GPU), ``cpu``, or ``cuda:0,cuda:1`` (``cuda`` alone is
    ``cuda:0``). ``workers`` splits the CPU among that many workers."""
    spec = (devices or "auto").strip().lower()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    if spec == "auto":
        rank = local_rank()
        if gpus and rank is not None:  # under torchrun: one process per GPU already
            return [f"cuda:{rank % gpus}"]
        spec = "all" if gpus else "cpu"
    if spec == "cpu":
        return ["cpu"] * (workers or 1)
    if workers is not None:
        raise UsageError("--workers splits the CPU; with GPUs there is one worker per device",
                         hint="list devices instead: --devices cuda:0,cuda:1")
    if spec == "all":
        if not gpus:
            raise UsageError("--devices all: torch sees no GPU", hint="use --devices auto or cpu")
        return [f"cuda:{i}" for i in range(gpus)]
    names = ["cuda:0" if d.strip() == "cuda" else d.strip() for d in spec.split(",") if d.strip()]
    for name in names:
        index = name.partition(":")[2]
        if not (name.startswith("cuda:") and index.isdigit()) or int(index) >= gpus:
            raise UsageError(f"--devices: {name!r} is not a visible GPU ({gpus} visible)",
                             hint="use auto, all, cpu, or cuda:N,…")
    return names


def report_every(device: torch.device) -> int:
    """How often the loop reads its costs back: every step on a CPU; every 10 on a GPU, where
    each read stalls the queue of kernels."""
    return 1 if device.type == "cpu" else 10


def memory_available(device: torch.device) -> MemoryLimit | None:
    """What a job may still use on ``device``: on a GPU its free memory plus what torch's
    allocator holds unused; on the CPU what the machine, cgroup and limits leave
    (``environment.cpu_memory_limit``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        spare = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return MemoryLimit(free + spare, f"free memory of {device}")
    return cpu_memory_limit()


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU's out-of-memory error, or the CPU allocator's failure (which has no class)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
