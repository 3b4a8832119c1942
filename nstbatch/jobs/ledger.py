"""The ledger: a run's state directory, its typed records, and the one place that decides
where a job stands (``StateDir.standing``).

Layout (default ``<manifest folder>/.nstbatch/<manifest name>/``, ``--state-dir`` to move it):

    done/<job id>.json     a ``DoneRecord`` per finished job: its output and params hash
    report.jsonl           a ``ReportLine`` per attempt's start, then one for its outcome
                           (report-s<i>of<n>.jsonl per shard)
    summary.json           the last run's totals (summary-s<i>of<n>.json per shard)
    hashes.jsonl           sha256 of input files by path, size, mtime, ctime and inode, so a
                           restart stats its inputs instead of reading them (hashes-s<i>of<n>)
    history/<job id>.csv   each finished job's costs by step
    kills/<job id>.json    attempts that killed their worker (two: the job is quarantined)
    packed/<hash>.json     per output shard: the samples it holds (job id -> params hash)
    checkpoints/, claims/  jobs in progress; snapshots/ (save_every), thumbs/ (nstbatch report)

Who writes what. ``job``: the process that runs the job (a worker, or the run's own process
with ``--in-process``), which writes the job's output, history, checkpoint and done record, in
that order, holding its claim; ``parent``: the run's parent process, which also packs output
shards and writes dataset trees' ``metadata.jsonl`` (``outputs``). ``tests/test_ledger.py``
holds every call of each writer to this table:

    record                        process  written by
    done/<id>.json                job      StateDir.mark_done
    history/<id>.csv              job      StateDir.write_history
    checkpoints/<id>.pt           job      checkpoints.save_checkpoint, checkpoints.discard_checkpoint
    claims/<id>.lock              job      claims.claim_at (the executor)
    claims/pack-*, metadata-*     parent   claims.claim_at (outputs: a lock per shard or tree)
    report*.jsonl                 parent   StateDir.record, StateDir.record_start, StateDir.record_invalid
    kills/<id>.json               parent   StateDir.record_kill, StateDir.forget_kills
    summary*.json                 parent   StateDir.write_summary
    hashes*.jsonl                 parent   StateDir.save_hashes
    packed/<hash>.json            parent   StateDir.write_packed

Records are written to a temp file and ``os.replace``d;
report lines are appended with one ``write`` each, and a reader skips a torn last line, so a
kill at any moment leaves the state readable. Nothing here is ever written among the
outputs, and nothing here imports torch: ``nstbatch status`` and ``report`` read a run in a
fraction of a second.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Iterable, Iterator

from ..io import shards
from ..io.hashing import FileHashes, JobHasher
from ..fs import atomic_write
from ..io.manifest import Job, Problem
from .claims import CLAIM_STALE, live_holder_at

KILLS_BEFORE_QUARANTINE = 2
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")  # characters job_file keeps as they are
# Exit code of a run stopped by a stop signal after checkpointing (BSD EX_TEMPFAIL): job
# scripts requeue on it.
EXIT_PREEMPTED = 75


class JobStatus(str, Enum):
    """Where a job stands, and how an attempt ended. Report lines hold STARTED and the
    outcomes; ``StateDir.standing`` answers DONE, FAILED, INVALID, QUARANTINED, RUNNING,
    INTERRUPTED or PENDING; ELSEWHERE is an outcome that leaves no line (another run has it)."""

    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    INVALID = "invalid"
    PREEMPTED = "preempted"  # checkpointed on a stop signal; the next run resumes it
    INTERRUPTED = "interrupted"  # Ctrl-C, or a run killed mid-job: the next run takes it up
    QUARANTINED = "quarantined"  # killed its worker twice: skipped until it changes or --force
    ELSEWHERE = "elsewhere"
    RUNNING = "running"  # a live claim: a run holds it now
    PENDING = "pending"

    def __str__(self) -> str:
        return self.value

    @property
    def is_failure(self) -> bool:
        return self in (JobStatus.FAILED, JobStatus.INVALID, JobStatus.QUARANTINED)

    @property
    def is_settled(self) -> bool:
        """Nothing more happens to the job until its inputs, parameters or output change (or
        ``--force``): what packing a shard and helping shards wait for."""
        return self == JobStatus.DONE or self.is_failure


# How an attempt goes, line by line of the report a run writes: the statuses a job's next line
# may have after its last one (None: no line yet in this run). An attempt starts, then ends in
# one outcome; before a start a job may be found invalid or quarantined, or be interrupted
# (Ctrl-C before its turn). So no job is done, fails or is preempted at a checkpoint without a
# start, and no attempt ends twice. ``StateDir.record*`` consult this table and refuse a line
# it does not allow.
ENDED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.INVALID, JobStatus.PREEMPTED, JobStatus.INTERRUPTED,
         JobStatus.QUARANTINED)
TRANSITIONS: dict[JobStatus | None, tuple[JobStatus, ...]] = {
    None: (JobStatus.STARTED, JobStatus.INVALID, JobStatus.QUARANTINED, JobStatus.INTERRUPTED),
    JobStatus.STARTED: ENDED,
}
for _ended in ENDED:
    TRANSITIONS[_ended] = TRANSITIONS[None]


def allowed(previous: JobStatus | None, new: JobStatus) -> bool:
    """Whether a job's report line may say ``new`` after one that said ``previous``."""
    return new in TRANSITIONS[previous]


def default_state_dir(manifest: Path) -> Path:
    return manifest.parent / ".nstbatch" / manifest.name


# --- records -----------------------------------------------------------------------------------

def _from_dict(cls, data: dict):
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


# Keys every outcome line holds (None where empty); a 'started' line holds only the first four.
_LINE_KEYS = ("id", "where", "status", "shard", "output", "seconds", "steps", "error", "device")


@dataclass(frozen=True)
class ReportLine:
    """One line of ``report*.jsonl``: an attempt's start, or its outcome."""

    id: str | None
    status: JobStatus
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

    def to_json(self) -> dict:
        data = {key: value for key, value in asdict(self).items() if value is not None}
        if self.status != JobStatus.STARTED:
            data.update({key: getattr(self, key) for key in _LINE_KEYS})
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "ReportLine | None":
        """None for a line that is not one of ours (or a status this version does not know)."""
        try:
            return _from_dict(cls, {**data, "status": JobStatus(data["status"])})
        except (KeyError, ValueError, TypeError):
            return None


def write_history(path: Path, history, of_batch: int | None = None) -> Path:
    """Costs by step (``optimize.Progress`` records), atomically: CSV, or JSON for a ``.json``
    path; ``of_batch`` adds a column saying how many images the costs are the mean of."""
    if path.suffix.lower() == ".json":
        text = json.dumps([{"step": p.step, "content": p.content, "style": p.style, "tv": p.tv,
                            "total": p.total} for p in history], indent=1) + "\n"
    else:
        extra = ",of_batch" if of_batch is not None else ""
        text = f"step,content,style,tv,total{extra}\n" + "".join(
            f"{p.step},{p.content!r},{p.style!r},{p.tv!r},{p.total!r}"
            + (f",{of_batch}" if of_batch is not None else "") + "\n" for p in history)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))
    return path


@dataclass
class Outcome:
    """How one attempt at a job ended. Plain data (it crosses from worker processes)."""

    job: Job
    status: JobStatus
    seconds: float = 0.0
    error: str | None = None
    costs: dict | None = None  # the image's final costs: total, content, style, tv
    sources: tuple[str, ...] = ()  # where each style target came from: computed | cache | memory
    resumed_from: int | None = None  # the checkpoint step it resumed from
    device: str = ""
    note: str | None = None  # what happened on the way (a retry), for the report
    batch: int = 1  # how many images shared its optimisation pass
    checkpointing: bool = False  # ran with activation checkpointing: it fitted only so

    def report_line(self, shard_tag: str = "", owner: str | None = None) -> ReportLine:
        return ReportLine(
            self.job.id, self.status, self.job.where, shard_tag or None, time=time.time(),
            output=str(self.job.output), seconds=round(self.seconds, 3), steps=self.job.params.steps,
            error=self.error, device=self.device, costs=self.costs, note=self.note,
            style_targets=list(self.sources) or None, resumed_from_step=self.resumed_from,
            batch=self.batch if self.batch > 1 else None,
            activation_checkpointing=True if self.checkpointing else None, owner_shard=owner)


def busy_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """The length of the union of ``(start, end)`` spans: the time at least one job ran."""
    total, reach = 0.0, -float("inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def images_per_hour(done: int, spans: Iterable[tuple[float, float]]) -> float | None:
    """THE throughput figure of ``run``, ``status`` and ``report``: images done per hour of
    the time jobs ran (the union of the finished attempts' spans), so a run's start-up and the
    time between runs do not count, and workers running side by side do."""
    busy = busy_seconds(spans)
    return 3600.0 * done / busy if done and busy > 0 else None


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
    # Jobs a stop signal left unstarted (it came before their turn): like preempted ones,
    # they are the next run's, so the run asks to be requeued.
    unstarted: int = 0
    spans: list = field(default_factory=list, repr=False)  # (start, end) of each finished attempt

    @property
    def images_per_hour(self) -> float:
        return images_per_hour(self.done, self.spans) or 0.0

    @property
    def exit_code(self) -> int:
        if self.preempted or self.unstarted:
            return EXIT_PREEMPTED
        return 1 if self.failed or self.invalid or self.quarantined or self.copy_failed or self.pack_failed else 0

    def to_dict(self) -> dict:
        data = {**asdict(self), "images_per_hour": round(self.images_per_hour, 2)}
        del data["spans"]
        return data

    def add(self, outcome: Outcome, at: float | None = None) -> None:
        """Count an outcome; ``at``: when it was recorded (its report line's time, so that the
        run's throughput is the one ``status`` reads from those lines)."""
        counted = {JobStatus.DONE: "done", JobStatus.FAILED: "failed", JobStatus.PREEMPTED: "preempted",
                   JobStatus.ELSEWHERE: "elsewhere", JobStatus.QUARANTINED: "quarantined"}
        if outcome.status in counted:
            setattr(self, counted[outcome.status], getattr(self, counted[outcome.status]) + 1)
        if outcome.seconds and outcome.status != JobStatus.ELSEWHERE:
            end = time.time() if at is None else at  # a batch's outcomes: each image's share of the pass
            self.spans.append((end - round(outcome.seconds, 3) * outcome.batch, end))
        self.style_targets_computed += outcome.sources.count("computed")
        self.style_targets_reused += outcome.sources.count("cache")


@dataclass(frozen=True)
class Standing:
    """Where a job stands (``StateDir.standing``)."""

    status: JobStatus  # DONE, FAILED, INVALID, QUARANTINED, RUNNING, INTERRUPTED or PENDING
    # Why it would run (PENDING, INTERRUPTED: "new", "output missing", "resumes from its
    # checkpoint", ...), the error (FAILED, INVALID, QUARANTINED) or the holder (RUNNING).
    why: str | None = None
    hash: str | None = None  # its params hash; None when an input cannot be read
    done: DoneRecord | None = None  # DONE: its record


@dataclass
class StateDir:
    root: Path
    tag: str = ""  # a shard's tag ('s3of8'): its report and summary get files of their own
    _files: FileHashes | None = field(default=None, init=False, repr=False, compare=False)
    # latest()'s reading position in each report file, and each job's latest line so far
    _read_to: dict[Path, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _latest: dict[str, ReportLine] = field(default_factory=dict, init=False, repr=False, compare=False)
    _packed: dict[tuple, dict[str, str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    # each job's last line this instance wrote (a run's own), for TRANSITIONS
    _written: dict[str, JobStatus] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.root = Path(self.root)

    def job_hasher(self) -> JobHasher:
        """Params hashes whose file digests come from earlier runs' ``hashes*.jsonl`` while a
        file's size, times and inode are unchanged; ``save_hashes`` records the new ones."""
        if self._files is None:
            self._files = FileHashes(self.root, f"hashes-{self.tag}.jsonl" if self.tag else "hashes.jsonl")
        return JobHasher(self._files)

    def save_hashes(self) -> None:
        if self._files is None:
            return
        try:
            self._files.save()
        except OSError:
            pass  # a cache: a state directory that cannot be written fails at the first record, saying so

    # --- paths ---------------------------------------------------------------------------

    def job_file(self, folder: str, job_id: str, suffix: str) -> Path:
        """``<root>/<folder>/<job id, made safe for a file name><suffix>``. (Asked four times
        per job by ``standing``: ids that are safe already, the usual ones, skip the rewrite.)"""
        safe = job_id if _SAFE_ID.fullmatch(job_id) else "".join(
            c if c.isalnum() or c in "-_." else "_" for c in job_id)
        return self.root.joinpath(folder, safe + suffix)

    @property
    def report_path(self) -> Path:
        return self.root / (f"report-{self.tag}.jsonl" if self.tag else "report.jsonl")

    @property
    def summary_path(self) -> Path:
        return self.root / (f"summary-{self.tag}.json" if self.tag else "summary.json")

    def done_path(self, job_id: str) -> Path:
        return self.job_file("done", job_id, ".json")

    def history_path(self, job_id: str) -> Path:
        return self.job_file("history", job_id, ".csv")

    def checkpoint_path(self, job_id: str) -> Path:
        return self.job_file("checkpoints", job_id, ".pt")

    def claim_path(self, job_id: str) -> Path:
        return self.job_file("claims", job_id, ".lock")

    def kills_path(self, job_id: str) -> Path:
        return self.job_file("kills", job_id, ".json")

    def ensure(self) -> None:
        (self.root / "done").mkdir(parents=True, exist_ok=True)

    # --- files ---------------------------------------------------------------------------

    def _write_json(self, path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=1, sort_keys=True).encode()
        atomic_write(path, lambda f: f.write(text))

    def _read_json(self, path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # --- done records (written by the process that ran the job) ------------------------------

    def read_done(self, job_id: str) -> DoneRecord | None:
        data = self._read_json(self.done_path(job_id))
        try:
            return _from_dict(DoneRecord, data) if data else None
        except TypeError:  # not one of ours: as if not done
            return None

    def mark_done(self, job: Job, hash_: str, *, seconds: float, batch: int, costs: dict, device: str,
                  activation_checkpointing: bool) -> DoneRecord:
        record = DoneRecord(job.id, os.path.abspath(job.output), hash_, seconds, time.time(), batch, costs,
                            device, self.tag or None, activation_checkpointing)
        self._write_json(self.done_path(job.id), asdict(record))
        return record

    def write_history(self, job_id: str, history, of_batch: int = 1) -> Path:
        """A job's costs as CSV, one row per reported step. ``of_batch`` > 1: the job ran in a
        batch of that many images, and the costs are the batch's means."""
        return write_history(self.history_path(job_id), history, of_batch)

    # --- report lines and summaries (written by the run's parent process) ----------------------

    def write_summary(self, summary: RunSummary) -> None:
        self._write_json(self.summary_path, {**summary.to_dict(), "finished": time.time()})

    def record(self, outcome: Outcome, owner: str | None = None) -> ReportLine | None:
        """An attempt's outcome on record: its report line, returned (none for ELSEWHERE: the
        run that has the job writes it). ``owner``: the shard whose job a helping shard ran. A
        job done forgets the kills it caused."""
        if outcome.status == JobStatus.ELSEWHERE:
            return None
        self._transition(outcome.job.id, outcome.status)
        line = outcome.report_line(self.tag, owner)
        self.append_report(line)
        if outcome.status == JobStatus.DONE:
            self.forget_kills(outcome.job)
        return line

    def record_start(self, job: Job) -> None:
        """A 'started' line per attempt, so the report accounts for attempts a kill cut short."""
        self._transition(job.id, JobStatus.STARTED)
        self.append_report(ReportLine(job.id, JobStatus.STARTED, job.where, self.tag or None))

    def record_invalid(self, problem: Problem) -> None:
        """A row skipped by ``--skip-invalid``, with its reason."""
        if problem.job_id is not None:
            self._transition(problem.job_id, JobStatus.INVALID)
        self.append_report(ReportLine(problem.job_id, JobStatus.INVALID, problem.where, self.tag or None,
                                      error=problem.message))

    def _transition(self, job_id: str, status: JobStatus) -> None:
        previous = self._written.get(job_id)
        if not allowed(previous, status):
            raise RuntimeError(f"job {job_id}: a {status} line after {previous or 'none'} is not a transition"
                               f" the ledger allows (TRANSITIONS)")
        self._written[job_id] = status

    def append_report(self, line: ReportLine) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = line.to_json()
        data["time"] = line.time or time.time()
        text = (json.dumps(data, sort_keys=True) + "\n").encode()
        fd = os.open(self.report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text)  # one write of one line: appends never interleave mid-line
        finally:
            os.close(fd)

    def report_lines(self) -> Iterator[ReportLine]:
        """Every shard's report lines, each file in time order."""
        for path in sorted(self.root.glob("report*.jsonl")):
            try:
                with open(path, "rb") as f:
                    for raw in f:
                        line = _parse_line(raw)
                        if line is not None:
                            yield line
            except FileNotFoundError:
                continue

    def latest(self) -> dict[str, ReportLine]:
        """Each job's latest report line, of any shard. Helping shards ask every few seconds:
        each call reads only the lines appended since the last (a line still being written
        waits for the next call)."""
        for path in sorted(self.root.glob("report*.jsonl")):
            start = self._read_to.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            newest((_parse_line(raw) for raw in data[:end].splitlines()), self._latest)
            self._read_to[path] = start + end
        return self._latest

    # --- jobs that kill their worker (recorded by the parent) ---------------------------------

    def record_kill(self, job: Job, hash_: str, reason: str) -> str | None:
        """Count an attempt of this job (these exact params and inputs) that killed its worker;
        the quarantine reason once that makes it quarantined, else None."""
        record = self._read_json(self.kills_path(job.id)) or {}
        kills = record.get("kills", []) if record.get("params_hash") == hash_ else []
        kills.append({"time": time.time(), "reason": reason})
        self._write_json(self.kills_path(job.id), {"params_hash": hash_, "kills": kills})
        return self._quarantine_reason(job, hash_)

    def _quarantine_reason(self, job: Job, hash_: str) -> str | None:
        """Why the job is skipped for good, or None: it killed its worker twice with these
        params and inputs (another hash, and it may run again)."""
        record = self._read_json(self.kills_path(job.id))
        if not record or record.get("params_hash") != hash_:
            return None
        kills = record.get("kills", [])
        if len(kills) < KILLS_BEFORE_QUARANTINE:
            return None
        return (f"killed its worker {len(kills)} times (last: {kills[-1].get('reason')}); skipped until"
                " its parameters or inputs change, or --force")

    def forget_kills(self, job: Job) -> None:
        try:
            self.kills_path(job.id).unlink()
        except FileNotFoundError:
            pass

    # --- where a job stands: the one place that decides ----------------------------------------

    def _not_done(self, job: Job, hash_: str, record: DoneRecord | None) -> str | None:
        """None when the done record says the job is done; otherwise why it is not."""
        if record is None:
            return "new"
        if record.params_hash != hash_:
            return "parameters or inputs changed"
        if os.path.abspath(record.output) != os.path.abspath(job.output):
            return "output path changed"
        if not job.output.is_file() and not self._in_shard(job, hash_):
            return "output missing"
        return None

    # --- output shards: which samples a packed shard holds (written by the packer) -------------

    def packed_path(self, shard: Path) -> Path:
        name = hashlib.sha1(os.path.abspath(shard).encode()).hexdigest()[:16]
        return self.root / "packed" / f"{name}.json"

    def read_packed(self, shard: Path) -> dict[str, str]:
        """The samples ``shard`` holds as packed (job id -> params hash), while the shard is
        the one that was written (its size and mtime); {} for none."""
        try:
            stat = os.stat(shard)
        except OSError:
            return {}
        key = (os.path.abspath(shard), stat.st_size, stat.st_mtime_ns)
        if key not in self._packed:
            record = self._read_json(self.packed_path(shard)) or {}
            fits = [record.get("size"), record.get("mtime_ns")] == [stat.st_size, stat.st_mtime_ns]
            self._packed[key] = dict(record.get("members") or {}) if fits else {}
        return self._packed[key]

    def write_packed(self, shard: Path, members: dict[str, str]) -> None:
        stat = os.stat(shard)
        self._write_json(self.packed_path(shard), {"shard": os.path.abspath(shard), "size": stat.st_size,
                                                   "mtime_ns": stat.st_mtime_ns, "members": members})

    def _in_shard(self, job: Job, hash_: str) -> bool:
        """A sample of an output shard is there while it is staged or packed with this hash."""
        parts = shards.split(job.output)
        if parts is None:
            return False
        return shards.staged(job.output).is_file() or self.read_packed(parts[0]).get(job.id) == hash_

    def is_done(self, job: Job, hasher) -> bool:
        """Done: the one rule (``_not_done``: its done record, params hash, output path and
        output), for a caller without the hash at hand."""
        try:
            hash_ = hasher(job)
        except OSError:
            return False
        return self._not_done(job, hash_, self.read_done(job.id)) is None

    def done_since(self, job: Job, hash_: str, since: float | None = None) -> bool:
        """Done; with ``since``, also finished after that time (by another run, after a
        ``--force`` plan was made)."""
        record = self.read_done(job.id)
        return self._not_done(job, hash_, record) is None and (since is None or record.finished > since)

    def standing(self, job: Job, hasher, claim_stale: float = CLAIM_STALE,
                 latest: dict[str, ReportLine] | None = None) -> Standing:
        """Where ``job`` stands, first match wins: INVALID (an input cannot be read to hash
        it with ``hasher``), DONE (its done record matches its params, inputs and output,
        which exists), QUARANTINED (it killed its worker twice with these params), RUNNING
        (a *live* claim: a fresh heartbeat, and on this host a living process), FAILED or
        INVALID (its latest report line says so, of any shard), INTERRUPTED (an attempt was
        cut short: a checkpoint waits, or a start has no outcome, or a stop signal), else
        PENDING. Plan, helping shards, status and report all ask this. ``latest``: each job's
        latest report line (``latest()``), read once for a pass over many jobs; None reads it
        here."""
        try:
            hash_ = hasher(job)
        except OSError as e:
            last = (self.latest() if latest is None else latest).get(job.id)
            if last is not None and last.status == JobStatus.INVALID and last.error:
                return Standing(JobStatus.INVALID, last.error)  # what validation said, with the fix
            return Standing(JobStatus.INVALID, f"{e.filename or 'an input'}: cannot be read"
                                               f" ({e.strerror or e}); check the path")
        record = self.read_done(job.id)
        why = self._not_done(job, hash_, record)
        if why is None:
            return Standing(JobStatus.DONE, hash=hash_, done=record)
        if (reason := self._quarantine_reason(job, hash_)) is not None:
            return Standing(JobStatus.QUARANTINED, reason, hash_)
        last = (self.latest() if latest is None else latest).get(job.id)
        if (holder := live_holder_at(self.claim_path(job.id), claim_stale)) is not None:
            return Standing(JobStatus.RUNNING, f"claimed by {holder}", hash_)
        if last is not None and last.status in (JobStatus.FAILED, JobStatus.INVALID):
            return Standing(last.status, last.error, hash_)
        if self.checkpoint_path(job.id).is_file():
            return Standing(JobStatus.INTERRUPTED, "resumes from its checkpoint", hash_)
        if last is not None and last.status in (JobStatus.STARTED, JobStatus.PREEMPTED, JobStatus.INTERRUPTED):
            return Standing(JobStatus.INTERRUPTED, f"{why}; its last attempt was cut short", hash_)
        return Standing(JobStatus.PENDING, why, hash_)


def newest(lines: Iterable[ReportLine | None], into: dict[str, ReportLine] | None = None) -> dict[str, ReportLine]:
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


def _parse_line(raw: bytes) -> ReportLine | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None  # a line torn by a kill mid-write
    return ReportLine.from_json(data) if isinstance(data, dict) else None


def read_history(state: StateDir, job_id: str) -> list[tuple[int, float]]:
    try:
        with open(state.history_path(job_id), newline="") as f:
            return [(int(r["step"]), float(r["total"])) for r in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return []
