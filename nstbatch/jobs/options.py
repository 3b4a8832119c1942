"""``RunOptions``: every option of a run in one frozen record, built once by the CLI (or by a
Python caller) and handed down; the parts a worker needs cross to it as they are. The ``run``
command's flags are made from its fields (each field's ``Flag``), as ``StyleParams`` makes
the style flags, so the two cannot drift apart."""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

from .shards import WHOLE, Shard, resolve_shard
from ..errors import UsageError
from ..io.manifest import parse_overrides
from .claims import CLAIM_STALE

DEFAULT_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
BACKENDS = ("onnx", "torch")
_DEVICES = re.compile(r"auto|all|cpu|(cuda(:\d+)?)(,\s*cuda(:\d+)?)*")


@dataclass(frozen=True)
class Flag:
    """How a field is spelled on the ``run`` command line."""

    help: str
    kind: object  # the flag's type, as typer reads it
    default: object = None  # the flag's own default (what --help shows)
    name: str | None = None  # the flag's name when it is not the field's (--in-process for isolate)
    to_field: Callable[[object], object] | None = None  # the flag's value -> the field's
    metavar: str | None = None  # what --help shows for its value (typer's default: its type)

    def option(self, field_name: str) -> str:
        return "--" + (self.name or field_name).replace("_", "-")


def _flag(help: str, kind, default=None, **more) -> dict:
    return {"flag": Flag(help, kind, default, **more)}


def parse_signals(text: str) -> tuple[int, ...]:
    """``TERM,USR1`` -> the signal numbers; SIGKILL and SIGSTOP cannot be caught."""
    found = []
    for name in (p.strip().upper() for p in text.split(",") if p.strip()):
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in ("SIGKILL", "SIGSTOP") or not hasattr(signal, name):
            raise UsageError(f"--stop-signals: {name} cannot be caught here",
                             hint="use names like TERM, USR1, USR2, HUP")
        found.append(getattr(signal, name))
    return tuple(found)


# --set on run, and on the commands that read a run (status, report, sheet, plan, validate,
# precompute): they must see the same parameters to find its records.
SET_HELP = ("A parameter for every job, over the manifest's own values; repeat it (--set size=64"
            " --set steps=10 tries a manifest small and fast). Give status, report, sheet and plan the same"
            " --set to see that run.")


# A flag that is no field of its own: it completes --shard auto under some schedulers.
SHARDS_FLAG = Flag("With --shard auto under PBS, Torque, Kubernetes or AWS Batch: the number of tasks in"
                   " the array.", Optional[int])


@dataclass(frozen=True)
class RunOptions:
    manifest: Path
    state_dir: Path | None = field(default=None, metadata=_flag(
        "Where done records and reports go [default: MANIFEST's folder/.nstbatch/MANIFEST-NAME].", Optional[Path]))
    devices: str = field(default="auto", metadata=_flag(
        "auto (every visible GPU, else the CPU), all, cpu, or cuda:0,cuda:1: one worker process per device.",
        str, "auto"))
    workers: int | None = field(default=None, metadata=_flag(
        "CPU only: split the cores among N workers.", Optional[int]))
    shard: Shard = field(default=WHOLE, metadata=_flag(
        "This task's share of the manifest: auto (from SLURM, PBS, Torque, LSF, SGE, Kubernetes Indexed"
        " Job, AWS Batch, Google Cloud Batch or torchrun variables) or i/n (0-based).", Optional[str]))
    batch: str | int = field(default=1, metadata=_flag(
        "Optimise up to N jobs that share output size and parameters in one pass, whatever their styles"
        " (Adam only), or auto (as many as the GPU's memory holds, up to 16; 1 on CPU).", str, "1"))
    overrides: tuple[tuple[str, str], ...] = field(default=(), metadata=_flag(
        SET_HELP, Optional[list[str]], name="set", metavar="KEY=VALUE",
        to_field=lambda texts: tuple(parse_overrides(texts).items())))
    force: bool = field(default=False, metadata=_flag(
        "Rerun jobs that are already done (and quarantined ones).", bool, False))
    skip_invalid: bool = field(default=False, metadata=_flag(
        "Run the valid jobs of an invalid manifest.", bool, False))
    dry_run: bool = field(default=False, metadata=_flag(
        "List what would run, and why (new, output missing, resumes from its checkpoint, ...); run nothing.",
        bool, False))
    targets: str = field(default="onnx", metadata=_flag(
        "How style targets are computed: onnx (ONNX Runtime) or torch.", str, "onnx"))
    cache_dir: Path | None = field(default=None, metadata=_flag(
        "Cache of ONNX models and style targets [default: $NSTBATCH_CACHE, else ~/.cache/nstbatch].",
        Optional[Path]))
    providers: str = field(default="auto", metadata=_flag(
        "ONNX Runtime providers: auto (TensorRT, CUDA, CPU where a GPU is visible; else CPU) or a comma"
        " list of tensorrt, cuda, cpu.", str, "auto", metavar="auto|LIST"))
    allow_fallback: bool = field(default=False, metadata=_flag(
        "Run on whatever provider ONNX Runtime starts instead of failing when the first one asked for"
        " does not.", bool, False))
    checkpoint_every: int = field(default=0, metadata=_flag(
        "Also checkpoint the jobs in progress every N steps (covers hard kills); 0: only on a stop signal.",
        int, 0))
    claim_stale: float = field(default=CLAIM_STALE, metadata=_flag(
        "Seconds without a heartbeat after which a job's claim (a run on another host that died) is broken"
        " and the job taken over.", float, CLAIM_STALE))
    # A shard that has finished its own jobs helps with the other shards' pending ones.
    steal: bool = field(default=True, metadata=_flag(
        "With --shard: run this shard's jobs only; by default a shard that is done with its own takes the"
        " other shards' pending jobs (each still runs once), so an array finishes together.",
        bool, False, name="no_steal", to_field=lambda no: not no))
    compile: bool = field(default=False, metadata=_flag(
        "torch.compile the VGG-19: about 1.2x faster steps on a GPU after tens of seconds of compiling per"
        " image size; for long runs of one size. Slower on CPUs.", bool, False))
    snapshot_dir: Path | None = field(default=None, metadata=_flag(
        "Where the snapshots of jobs with save_every go [default: the state directory's snapshots/].",
        Optional[Path]))
    stop_signals: tuple[int, ...] = field(default=DEFAULT_STOP_SIGNALS, metadata=_flag(
        "Signals that checkpoint and stop the run (exit code 75).", str, "TERM,USR1", to_field=parse_signals))
    # Jobs run in worker processes, so that a crash or the kernel's OOM killer ends one attempt,
    # not the run. False runs them in this process: for debuggers and profilers.
    isolate: bool = field(default=True, metadata=_flag(
        "Run the jobs in this process instead of worker processes: a crash or the out-of-memory killer"
        " then ends the whole run. For debuggers and profilers.", bool, False, name="in_process",
        to_field=lambda here: not here))
    # Called at the start of each worker process (and once in this process when not
    # isolating): a picklable function. For fault injection in tests and for site set-up.
    worker_setup: Callable[[], None] | None = None

    def __post_init__(self):
        object.__setattr__(self, "manifest", Path(self.manifest))
        for name in ("state_dir", "cache_dir", "snapshot_dir"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if self.targets not in BACKENDS:
            raise UsageError(f"unknown targets backend {self.targets!r}", hint="use onnx or torch")
        if not _DEVICES.fullmatch((self.devices or "auto").strip().lower()):
            raise UsageError(f"--devices {self.devices!r}: not a device list",
                             hint="use auto, all, cpu, or cuda:N,… (one worker per device)")
        if self.workers is not None and self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.claim_stale <= 0:
            raise UsageError("--claim-stale must be a positive number of seconds")
        if self.checkpoint_every < 0:
            raise UsageError("--checkpoint-every must be 0 or more")
        if str(self.batch) != "auto":
            try:
                size = int(self.batch)
            except ValueError:
                raise UsageError(f"--batch {self.batch!r}: expected a number or auto") from None
            if size < 1:
                raise UsageError("--batch must be at least 1")
            object.__setattr__(self, "batch", size)

    @classmethod
    def flags(cls) -> dict[str, Flag]:
        """The ``run`` command's flags by parameter name (``SHARDS_FLAG`` as ``shards``)."""
        found = {f.metadata["flag"].name or f.name: f.metadata["flag"] for f in fields(cls) if "flag" in f.metadata}
        return {**found, "shards": SHARDS_FLAG}

    @classmethod
    def from_flags(cls, manifest, **values) -> "RunOptions":
        """The options from the values of ``flags()`` (a missing one takes its default)."""
        options = {}
        for f in fields(cls):
            flag = f.metadata.get("flag")
            name = flag and (flag.name or f.name)
            if flag is None or name not in values:
                continue
            value = values[name]
            options[f.name] = flag.to_field(value) if flag.to_field else value
        if "shard" in values or "shards" in values:
            options["shard"] = resolve_shard(values.get("shard"), values.get("shards"))
        return cls(manifest, **options)
