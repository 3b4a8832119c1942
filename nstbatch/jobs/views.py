"""What the faces read of a run: every job of a manifest with where it stands (the ledger's
``StateDir.standing``), its time, costs and history, and the shards of an array. Torch-free:
``nstbatch status`` and ``report`` answer in a fraction of a second."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..io.manifest import Job, Problem, read_manifest
from .claims import CLAIM_STALE
from .frames import FrameStore
from .ledger import (RATE_LABEL, JobState, LineStatus, LogLine, Standing, StateDir, newest, rate_of, read_history,
                     recovered, state_root)


@dataclass
class JobView:
    job: Job
    status: JobState  # as StateDir.standing answers, or INVALID from validation
    error: str | None = None
    seconds: float | None = None
    costs: dict | None = None
    device: str | None = None
    shard: str | None = None  # the shard that ran it ('s1of3'), for a done job of an array
    attempts: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, total)
    frames: tuple[int, int] | None = None  # a clip not done yet: (frames made, frames), once its cuts are found
    note: str | None = None  # a done job's: what happened on the way (a retry, undone updates)

    def progress_line(self) -> str | None:
        """``clip c1 (m.yaml:3): 12 of 48 frame(s) made; running`` for a clip on its way."""
        if self.frames is None:
            return None
        made, count = self.frames
        passes = self.job.params.passes
        what = "frame(s)" if passes == 1 else f"frame passes ({count // passes} frames x {passes} passes)"
        return f"clip {self.job.id} ({self.job.where}): {made} of {count} {what} made; {self.status.value}"


@dataclass
class RunView:
    manifest: Path
    state: StateDir
    jobs: list[JobView]
    problems: list[Problem]  # rows that did not parse into jobs
    images_per_hour: float | None
    linked: bool = False  # set by the report: it refers to cached thumbnails instead of embedding

    def count(self, *statuses: JobState) -> int:
        return sum(v.status in statuses for v in self.jobs)

    def totals(self) -> list[tuple[str, int]]:
        """The run's story in the words ``run``'s last line uses: done, failed, invalid (jobs
        and rows that did not parse), quarantined where any, pending (running and interrupted
        among them, where any)."""
        rows = [("done", self.count(JobState.DONE)), ("failed", self.count(JobState.FAILED)),
                ("invalid", self.count(JobState.INVALID) + len(self.problems))]
        if quarantined := self.count(JobState.QUARANTINED):
            rows.append(("quarantined", quarantined))
        rows.append(("pending", self.count(JobState.PENDING, JobState.RUNNING, JobState.INTERRUPTED)))
        return rows

    def totals_text(self) -> str:
        """``done 2, failed 0, invalid 1, pending 3 (1 running); 960.0 images/hour of job time``."""
        among = ", ".join(f"{n} {word}" for word, n in (("running", self.count(JobState.RUNNING)),
                                                         ("interrupted", self.count(JobState.INTERRUPTED))) if n)
        return (", ".join(f"{word} {n}" for word, n in self.totals()) + (f" ({among})" if among else "")
                + (f"; {self.images_per_hour:.1f} {RATE_LABEL}" if self.images_per_hour else ""))

    def problem_lines(self) -> list[str]:
        """Every job that failed, was invalid or is quarantined, and every row that did not
        parse: ``INVALID c (jobs.csv:4): content: missing.png: no such file (check the path)``."""
        lines = [f"{v.status.value.upper()} {v.job.id} ({v.job.where}): {v.error}"
                 for v in self.jobs if v.status.is_failure]
        return lines + [f"INVALID ({p.where}): {p.message}" for p in self.problems]


def _view(job: Job, standing: Standing, lines: list[LogLine]) -> JobView:
    view = JobView(job, standing.status, attempts=sum(line.status == LineStatus.STARTED for line in lines))
    if standing.status != JobState.DONE:
        view.error = standing.why if standing.status.is_failure else None
        return view
    done = [line for line in lines if line.status == LineStatus.DONE]
    record = standing.done
    view.seconds = done[-1].seconds if done else record.seconds
    view.costs = done[-1].costs if done else record.costs
    view.device = done[-1].device if done else record.device
    view.shard = done[-1].shard if done else record.shard
    if done:
        view.note = "; ".join(said for said in (done[-1].note, recovered(done[-1].recoveries)) if said) or None
    elif record.recoveries:
        view.note = f"{record.recoveries} failed update(s) undone, the descent going on"
    return view


def status(manifest_path: str | os.PathLike, state_dir: str | os.PathLike | None = None,
           check_files: bool = True, histories: bool = True,
           claim_stale: float = CLAIM_STALE, overrides: dict[str, str] | None = None) -> RunView:
    """Where every job of the manifest stands (``StateDir.standing``, every shard's report;
    safe while runs write it); with ``check_files``, a job that is not done and fails
    validation is INVALID. ``histories`` also reads each job's cost history. ``overrides``:
    the run's ``--set`` parameters (the jobs' records are keyed by their parameters)."""
    from ..io.validate import validate

    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path, overrides)
    state = StateDir(state_root(manifest_path, state_dir, overrides))
    lines: dict[str | None, list[LogLine]] = {}
    every = list(state.log.lines())
    for line in every:
        lines.setdefault(line.id, []).append(line)
    invalid = ({p.job_id: p.message for p in validate(manifest, check_files=True) if p.job_id}
               if check_files else {})
    hasher, latest = state.job_hasher(), newest(every)  # the report, parsed once
    views = []
    for job in manifest.jobs:
        standing = state.standing(job, hasher, claim_stale, latest, invalid)
        view = _view(job, standing, lines.get(job.id, []))
        if job.clip and standing.hash and standing.status != JobState.DONE:
            store = FrameStore(state.frames_path(job.id, standing.hash))
            shots = store.shots()
            passes = job.params.passes
            view.frames = (store.made(passes), shots.frames * passes) if shots else None
        if histories:
            view.history = read_history(state, job.id)
        views.append(view)
    return RunView(manifest_path, state, views, manifest.problems, rate_of(every))


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
    from .shards import Shard

    ran = [Shard.from_tag(v.shard) for v in view.jobs if v.status == JobState.DONE]
    counts = {shard.count for shard in ran if shard}
    if len(counts) != 1:
        return []
    count = counts.pop()
    rows = [[0, 0, 0, 0] for _ in range(count)]
    for v in view.jobs:
        owner = Shard.owner(v.job.id, count)
        row = rows[owner.index]
        row[0] += 1
        if v.status == JobState.DONE:
            row[1 if v.shard == owner.tag else 2] += 1
        row[3] += v.status.is_failure
    return [ShardView(i, count, *row) for i, row in enumerate(rows)]
