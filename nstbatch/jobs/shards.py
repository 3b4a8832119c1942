"""An array task's share of a manifest (``Shard``): from ``--shard i/n``, or from the
scheduler's array variables (SLURM, SGE, LSF, PBS, Torque, Kubernetes Indexed Jobs, AWS Batch,
Google Cloud Batch, torchrun), which ``environment.array_variables`` reads. A job belongs to
the shard a hash of its id names (``shard_of``)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Mapping

from ..environment import array_variables
from ..errors import UsageError


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based, everywhere: --shard, plan, status and the run's summary
    count: int
    source: str  # where it came from: "--shard", "SLURM", "SGE", … or "none"

    @property
    def tag(self) -> str:
        """For file names and records: '' for the whole manifest, else 's3of8'."""
        return "" if self.count == 1 else f"s{self.index}of{self.count}"

    @classmethod
    def from_tag(cls, tag: str | None) -> "Shard | None":
        """The shard a tag ('s3of8') names; None for no tag or another text."""
        found = re.fullmatch(r"s(\d+)of(\d+)", tag or "")
        return cls(int(found.group(1)), int(found.group(2)), "record") if found else None

    @classmethod
    def owner(cls, job_id: str, count: int) -> "Shard":
        """The shard of ``count`` a job belongs to."""
        return cls(shard_of(job_id, count), count, "hash")

    def __str__(self) -> str:
        return f"shard {self.index}/{self.count} ({self.source})" if self.count > 1 else "all jobs"

    def owns(self, job_id: str) -> bool:
        return self.count == 1 or shard_of(job_id, self.count) == self.index


WHOLE = Shard(0, 1, "none")


def shard_of(job_id: str, count: int) -> int:
    """The shard a job belongs to: a hash of its id, nothing else, so shards are deterministic,
    disjoint and complete, and editing one row moves no other job."""
    return int(hashlib.sha256(job_id.encode()).hexdigest()[:16], 16) % count


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
    """This task's shard from SLURM, PBS Pro, Torque, LSF, SGE, Kubernetes Indexed Job, AWS
    Batch, Google Cloud Batch or torchrun variables; the whole manifest when none is set.
    ``shards`` supplies the array size where a scheduler does not tell it (PBS, Torque,
    Kubernetes, AWS Batch without AWS_BATCH_JOB_ARRAY_SIZE)."""
    env = array_variables() if env is None else env
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
    # Cloud arrays count from 0. Kubernetes Indexed Jobs do not tell the completions count to
    # the pod (the Job passes it as --shards); AWS Batch tells the size only where the job
    # definition sets AWS_BATCH_JOB_ARRAY_SIZE; Google Cloud Batch always does.
    for name, index, size in (("Kubernetes", "JOB_COMPLETION_INDEX", None),
                              ("AWS Batch", "AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE"),
                              ("Google Cloud Batch", "BATCH_TASK_INDEX", "BATCH_TASK_COUNT")):
        if (task := _int(env, index)) is not None:
            count = shards or (_int(env, size) if size else None)
            if count is not None and not 0 <= task < count:
                raise UsageError(f"{index}={task} is not below the array size {count}",
                                 hint="--shards must be the number of tasks (completions) in the array")
            return _modulo(name, task, count)
    if (rank := _int(env, "RANK")) is not None and (world := _int(env, "WORLD_SIZE")) is not None:
        if not 0 <= rank < world:
            raise UsageError(f"RANK={rank} is not below WORLD_SIZE={world}")
        return Shard(rank, world, "torchrun")
    if shards is not None and shards != 1:
        raise UsageError(f"--shards {shards} given, but no scheduler array variable is set",
                         hint="use --shard i/n outside a job array")
    return WHOLE


def parse_shard(text: str) -> Shard:
    """``i/n`` with 0 <= i < n (0-based), as given to ``--shard``."""
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected i/n, e.g. 0/8", hint="or --shard auto") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text!r}: need 0 <= i < n (the index is 0-based)")
    return Shard(index, count, "--shard")


def resolve_shard(spec: str | None, shards: int | None = None,
                  env: Mapping[str, str] | None = None) -> Shard:
    """``--shard``: None or 'all' (the whole manifest), 'auto' (the scheduler's), or 'i/n'."""
    if spec in (None, "", "all"):
        return WHOLE
    if spec == "auto":
        return detect_shard(env, shards)
    return parse_shard(spec)
