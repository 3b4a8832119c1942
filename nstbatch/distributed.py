"""Where this process stands in a cluster: its shard of the manifest, read from the scheduler.

All environment detection lives here, with typed results. A job's shard depends only on its id
(``shard_of``), so shards are deterministic, disjoint and complete, and editing one row moves
no other job.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Mapping

from .errors import UsageError


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int
    source: str  # where it came from: "--shard", "SLURM", "SGE", … or "none"

    @property
    def tag(self) -> str:
        """For file names: '' for the whole manifest, else 's3of8'."""
        return "" if self.count == 1 else f"s{self.index}of{self.count}"

    def __str__(self) -> str:
        return f"shard {self.index + 1}/{self.count} ({self.source})" if self.count > 1 else "all jobs"


WHOLE = Shard(0, 1, "none")


def shard_of(job_id: str, count: int) -> int:
    """The shard a job belongs to: a hash of its id, nothing else."""
    return int(hashlib.sha256(job_id.encode()).hexdigest()[:16], 16) % count


def parse_shard(text: str) -> Shard:
    """``i/n`` with 0 <= i < n (0-based), as given to ``--shard``."""
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected i/n, e.g. 0/8", hint="or --shard auto") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text!r}: need 0 <= i < n (the index is 0-based)")
    return Shard(index, count, "--shard")


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a number") from None


def _arithmetic(name: str, task: int, first: int, last: int, step: int, count: int | None) -> Shard:
    span = (last - first) // step + 1
    if count is not None and count != span:
        raise UsageError(f"{name} array is sparse ({count} tasks over {first}-{last} step {step})",
                         hint="give each task its share with --shard i/n")
    if (task - first) % step or not first <= task <= last:
        raise UsageError(f"{name} task {task} is not in {first}-{last} step {step}")
    return Shard((task - first) // step, span, name)


def _modulo(name: str, task: int, count: int | None) -> Shard:
    # These schedulers give the task's index but not the array's start: any contiguous range of
    # `count` indices maps one-to-one onto the shards by index modulo count.
    if count is None:
        raise UsageError(f"{name} gives the array task index but not the array size",
                         hint="add --shards N (the number of tasks in the array), or use --shard i/n")
    return Shard(task % count, count, name)


def detect_shard(env: Mapping[str, str] | None = None, shards: int | None = None) -> Shard:
    """This task's shard from SLURM, PBS Pro, Torque, LSF, SGE or torchrun variables; the
    whole manifest when none is set. ``shards`` supplies the array size where a scheduler
    does not tell it (PBS, Torque)."""
    env = os.environ if env is None else env
    if (task := _int(env, "SLURM_ARRAY_TASK_ID")) is not None:
        first = _int(env, "SLURM_ARRAY_TASK_MIN")
        last = _int(env, "SLURM_ARRAY_TASK_MAX")
        step = _int(env, "SLURM_ARRAY_TASK_STEP") or 1
        count = _int(env, "SLURM_ARRAY_TASK_COUNT")
        if first is None or last is None:
            return _modulo("SLURM", task, shards or count)
        return _arithmetic("SLURM", task, first, last, step, count)
    if (task := _int(env, "SGE_TASK_ID")) is not None and env.get("SGE_TASK_ID") != "undefined":
        first, last = _int(env, "SGE_TASK_FIRST"), _int(env, "SGE_TASK_LAST")
        step = _int(env, "SGE_TASK_STEPSIZE") or 1
        if first is None or last is None:
            return _modulo("SGE", task, shards)
        return _arithmetic("SGE", task, first, last, step, None)
    if (task := _int(env, "LSB_JOBINDEX")) is not None and task > 0:
        last = _int(env, "LSB_JOBINDEX_END")
        step = _int(env, "LSB_JOBINDEX_STEP") or 1
        if shards is None and last is not None:
            # LSF arrays are 1-based ranges: [1-N] or [1-N:step].
            return _arithmetic("LSF", task, 1, last, step, None)
        return _modulo("LSF", task, shards)
    if (task := _int(env, "PBS_ARRAY_INDEX")) is not None:
        return _modulo("PBS", task, shards)
    if (task := _int(env, "PBS_ARRAYID")) is not None:
        return _modulo("Torque", task, shards)
    if (rank := _int(env, "RANK")) is not None and (world := _int(env, "WORLD_SIZE")) is not None:
        if not 0 <= rank < world:
            raise UsageError(f"RANK={rank} is not below WORLD_SIZE={world}")
        return Shard(rank, world, "torchrun")
    if shards is not None and shards != 1:
        raise UsageError(f"--shards {shards} given, but no scheduler array variable is set",
                         hint="use --shard i/n outside a job array")
    return WHOLE


def resolve_shard(spec: str | None, shards: int | None = None,
                  env: Mapping[str, str] | None = None) -> Shard:
    """``--shard``: None or 'all' (the whole manifest), 'auto' (the scheduler's), or 'i/n'."""
    if spec in (None, "", "all"):
        return WHOLE
    if spec == "auto":
        return detect_shard(env, shards)
    return parse_shard(spec)
