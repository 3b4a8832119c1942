"""A run's report: one line per attempt's start and one per its outcome, appended by the run's
parent (``report.jsonl``, ``report-s<i>of<n>.jsonl`` per shard), and the run's summary. Every
line written goes through ``records.TRANSITIONS``, checked against the job's last line in the
log, whichever process wrote it; readers take every shard's lines and skip a torn last one."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterator

from ..fs import write_json
from ..io.manifest import Job, Problem
from .records import LineStatus, Outcome, LogLine, RunSummary, allowed, newest, parse_line


class RunLog:
    """The report lines and summary of the state directory ``root`` (``tag``: a shard's, whose
    files are its own)."""

    def __init__(self, root: Path, tag: str = ""):
        self.root, self.tag = Path(root), tag
        self._written: dict[str, LineStatus] = {}  # each job's last line written here, for TRANSITIONS
        self._read_to: dict[Path, int] = {}  # latest()'s reading position in each report file
        self._latest: dict[str, LogLine] = {}  # ... and each job's latest line so far

    @property
    def path(self) -> Path:
        return self.root / (f"report-{self.tag}.jsonl" if self.tag else "report.jsonl")

    @property
    def summary_path(self) -> Path:
        return self.root / (f"summary-{self.tag}.json" if self.tag else "summary.json")

    # --- writing (the run's parent process) ---------------------------------------------------

    def write_summary(self, summary: RunSummary) -> None:
        write_json(self.summary_path, {**summary.to_dict(), "finished": time.time()})

    def record(self, outcome: Outcome, owner: str | None = None) -> LogLine | None:
        """An attempt's outcome on record: its report line, returned (none for ELSEWHERE: the
        run that has the job writes it). ``owner``: the shard whose job a helping shard ran."""
        if outcome.status == LineStatus.ELSEWHERE:
            return None
        self._transition(outcome.job.id, outcome.status)
        line = outcome.log_line(self.tag, owner)
        self.append(line)
        return line

    def start(self, job: Job) -> None:
        """A 'started' line per attempt, so the report accounts for attempts a kill cut short."""
        self._transition(job.id, LineStatus.STARTED)
        self.append(LogLine(job.id, LineStatus.STARTED, job.where, self.tag or None))

    def invalid(self, problem: Problem) -> None:
        """A row skipped by ``--skip-invalid``, with its reason."""
        if problem.job_id is not None:
            self._transition(problem.job_id, LineStatus.INVALID)
        self.append(LogLine(problem.job_id, LineStatus.INVALID, problem.where, self.tag or None,
                               error=problem.message))

    def _transition(self, job_id: str, status: LineStatus) -> None:
        """Refuse a line ``TRANSITIONS`` does not allow after the job's last line: this
        process's, else the last the log already holds, of any process and shard (a start an
        earlier process never answered was cut short: it reads as INTERRUPTED)."""
        previous = self._written.get(job_id)
        if previous is None and (held := self.latest().get(job_id)) is not None:
            previous = LineStatus.INTERRUPTED if held.status == LineStatus.STARTED else held.status
        if not allowed(previous, status):
            raise RuntimeError(f"job {job_id}: a {status} line after {previous or 'none'} is not a transition"
                               f" the ledger allows (TRANSITIONS)")
        self._written[job_id] = status

    def append(self, line: LogLine) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = line.to_json()
        data["time"] = line.time or time.time()
        text = (json.dumps(data, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text)  # one write of one line: appends never interleave mid-line
        finally:
            os.close(fd)

    # --- reading (anyone) -----------------------------------------------------------------------

    def lines(self) -> Iterator[LogLine]:
        """Every shard's report lines, each file in time order."""
        for path in sorted(self.root.glob("report*.jsonl")):
            try:
                with open(path, "rb") as f:
                    for raw in f:
                        line = parse_line(raw)
                        if line is not None:
                            yield line
            except FileNotFoundError:
                continue

    def latest(self) -> dict[str, LogLine]:
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
            newest((parse_line(raw) for raw in data[:end].splitlines()), self._latest)
            self._read_to[path] = start + end
        return self._latest
