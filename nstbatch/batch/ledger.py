"""The ledger: a run's state directory, and the one place that decides where a job stands.

Layout (default ``<manifest folder>/.nstbatch/<manifest name>/``, ``--state-dir`` to move it):

    done/<job id>.json     one per finished job: its output and params hash
    report.jsonl           a 'started' line per attempt, then its outcome: id, status, output,
                           seconds, steps, costs, device, error (report-s<i>of<n>.jsonl per shard)
    summary.json           the last run's totals (summary-s<i>of<n>.json per shard)
    hashes.jsonl           sha256 of input files by path, size, mtime, ctime and inode, so a
                           restart stats its inputs instead of reading them (hashes-s<i>of<n>)
    history/<job id>.csv   each finished job's costs by step
    kills/<job id>.json    attempts that killed their worker (two: the job is quarantined)
    checkpoints/, claims/  jobs in progress; snapshots/ (save_every), thumbs/ (nstbatch report)

Records are written to a temp file and ``os.replace``d; report lines are appended with one
``write`` each, and a reader skips a torn last line, so a kill at any moment leaves the state
readable. Nothing here is ever written among the outputs, and nothing here imports torch:
``nstbatch status`` and ``report`` read a run in a fraction of a second.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterator

from ..images import atomic_write
from ..manifest import Job, Problem, read_manifest
from ..hashing import FileHashes, JobHasher

KILLS_BEFORE_QUARANTINE = 2
# Exit code of a run stopped by a stop signal after checkpointing (BSD EX_TEMPFAIL): job
# scripts requeue on it.
EXIT_PREEMPTED = 75


class JobStatus(str, Enum):
    """Where a job stands. Report lines hold STARTED and the outcomes; RUNNING and PENDING are
    derived by ``status``; ELSEWHERE is an outcome that leaves no line (another run has it)."""

    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    INVALID = "invalid"
    PREEMPTED = "preempted"  # checkpointed on a stop signal; the next run resumes it
    INTERRUPTED = "interrupted"  # Ctrl-C
    QUARANTINED = "quarantined"  # killed its worker twice: skipped until it changes or --force
    ELSEWHERE = "elsewhere"
    RUNNING = "running"
    PENDING = "pending"

    def __str__(self) -> str:
        return self.value

    @property
    def is_failure(self) -> bool:
        return self in (JobStatus.FAILED, JobStatus.INVALID, JobStatus.QUARANTINED)


def default_state_dir(manifest: Path) -> Path:
    return manifest.parent / ".nstbatch" / manifest.name


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

    def report_line(self, shard_tag: str = "") -> dict:
        line = {"id": self.job.id, "where": self.job.where, "status": self.status,
                "output": str(self.job.output), "seconds": round(self.seconds, 3),
                "steps": self.job.params.steps, "error": self.error, "shard": shard_tag or None,
                "device": self.device}
        optional = {"costs": self.costs, "note": self.note, "style_targets": list(self.sources) or None,
                    "resumed_from_step": self.resumed_from, "batch": self.batch if self.batch > 1 else None,
                    "activation_checkpointing": True if self.checkpointing else None}
        return {**line, **{k: v for k, v in optional.items() if v is not None}}


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
    # Jobs a stop signal left unstarted (it came before their turn): like preempted ones,
    # they are the next run's, so the run asks to be requeued.
    unstarted: int = 0

    @property
    def images_per_hour(self) -> float:
        return 3600.0 * self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.preempted or self.unstarted:
            return EXIT_PREEMPTED
        return 1 if self.failed or self.invalid or self.quarantined or self.copy_failed else 0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_hour": round(self.images_per_hour, 2)}

    def add(self, outcome: Outcome) -> None:
        counted = {JobStatus.DONE: "done", JobStatus.FAILED: "failed", JobStatus.PREEMPTED: "preempted",
                   JobStatus.ELSEWHERE: "elsewhere", JobStatus.QUARANTINED: "quarantined"}
        if outcome.status in counted:
            setattr(self, counted[outcome.status], getattr(self, counted[outcome.status]) + 1)
        self.style_targets_computed += outcome.sources.count("computed")
        self.style_targets_reused += outcome.sources.count("cache")


@dataclass
class StateDir:
    root: Path
    tag: str = ""  # a shard's tag ('s3of8'): its report and summary get files of their own
    _files: FileHashes | None = field(default=None, init=False, repr=False, compare=False)
    # failed_ids' reading position in each report file, and each job's latest status so far
    _read_to: dict[Path, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _latest: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

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
        """``<root>/<folder>/<job id, made safe for a file name><suffix>``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
        return self.root / folder / f"{safe}{suffix}"

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

    # --- records -------------------------------------------------------------------------

    def write_json(self, path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=1, sort_keys=True).encode()
        atomic_write(path, lambda f: f.write(text))

    def _read_json(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def read_done(self, job_id: str) -> dict | None:
        return self._read_json(self.done_path(job_id))

    def mark_done(self, job: Job, hash_: str, record: dict) -> None:
        # The output's absolute path: the same job is done whether its manifest was named
        # relative to the working folder or not (status /abs/m.csv after run m.csv).
        self.write_json(self.done_path(job.id), {**record, "id": job.id, "output": os.path.abspath(job.output),
                                                 "params_hash": hash_})

    def write_history(self, job_id: str, history, of_batch: int = 1) -> Path:
        """A job's costs as CSV, one row per reported step. ``of_batch`` > 1: the job ran in a
        batch of that many images, and the costs are the batch's means."""
        return write_history(self.history_path(job_id), history, of_batch)

    def write_summary(self, summary: RunSummary) -> None:
        self.write_json(self.summary_path, {**summary.to_dict(), "finished": time.time()})

    def record(self, outcome: Outcome, owner: str | None = None) -> None:
        """An attempt's outcome on record: its report line (none for ELSEWHERE: the run that
        has the job writes it). ``owner``: the shard whose job a helping shard ran."""
        if outcome.status != JobStatus.ELSEWHERE:
            line = outcome.report_line(self.tag)
            self.append_report({**line, "owner_shard": owner} if owner else line)

    def failed_ids(self) -> set[str]:
        """Jobs whose latest report line, of any shard, is a failure (not since restarted).
        Helping shards ask every few seconds: each call reads only the lines appended since
        the last (a line still being written waits for the next call)."""
        for path in sorted(self.root.glob("report*.jsonl")):
            start = self._read_to.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            for raw in data[:end].splitlines():
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue  # a line torn by a kill mid-write
                self._latest[record.get("id")] = record.get("status")
            self._read_to[path] = start + end
        return {job_id for job_id, status in self._latest.items()
                if status in (JobStatus.FAILED, JobStatus.INVALID, JobStatus.QUARANTINED)}

    def record_start(self, job: Job) -> None:
        """A 'started' line per attempt, so the report accounts for attempts a kill cut short."""
        self.append_report({"id": job.id, "where": job.where, "status": JobStatus.STARTED,
                            "shard": self.tag or None})

    def append_report(self, record: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        record = {key: str(value) if isinstance(value, JobStatus) else value for key, value in record.items()}
        line = (json.dumps({"time": time.time(), **record}, sort_keys=True) + "\n").encode()
        fd = os.open(self.report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one line: appends never interleave mid-line
        finally:
            os.close(fd)

    def report_lines(self) -> Iterator[dict]:
        """Every shard's report lines, each file in time order."""
        for path in sorted(self.root.glob("report*.jsonl")):
            try:
                with open(path, "rb") as f:
                    for raw in f:
                        try:
                            yield json.loads(raw)
                        except ValueError:
                            continue  # a line torn by a kill mid-write
            except FileNotFoundError:
                continue

    # --- done, or why it runs ---------------------------------------------------------------

    def why_run(self, job: Job, hash_: str) -> str | None:
        """None when the job is done; otherwise why it would run."""
        record = self.read_done(job.id)
        if record is None:
            return "new"
        if record.get("params_hash") != hash_:
            return "parameters or inputs changed"
        if os.path.abspath(record.get("output") or "") != os.path.abspath(job.output):
            return "output path changed"
        if not job.output.is_file():
            return "output missing"
        return None

    def is_done(self, job: Job, hash_: str) -> bool:
        return self.why_run(job, hash_) is None

    # --- jobs that kill their worker ---------------------------------------------------------

    def record_kill(self, job: Job, hash_: str, reason: str) -> int:
        """Count an attempt of this job (these exact params and inputs) that killed its worker;
        the count so far."""
        record = self._read_json(self.kills_path(job.id)) or {}
        kills = record.get("kills", []) if record.get("params_hash") == hash_ else []
        kills.append({"time": time.time(), "reason": reason})
        self.write_json(self.kills_path(job.id), {"params_hash": hash_, "kills": kills})
        return len(kills)

    def quarantine_reason(self, job: Job, hash_: str) -> str | None:
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


# --- where every job of a manifest stands -----------------------------------------------------

@dataclass
class JobView:
    job: Job
    status: JobStatus  # DONE, FAILED, INVALID, QUARANTINED, RUNNING or PENDING
    error: str | None = None
    seconds: float | None = None
    costs: dict | None = None
    device: str | None = None
    shard: str | None = None  # the shard that ran it ('s1of3'), for a done job of an array
    attempts: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, total)


@dataclass
class RunView:
    manifest: Path
    state: StateDir
    jobs: list[JobView]
    problems: list[Problem]  # rows that did not parse into jobs
    images_per_hour: float | None
    linked: bool = False  # set by the report: it refers to cached thumbnails instead of embedding

    def count(self, *statuses: JobStatus) -> int:
        return sum(v.status in statuses for v in self.jobs)


def read_history(state: StateDir, job_id: str) -> list[tuple[int, float]]:
    try:
        with open(state.history_path(job_id), newline="") as f:
            return [(int(r["step"]), float(r["total"])) for r in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return []


def status(manifest_path: str | os.PathLike, state_dir: str | os.PathLike | None = None,
           check_files: bool = True, histories: bool = True) -> RunView:
    """Where every job of the manifest stands, from the state directory (every shard's
    report; safe while runs write it): done (its output is current), failed, invalid (the
    last attempt says so, or, with ``check_files``, validation does), quarantined, running
    (started, no outcome yet), or pending. ``histories`` also reads each job's cost history."""
    from ..validate import validate

    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    state = StateDir(Path(state_dir) if state_dir else default_state_dir(manifest_path))
    lines: dict[str, list[dict]] = {}
    first_start, last_done, done_lines = math.inf, -math.inf, 0
    for record in state.report_lines():
        lines.setdefault(record.get("id"), []).append(record)
        if record.get("status") == JobStatus.STARTED:
            first_start = min(first_start, record.get("time", math.inf))
        elif record.get("status") == JobStatus.DONE:
            last_done = max(last_done, record.get("time", -math.inf))
            first_start = min(first_start, record.get("time", math.inf) - record.get("seconds", 0))
            done_lines += 1
    invalid = ({p.job_id: p.message for p in validate(manifest, check_files=True) if p.job_id}
               if check_files else {})
    hasher = state.job_hasher()
    views = []
    for job in manifest.jobs:
        records = lines.get(job.id, [])
        view = JobView(job, JobStatus.PENDING, attempts=sum(r.get("status") == JobStatus.STARTED for r in records))
        views.append(view)
        try:
            hash_ = hasher(job)
        except OSError as e:
            view.status, view.error = JobStatus.INVALID, f"input unreadable ({e.strerror or e})"
            continue
        last = records[-1] if records else {}
        if state.is_done(job, hash_):
            done = [r for r in records if r.get("status") == JobStatus.DONE]
            record = done[-1] if done else (state.read_done(job.id) or {})
            view.status, view.seconds = JobStatus.DONE, record.get("seconds")
            view.costs, view.device = record.get("costs"), record.get("device")
            view.shard = record.get("shard")
        elif job.id in invalid:
            view.status, view.error = JobStatus.INVALID, invalid[job.id]
        elif (reason := state.quarantine_reason(job, hash_)) is not None:
            view.status, view.error = JobStatus.QUARANTINED, reason
        elif last.get("status") in (JobStatus.FAILED, JobStatus.INVALID):
            view.status, view.error = JobStatus(last["status"]), last.get("error")
        elif last.get("status") == JobStatus.STARTED and state.claim_path(job.id).exists():
            view.status = JobStatus.RUNNING  # (a started line without a claim: a killed run's)
        if histories:
            view.history = read_history(state, job.id)
    span = last_done - first_start
    rate = done_lines / span * 3600 if done_lines and span > 0 else None
    return RunView(manifest_path, state, views, manifest.problems, rate)


@dataclass(frozen=True)
class ShardView:
    index: int
    count: int
    jobs: int
    done_by_owner: int
    done_by_helpers: int
    failed: int


def shard_views(view: RunView) -> list[ShardView]:
    """Per shard of the array that ran the manifest (read from the done jobs' shard tags):
    its jobs, how many its own task finished and how many helping shards did. Empty when the
    manifest did not run as one array."""
    from ..environment import Shard

    ran = [Shard.from_tag(v.shard) for v in view.jobs if v.status == JobStatus.DONE]
    counts = {shard.count for shard in ran if shard}
    if len(counts) != 1:
        return []
    count = counts.pop()
    rows = [[0, 0, 0, 0] for _ in range(count)]
    for v in view.jobs:
        owner = Shard.owner(v.job.id, count)
        row = rows[owner.index]
        row[0] += 1
        if v.status == JobStatus.DONE:
            row[1 if v.shard == owner.tag else 2] += 1
        row[3] += v.status.is_failure
    return [ShardView(i, count, *row) for i, row in enumerate(rows)]
