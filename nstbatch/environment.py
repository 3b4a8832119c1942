"""Everything nstbatch reads from its surroundings, in one place, with typed results: the
scheduler's array variables (``jobs.shards`` makes the task's share of them), ``LOCAL_RANK``, the ``NSTBATCH_*``
settings, and how much memory this process may use. No other module reads ``os.environ``.

Settings:
- ``NSTBATCH_CACHE``: the cache folder (else ``$XDG_CACHE_HOME/nstbatch`` or ``~/.cache/nstbatch``);
- ``NSTBATCH_MAX_PIXELS``: the most pixels an input may have (default 150 MP);
- ``NSTBATCH_OFFLINE=1``: never try a download (torchvision weights);
- ``NSTBATCH_TRACEBACK=1``: print the traceback of an error nstbatch did not foresee;
- ``NSTBATCH_MEMORY_LIMIT``: the memory jobs may use on the CPU, e.g. ``8G`` or ``512M``
  (default: what the machine, its cgroup and ``RLIMIT_AS`` allow).
"""
from __future__ import annotations

import functools
import os
import resource
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from .errors import InputError, UsageError

DEFAULT_MAX_PIXELS = 150_000_000
# Every variable read here, for the reference (docs/make_reference.py; a test holds it to the code).
VARIABLES = {
    "NSTBATCH_CACHE": "the cache folder: ONNX models, TensorRT engines, style targets (default:"
                      " `$XDG_CACHE_HOME/nstbatch`, else `~/.cache/nstbatch`)",
    "XDG_CACHE_HOME": "where the default cache folder lies",
    "NSTBATCH_MAX_PIXELS": f"the most pixels an input may have (default {DEFAULT_MAX_PIXELS // 1_000_000} MP): larger"
                           " ones are refused from their header as likely decompression bombs",
    "NSTBATCH_OFFLINE": "`1`: never try a download (torchvision weights)",
    "NSTBATCH_TRACEBACK": "`1`: print the traceback of an error nstbatch did not foresee (a defect to report)",
    "NSTBATCH_MEMORY_LIMIT": "the memory jobs may use on the CPU, e.g. `8G` or `512M` (default: what the"
                             " machine, its cgroup and `RLIMIT_AS` allow)",
    "LOCAL_RANK": "under torchrun: which GPU this process uses",
    "SLURM_ARRAY_TASK_ID": "SLURM array task (with `SLURM_ARRAY_TASK_MIN`, `_MAX`, `_STEP`, `_COUNT`): this task's"
                           " shard of the manifest",
    "SGE_TASK_ID": "SGE/UGE array task (with `SGE_TASK_FIRST`, `_LAST`, `_STEPSIZE`)",
    "LSB_JOBINDEX": "LSF array index (with `LSB_JOBINDEX_END`, `_STEP`)",
    "PBS_ARRAY_INDEX": "PBS Pro array index (the array size from `--shards`)",
    "PBS_ARRAYID": "Torque array index (the array size from `--shards`)",
    "JOB_COMPLETION_INDEX": "Kubernetes Indexed Job index (the completions from `--shards`)",
    "AWS_BATCH_JOB_ARRAY_INDEX": "AWS Batch array index (with `AWS_BATCH_JOB_ARRAY_SIZE`, else `--shards`)",
    "BATCH_TASK_INDEX": "Google Cloud Batch task index (with `BATCH_TASK_COUNT`)",
    "RANK": "under torchrun (with `WORLD_SIZE`): this process's shard of the manifest",
}


# --- the scheduler's array task ------------------------------------------------------------

def array_variables() -> dict[str, str]:
    """The variables a scheduler's array task is told its index (and often the array's size)
    by, as set here: what ``jobs.shards.detect_shard`` reads."""
    prefixes = ("SLURM_ARRAY_", "SGE_TASK_", "LSB_JOBINDEX", "PBS_ARRAY", "JOB_COMPLETION_INDEX",
                "AWS_BATCH_JOB_ARRAY_", "BATCH_TASK_")
    return {name: value for name, value in os.environ.items()
            if name.startswith(prefixes) or name in ("RANK", "WORLD_SIZE")}


def local_rank(env: Mapping[str, str] | None = None) -> int | None:
    """``LOCAL_RANK`` under torchrun: this process's GPU on its node."""
    value = (os.environ if env is None else env).get("LOCAL_RANK", "").strip()
    return int(value) if value.isdigit() else None


# --- NSTBATCH_* settings ------------------------------------------------------------------

def cache_root(override: str | os.PathLike | None = None) -> Path:
    """``--cache-dir``, else ``NSTBATCH_CACHE``, else the user cache folder."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("NSTBATCH_CACHE"):
        return Path(os.environ["NSTBATCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nstbatch"


def max_pixels() -> int:
    """The most pixels an input may have: beyond it a file is refused as a likely
    decompression bomb, before it is decoded."""
    text = os.environ.get("NSTBATCH_MAX_PIXELS", "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise InputError(f"NSTBATCH_MAX_PIXELS={text!r} is not a number") from None
    return max(1, value)


# --- process-wide settings: made by the entry points alone (the CLI, a worker) -----------------

def lift_pillow_limit() -> None:
    """Pillow's own decompression-bomb limit off: ours (``NSTBATCH_MAX_PIXELS``), checked on
    every header by ``images.probe_image``, decides. A library caller keeps Pillow's."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None


def quiet_encoder_logs() -> None:
    """SVT-AV1 (``codec: av1``) prints its banner and settings, 25 lines a clip, unless told to
    keep to errors; a value the user set stays."""
    os.environ.setdefault("SVT_LOG", "1")


def import_onnxruntime() -> None:
    """Import ONNX Runtime with its telemetry SDK's session file (``.ses``, written to the temp
    folder at import) sent into nstbatch's cache, so that a run writes nowhere else. Made
    before any thread starts: the temp folder changes for the import only."""
    import sys

    if "onnxruntime" in sys.modules:
        return
    try:
        folder = cache_root() / "onnxruntime"
        folder.mkdir(parents=True, exist_ok=True)
        redirect = temporary_env(TMPDIR=str(folder))
    except OSError:
        redirect = nullcontext()  # an unwritable cache: ORT writes where it would have
    with redirect:
        import onnxruntime  # noqa: F401


def quiet_onnxruntime_logs() -> None:
    """ONNX Runtime's process-wide logger at errors-and-worse only: a GPU provider that cannot
    start makes it print screenfuls before falling back, and ``OnnxTargets.open`` says that in
    one line instead. Made by the entry points (the CLI's commands that use ONNX Runtime, and
    where jobs run: a worker, or the CLI's process with ``--in-process``), never behind a
    library caller's back."""
    import_onnxruntime()
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)


def offline() -> bool:
    return os.environ.get("NSTBATCH_OFFLINE") == "1"


def show_tracebacks() -> bool:
    return os.environ.get("NSTBATCH_TRACEBACK") == "1"


@contextmanager
def temporary_env(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore exactly what was."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- the machine -------------------------------------------------------------------------

def usable_cpus(env: Mapping[str, str] | None = None) -> int:
    """The cores this process may use: its CPU affinity (what cgroups and ``taskset`` allow),
    and no more than the scheduler allotted (``SLURM_CPUS_PER_TASK``, ``PBS_NCPUS``,
    ``NSLOTS``, ``LSB_DJOB_NUMPROC``) where a scheduler that does not pin processes says so.
    Threads beyond that oversubscribe the cores, which slows PyTorch's CPU kernels manyfold."""
    env = os.environ if env is None else env
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    for name in ("SLURM_CPUS_PER_TASK", "PBS_NCPUS", "NSLOTS", "LSB_DJOB_NUMPROC"):
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            cores = min(cores, int(value))
            break
    return max(1, cores)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX-512 BF16), where bf16 autocast pays
    (read once per process: every memory estimate asks)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


# --- memory -----------------------------------------------------------------------------

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str, what: str = "size") -> int:
    """``8G``, ``512M``, ``1.5G``, ``1000000`` (bytes)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1] if value and value[-1] in "KMGT" else ""
    try:
        number = float(value[:-1] if unit else value)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a size", hint="write it like 8G, 512M or 1000000") from None
    if number <= 0:
        raise UsageError(f"{what}: {text!r} must be positive")
    return int(number * _UNITS[unit])


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def _proc_bytes(path: str, key: str) -> int | None:
    """A ``Key:   1234 kB`` line of a /proc file, in bytes."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int
    source: str  # what sets it: NSTBATCH_MEMORY_LIMIT, cgroup memory.max, RLIMIT_AS, available RAM


def cpu_memory_limit() -> MemoryLimit | None:
    """What the jobs of this process may use on the CPU: ``NSTBATCH_MEMORY_LIMIT`` if set, else
    the tightest of what is left now of the available RAM, the cgroup's ``memory.max`` and the
    address space under ``RLIMIT_AS``. None when nothing can be read."""
    setting = os.environ.get("NSTBATCH_MEMORY_LIMIT", "").strip()
    if setting:
        return MemoryLimit(parse_bytes(setting, "NSTBATCH_MEMORY_LIMIT"), "NSTBATCH_MEMORY_LIMIT")
    found: list[MemoryLimit] = []
    if (available := _proc_bytes("/proc/meminfo", "MemAvailable")) is not None:
        found.append(MemoryLimit(available, "available RAM"))
    limit = _read_int("/sys/fs/cgroup/memory.max")  # cgroup v2; "max" reads as None
    if limit is not None:
        used = _read_int("/sys/fs/cgroup/memory.current") or 0
        found.append(MemoryLimit(max(0, limit - used), "the cgroup's memory.max"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:  # address space: what is left of it
        found.append(MemoryLimit(max(0, soft - (_proc_bytes("/proc/self/status", "VmSize") or 0)), "RLIMIT_AS"))
    return min(found, key=lambda m: m.bytes) if found else None
