"""The ledger's typed records: what a report line says (``LineStatus``, and the table of which
line may follow which), where a job stands (``JobState``), a done record, a report line, an attempt's ``Outcome``, a run's summary, and
the one throughput figure. Plain data: nothing here reads or writes a file."""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Iterable

from ..io.manifest import Job

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")  # characters a job's file name keeps as they are
# Exit code of a run stopped by a stop signal after checkpointing (BSD EX_TEMPFAIL): job
# scripts requeue on it.
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130  # ...and by Ctrl-C (the shell's code for it)


class LineStatus(str, Enum):
    """How a report line says an attempt went: STARTED, then one outcome (DONE, FAILED,
    INVALID, PREEMPTED, INTERRUPTED, QUARANTINED); ELSEWHERE is an outcome that leaves no line
    (another run has the job). Where a job stands is another type, ``JobState``."""

    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    INVALID = "invalid"
    PREEMPTED = "preempted"  # checkpointed on a stop signal; the next run resumes it
    INTERRUPTED = "interrupted"  # Ctrl-C, or a run killed mid-job: the next run takes it up
    QUARANTINED = "quarantined"  # killed its worker twice: skipped until it changes or --force
    ELSEWHERE = "elsewhere"

    def __str__(self) -> str:
        return self.value


class JobState(str, Enum):
    """Where a job stands, as ``StateDir.standing`` alone decides it (``STANDING_RULES``, in
    ``ledger.py``): what ``plan``, ``status``, ``report``, the helping shards and packing ask."""

    DONE = "done"
    FAILED = "failed"
    INVALID = "invalid"
    QUARANTINED = "quarantined"  # killed its worker twice: skipped until it changes or --force
    RUNNING = "running"  # a live claim: a run holds it now
    INTERRUPTED = "interrupted"  # an attempt was cut short: a checkpoint waits, or a start has no outcome
    PENDING = "pending"

    def __str__(self) -> str:
        return self.value

    @property
    def is_failure(self) -> bool:
        return self in (JobState.FAILED, JobState.INVALID, JobState.QUARANTINED)

    @property
    def is_settled(self) -> bool:
        """Nothing more happens to the job until its inputs, parameters or output change (or
        ``--force``): what packing a shard and helping shards wait for."""
        return self == JobState.DONE or self.is_failure


# How an attempt goes, line by line of the report a run writes: the statuses a job's next line
# may have after its last one (None: no line yet in this run). An attempt starts, then ends in
# one outcome; before a start a job may be found invalid or quarantined, or be interrupted
# (Ctrl-C before its turn). So no job is done, fails or is preempted at a checkpoint without a
# start, and no attempt ends twice. ``RunLog`` (``record``, ``start``, ``invalid``) consults
# this table against the job's last line in the log, whichever process wrote it, and refuses a
# line it does not allow.
ENDED = (LineStatus.DONE, LineStatus.FAILED, LineStatus.INVALID, LineStatus.PREEMPTED, LineStatus.INTERRUPTED,
         LineStatus.QUARANTINED)
TRANSITIONS: dict[LineStatus | None, tuple[LineStatus, ...]] = {
    None: (LineStatus.STARTED, LineStatus.INVALID, LineStatus.QUARANTINED, LineStatus.INTERRUPTED),
    LineStatus.STARTED: ENDED,
}
for _ended in ENDED:
    TRANSITIONS[_ended] = TRANSITIONS[None]


def allowed(previous: LineStatus | None, new: LineStatus) -> bool:
    """Whether a job's report line may say ``new`` after one that said ``previous``."""
    return new in TRANSITIONS[previous]


def safe_name(job_id: str) -> str:
    """A job id made safe for a file name (ids that are safe already, the usual ones, as they are)."""
    return job_id if _SAFE_ID.fullmatch(job_id) else "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)


# --- records -----------------------------------------------------------------------------------

def from_dict(cls, data: dict):
    """A record from its JSON object: unknown keys (a newer version's) are ignored."""
    names = {f.name for f in fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class DoneRecord:
    """``done/<id>.json``: the job is done while its params hash and output path match and
    the output exists."""

    id: str
    output: str  # absolute: the same job is done whether its manifest was named relative or not
    params_hash: str
    seconds: float = 0.0  # this image's share of its pass
    finished: float = 0.0  # time.time() when written
    batch: int = 1
    costs: dict | None = None  # the image's final costs: step, steps, total, content, style, tv
    device: str = ""
    shard: str | None = None  # the shard that ran it ('s1of3')
    activation_checkpointing: bool = False
    recoveries: int = 0  # failed updates the descent undid on the way (``Outcome.recoveries``)


# Keys every outcome line holds (None where empty); a 'started' line holds only the first four.
_LINE_KEYS = ("id", "where", "status", "shard", "output", "seconds", "steps", "error", "device")


@dataclass(frozen=True)
class LogLine:
    """One line of ``report*.jsonl``: an attempt's start, or its outcome."""

    id: str | None
    status: LineStatus
    where: str | None = None
    shard: str | None = None
    time: float = 0.0
    output: str | None = None
    seconds: float | None = None
    steps: int | None = None
    error: str | None = None
    device: str | None = None
    costs: dict | None = None
    note: str | None = None  # what happened on the way (a retry)
    style_targets: list | None = None  # where each style target came from
    resumed_from_step: int | None = None
    batch: int | None = None  # images that shared its pass, when more than one
    activation_checkpointing: bool | None = None
    owner_shard: str | None = None  # the shard whose job a helping shard ran
    recoveries: list | None = None  # failed updates the descent undid, in words
    images: int | None = None  # a clip's: the frames this attempt made (a still's: one, unsaid)

    def to_json(self) -> dict:
        data = {key: value for key, value in asdict(self).items() if value is not None}
        if self.status != LineStatus.STARTED:
            data.update({key: getattr(self, key) for key in _LINE_KEYS})
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "LogLine | None":
        """None for a line that is not one of ours (or a status this version does not know)."""
        try:
            return from_dict(cls, {**data, "status": LineStatus(data["status"])})
        except (KeyError, ValueError, TypeError):
            return None


@dataclass
class Outcome:
    """How one attempt at a job ended. Plain data (it crosses from worker processes)."""

    job: Job
    status: LineStatus
    seconds: float = 0.0
    error: str | None = None
    costs: dict | None = None  # the image's final costs: total, content, style, tv
    sources: tuple[str, ...] = ()  # where each style target came from: computed | cache | memory
    resumed_from: int | None = None  # the checkpoint step it resumed from
    device: str = ""
    note: str | None = None  # what happened on the way (a retry), for the report
    batch: int = 1  # how many images shared its optimisation pass
    checkpointing: bool = False  # ran with activation checkpointing: it fitted only so
    joined: bool = False  # shots of a clip another run or worker owns (``Planned.join``): nothing to record
    # updates of its descent that failed (an overflowing line search, a non-finite cost) and
    # were undone, in words (``optimize.Result.recoveries``)
    recoveries: tuple[str, ...] = ()
    images: int = 1  # images this attempt made: a clip's frames it stylized

    def log_line(self, shard_tag: str = "", owner: str | None = None) -> LogLine:
        return LogLine(
            self.job.id, self.status, self.job.where, shard_tag or None, time=time.time(),
            output=str(self.job.output), seconds=round(self.seconds, 3), steps=self.job.params.steps,
            error=self.error, device=self.device, costs=self.costs, note=self.note,
            style_targets=list(self.sources) or None, resumed_from_step=self.resumed_from,
            batch=self.batch if self.batch > 1 else None,
            activation_checkpointing=True if self.checkpointing else None, owner_shard=owner,
            recoveries=list(self.recoveries) or None, images=self.images if self.job.clip else None)


def recovered(recoveries) -> str | None:
    """What ``run``, ``report`` and ``stylize`` say of a job's undone updates, or None."""
    if not recoveries:
        return None
    first = recoveries[0] + (f"; and {len(recoveries) - 1} more" if len(recoveries) > 1 else "")
    return f"{len(recoveries)} failed update(s) undone, the descent going on ({first})"


def busy_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """The length of the union of ``(start, end)`` spans: the time at least one job ran."""
    total, reach = 0.0, -float("inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def images_per_hour(done: int, spans: Iterable[tuple[float, float]]) -> float | None:
    busy = busy_seconds(spans)
    return 3600.0 * done / busy if done and busy > 0 else None


def rate_of(lines: Iterable["LogLine"]) -> float | None:
    """THE throughput figure, which ``run``'s last line, ``status`` and ``report`` all print
    from the same report lines: images made (a clip's frames, each) per hour of the time the
    attempts that made them ran, the union of the done attempts' spans (an outcome's time less
    its pass's seconds). A run's start-up, the time between runs, and attempts that made no
    image (stopped, failed, interrupted) do not count; workers side by side count once."""
    done = [line for line in lines if line.status == LineStatus.DONE]
    spans = [(line.time - line.seconds * (line.batch or 1), line.time) for line in done if line.seconds]
    return images_per_hour(sum(1 if line.images is None else line.images for line in done), spans)


RATE_LABEL = "images/hour of job time"  # how run, status and report print it


@dataclass
class RunSummary:
    total: int = 0
    done: int = 0
    skipped: int = 0  # already done before this run
    failed: int = 0
    invalid: int = 0
    quarantined: int = 0  # skipped: they killed their worker twice
    preempted: int = 0  # checkpointed on a stop signal; the next run resumes them
    elsewhere: int = 0  # claimed or finished by another run meanwhile
    seconds: float = 0.0
    style_targets_computed: int = 0
    style_targets_reused: int = 0  # from the cache instead of computed
    shard: str = "all jobs"
    workers: int = 1
    helped: int = 0  # jobs of other shards this shard ran, once done with its own
    copied: int = 0  # sidecar files of dataset entries copied (not counting identical ones there)
    copy_failed: int = 0
    shards_packed: int = 0  # output shards written (``outputs``)
    pack_failed: int = 0  # output shards or metadata files that could not be written
    # After a stop signal: the run's jobs that the standing table (``STANDING_RULES``) says are
    # still to do (pending, interrupted: checkpointed or not), each the next run's; so the run
    # asks to be requeued. Jobs another run holds are not counted: they are that run's.
    left: int = 0
    stopped_by: str | None = None  # the signal that stopped the run ("SIGINT", "SIGTERM", ...)
    lines: list = field(default_factory=list, repr=False)  # the report lines of its outcomes

    @property
    def images_per_hour(self) -> float:
        return rate_of(self.lines) or 0.0

    @property
    def exit_code(self) -> int:
        """0: nothing left and nothing failed; 1: something failed; 75 (a stop signal) or
        130 (Ctrl-C): stopped with jobs left, whatever the stop met (a job in flight, the moment
        between two, or one just finished); only a run with nothing left ends 0 or 1."""
        if self.left:
            return EXIT_INTERRUPTED if self.stopped_by == "SIGINT" else EXIT_PREEMPTED
        return 1 if self.failed or self.invalid or self.quarantined or self.copy_failed or self.pack_failed else 0

    def to_dict(self) -> dict:
        data = {**asdict(self), "images_per_hour": round(self.images_per_hour, 2)}
        del data["lines"]
        return data

    def add(self, outcome: Outcome, line: LogLine | None = None) -> None:
        """Count an outcome; ``line``: its report line as recorded, from which the run's
        throughput is computed as ``status`` computes it (``rate_of``)."""
        counted = {LineStatus.DONE: "done", LineStatus.FAILED: "failed", LineStatus.PREEMPTED: "preempted",
                   LineStatus.ELSEWHERE: "elsewhere", LineStatus.QUARANTINED: "quarantined"}
        if outcome.status in counted:
            setattr(self, counted[outcome.status], getattr(self, counted[outcome.status]) + 1)
        if line is not None:
            self.lines.append(line)
        self.style_targets_computed += outcome.sources.count("computed")
        self.style_targets_reused += outcome.sources.count("cache")


@dataclass(frozen=True)
class Standing:
    """Where a job stands (``StateDir.standing``)."""

    status: JobState
    # Why it would run (PENDING, INTERRUPTED: "new", "output missing", "resumes from its
    # checkpoint", ...), the error (FAILED, INVALID, QUARANTINED) or the holder (RUNNING).
    why: str | None = None
    hash: str | None = None  # its params hash; None when an input cannot be read
    done: DoneRecord | None = None  # DONE: its record


def newest(lines: Iterable[LogLine | None], into: dict[str, LogLine] | None = None) -> dict[str, LogLine]:
    """Each job's newest line of ``lines`` (by time; a tie goes to the later line), added to
    ``into``."""
    into = {} if into is None else into
    for line in lines:
        if line is None or line.id is None:
            continue
        known = into.get(line.id)
        if known is None or line.time >= known.time:
            into[line.id] = line
    return into


def parse_line(raw: bytes) -> LogLine | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None  # a line torn by a kill mid-write
    return LogLine.from_json(data) if isinstance(data, dict) else None
