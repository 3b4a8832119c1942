"""``RunOptions``: every option of a run in one frozen record, built once by the CLI (or by a
Python caller) and handed down; the parts a worker needs cross to it as they are."""
from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..environment import WHOLE, Shard
from ..errors import UsageError

DEFAULT_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
BACKENDS = ("onnx", "torch")


@dataclass(frozen=True)
class RunOptions:
    manifest: Path
    state_dir: Path | None = None  # default: beside the manifest (ledger.default_state_dir)
    devices: str = "auto"  # auto | all | cpu | cuda:0,cuda:1 (one worker per device)
    workers: int | None = None  # CPU only: split the cores among this many workers
    shard: Shard = WHOLE
    batch: str | int = 1  # jobs per optimisation pass, or "auto"
    force: bool = False
    skip_invalid: bool = False
    dry_run: bool = False
    targets: str = "onnx"  # style targets by ONNX Runtime or torch
    cache_dir: Path | None = None
    providers: str = "auto"
    allow_fallback: bool = False
    checkpoint_every: int = 0
    claim_stale: float = 300.0  # seconds without a heartbeat before a claim is broken
    # A shard that has finished its own jobs helps with the other shards' pending ones.
    steal: bool = True
    compile: bool = False
    snapshot_dir: Path | None = None
    stop_signals: tuple[int, ...] = DEFAULT_STOP_SIGNALS
    # Jobs run in worker processes, so that a crash or the kernel's OOM killer ends one attempt,
    # not the run. False runs them in this process: for debuggers and profilers.
    isolate: bool = True
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
