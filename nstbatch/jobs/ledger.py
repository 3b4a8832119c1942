"""The ledger: a run's state directory, and the one place that decides where a job stands
(``StateDir.standing``). Its parts, by what they do: the typed records (``records``), the report
and summary (``runlog.RunLog``, ``state.log``), kill counts (``kills.Kills``,
``state.kills``) and the packed shards' index (``packed.PackedIndex``, ``state.packed``); the
state directory itself keeps the paths, the done records and the digest index.

Layout (default ``<manifest folder>/.nstbatch/<manifest name>/``, ``--state-dir`` to move it):

    done/<job id>.json     a ``DoneRecord`` per finished job: its output and params hash
    report.jsonl           a ``LogLine`` per attempt's start, then one for its outcome
                           (report-s<i>of<n>.jsonl per shard)
    summary.json           the last run's totals (summary-s<i>of<n>.json per shard)
    hashes.jsonl           sha256 of input files by path, size, mtime, ctime and inode, so a
                           restart stats its inputs instead of reading them (hashes-s<i>of<n>)
    history/<job id>.csv   each finished job's costs by step
    kills/<job id>.json    attempts that killed their worker (two: the job is quarantined)
    packed/<hash>.json     per output shard: the samples it holds (job id -> params hash)
    checkpoints/, claims/  jobs in progress; snapshots/ (save_every)
    frames/<job id>-<hash>/  a clip's frames as they are made, its shots (shots.json) and the
                           claims of the shots being stylized (``frames.FrameStore``)
    train/<network>-<key>.pt  a network's training in progress (``train.train_network``, the
                           training's own process); gone once its model and card are written

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
    frames/<id>-*/shot-*.lock     job      claims.claim_at (clip: a lock per shot)
    claims/pack-*, metadata-*     parent   claims.claim_at (outputs: a lock per shard or tree)
    report*.jsonl                 parent   RunLog.record, RunLog.start, RunLog.invalid
    kills/<id>.json               parent   Kills.add, Kills.forget
    summary*.json                 parent   RunLog.write_summary
    hashes*.jsonl                 parent   StateDir.save_hashes
    packed/<hash>.json            parent   PackedIndex.write

Records are written to a temp file and ``os.replace``d;
report lines are appended with one ``write`` each, and a reader skips a torn last line, so a
kill at any moment leaves the state readable. Nothing here is ever written among the
outputs, and nothing here imports torch: ``nstbatch status`` and ``report`` read a run in a
fraction of a second.
"""
from __future__ import annotations

import csv
import functools
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Mapping

from ..fs import atomic_write, read_json, write_json
from ..io import webdataset
from ..io.hashing import FileHashes, JobHasher
from ..io.manifest import Job
from .claims import CLAIM_STALE, live_holder_at
from .kills import KILLS_BEFORE_QUARANTINE, Kills
from .packed import PackedIndex
from .records import (EXIT_PREEMPTED, RATE_LABEL, TRANSITIONS, DoneRecord, JobState, LineStatus, Outcome,
                      LogLine, RunSummary, Standing, from_dict, allowed, images_per_hour, newest, rate_of,
                      recovered, safe_name)
from .runlog import RunLog

__all__ = ["EXIT_PREEMPTED", "KILLS_BEFORE_QUARANTINE", "RATE_LABEL", "STANDING_RULES", "TRANSITIONS", "DoneRecord",
           "JobState", "LineStatus",
           "Outcome", "LogLine", "RunSummary", "Standing", "StateDir", "allowed", "default_state_dir",
           "images_per_hour", "newest", "rate_of", "read_history", "recovered", "state_root", "write_history"]


def default_state_dir(manifest: Path) -> Path:
    return manifest.parent / ".nstbatch" / manifest.name


def state_root(manifest: Path, state_dir=None, overrides: dict[str, str] | None = None) -> Path:
    """The state directory of a run of ``manifest``: ``state_dir`` or the default; a trial's
    (``--set``) is ``trials/<values>/`` inside it, its records apart from the manifest's own."""
    from ..io.manifest import TRIALS, trial_name

    root = Path(state_dir) if state_dir else default_state_dir(Path(manifest))
    name = trial_name(overrides)
    return root / TRIALS / name if name else root


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


def _frames_there(job: Job) -> bool:
    """A clip's folder output is there while it holds frames. (A done record is written only
    after every frame was copied in; a user who later deletes some frames is not caught here.)"""
    return job.clip and job.output.is_dir() and any(job.output.glob("[0-9]*.png"))


class StateDir:
    """A run's state directory: paths, done records and the digest index; its report
    (``log``), kill counts (``kills``) and packed shards (``packed``); and ``standing``."""

    def __init__(self, root, tag: str = ""):
        self.root, self.tag = Path(root), tag  # tag: a shard's ('s3of8'): its report and summary are its own
        self.log = RunLog(self.root, tag)
        self.kills = Kills(self.root)
        self.packed = PackedIndex(self.root)
        self._files: FileHashes | None = None

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
        return self.root.joinpath(folder, safe_name(job_id) + suffix)

    def done_path(self, job_id: str) -> Path:
        return self.job_file("done", job_id, ".json")

    def history_path(self, job_id: str) -> Path:
        return self.job_file("history", job_id, ".csv")

    def checkpoint_path(self, job_id: str) -> Path:
        return self.job_file("checkpoints", job_id, ".pt")

    def frames_path(self, job_id: str, hash_: str) -> Path:
        """Where a clip job's frames are kept as they are made (``clip.FrameStore``)."""
        return self.job_file("frames", job_id, f"-{hash_[:16]}")

    def claim_path(self, job_id: str) -> Path:
        return self.job_file("claims", job_id, ".lock")

    def ensure(self) -> None:
        (self.root / "done").mkdir(parents=True, exist_ok=True)

    # --- done records (written by the process that ran the job) ------------------------------

    def read_done(self, job_id: str) -> DoneRecord | None:
        data = read_json(self.done_path(job_id))
        try:
            return from_dict(DoneRecord, data) if data else None
        except TypeError:  # not one of ours: as if not done
            return None

    def mark_done(self, job: Job, hash_: str, *, seconds: float, batch: int, costs: dict, device: str,
                  activation_checkpointing: bool, recoveries: int = 0) -> DoneRecord:
        record = DoneRecord(job.id, os.path.abspath(job.output), hash_, seconds, time.time(), batch, costs,
                            device, self.tag or None, activation_checkpointing, recoveries)
        write_json(self.done_path(job.id), asdict(record))
        return record

    def write_history(self, job_id: str, history, of_batch: int = 1) -> Path:
        """A job's costs as CSV, one row per reported step. ``of_batch`` > 1: the job ran in a
        batch of that many images, and the costs are the batch's means."""
        return write_history(self.history_path(job_id), history, of_batch)

    # --- where a job stands: the one place that decides ----------------------------------------

    def _not_done(self, job: Job, hash_: str, record: DoneRecord | None) -> str | None:
        """None when the done record says the job is done; otherwise why it is not."""
        if record is None:
            return "new"
        if record.params_hash != hash_:
            return "parameters or inputs changed"
        if os.path.abspath(record.output) != os.path.abspath(job.output):
            return "output path changed"
        if not job.output.is_file() and not self._in_shard(job, hash_) and not _frames_there(job):
            return "output missing"
        return None

    def _in_shard(self, job: Job, hash_: str) -> bool:
        """A sample of an output shard is there while it is staged or packed with this hash."""
        parts = webdataset.split(job.output)
        if parts is None:
            return False
        return webdataset.staged(job.output).is_file() or self.packed.read(parts[0]).get(job.id) == hash_

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
                 latest: dict[str, LogLine] | None = None, invalid: Mapping[str, str] | None = None) -> Standing:
        """Where ``job`` stands: INVALID where an input cannot be read to hash it with
        ``hasher``, else the first of ``STANDING_RULES`` that holds. Plan, helping shards,
        packing, status, report and the run itself all ask this. ``latest``: each job's latest
        report line (``log.latest()``), read once for a pass over many jobs; None reads it here.
        ``invalid``: what validating the manifest's files found, by job id (``status``)."""
        latest = self.log.latest() if latest is None else latest
        try:
            hash_ = hasher(job)
        except OSError as e:
            last = latest.get(job.id)
            if last is not None and last.status == LineStatus.INVALID and last.error:
                return Standing(JobState.INVALID, last.error)  # what validation said, with the fix
            return Standing(JobState.INVALID, f"{e.filename or 'an input'}: cannot be read"
                                              f" ({e.strerror or e}); check the path")
        facts = _Facts(self, job, hash_, claim_stale, latest.get(job.id), (invalid or {}).get(job.id))
        for state, rule in STANDING_RULES:
            why = rule(facts)
            if why is not None:
                return Standing(state, why or None, hash_, facts.record if state == JobState.DONE else None)
        raise AssertionError("PENDING always holds")


class _Facts:
    """What the standing rules read of one job, each read once, when a rule first asks."""

    def __init__(self, state: StateDir, job: Job, hash_: str, claim_stale: float, last: LogLine | None,
                 invalid: str | None):
        self.state, self.job, self.hash, self.claim_stale, self.last = state, job, hash_, claim_stale, last
        self.invalid = invalid  # what validating its files found, where it was asked

    @functools.cached_property
    def record(self) -> DoneRecord | None:
        return self.state.read_done(self.job.id)

    @functools.cached_property
    def not_done(self) -> str | None:
        """None when the done record says the job is done; otherwise why it is not."""
        return self.state._not_done(self.job, self.hash, self.record)

    def last_said(self, *statuses: LineStatus) -> bool:
        return self.last is not None and self.last.status in statuses


# Where a job stands, first match wins: (state, rule). A rule gives its reason (the why of
# ``Standing``; "" where there is none) when it holds, None when it does not. The one table that
# decides a job's state; ``StateDir.standing`` applies it.
STANDING_RULES: tuple[tuple[JobState, Callable[[_Facts], str | None]], ...] = (
    # its done record matches its params, inputs and output path, and the output exists
    (JobState.DONE, lambda f: "" if f.not_done is None else None),
    # validating its files found a problem (``status`` asks, with the manifest's validation)
    (JobState.INVALID, lambda f: f.invalid),
    # it killed its worker twice with these params
    (JobState.QUARANTINED, lambda f: f.state.kills.quarantine_reason(f.job, f.hash)),
    # a live claim: a fresh heartbeat, and on this host a living process
    (JobState.RUNNING, lambda f: (f"claimed by {holder}" if (holder := live_holder_at(
        f.state.claim_path(f.job.id), f.claim_stale)) is not None else None)),
    # its latest report line (of any shard) says so
    (JobState.FAILED, lambda f: (f.last.error or "") if f.last_said(LineStatus.FAILED) else None),
    (JobState.INVALID, lambda f: (f.last.error or "") if f.last_said(LineStatus.INVALID) else None),
    # an attempt was cut short: a checkpoint waits, or a start has no outcome, or a stop signal
    (JobState.INTERRUPTED, lambda f: "resumes from its checkpoint" if f.state.checkpoint_path(f.job.id).is_file()
     else f"{f.not_done}; its last attempt was cut short"
     if f.last_said(LineStatus.STARTED, LineStatus.PREEMPTED, LineStatus.INTERRUPTED) else None),
    (JobState.PENDING, lambda f: f.not_done),
)


def read_history(state: StateDir, job_id: str) -> list[tuple[int, float]]:
    try:
        with open(state.history_path(job_id), newline="") as f:
            return [(int(r["step"]), float(r["total"])) for r in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return []
