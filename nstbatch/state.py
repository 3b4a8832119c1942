"""The state directory: done records, the JSONL report of every attempt, the run summary.

Layout (default ``<manifest folder>/.nstbatch/<manifest name>/``, ``--state-dir`` to move it):

    done/<job id>.json     one per finished job: its output and params hash
    report.jsonl           one line per attempt: id, status, output, seconds, steps, costs, device, error
    summary.json           the last run's totals

Records are written to a temp file and ``os.replace``d; report lines are appended with one
``write`` each, and a reader skips a torn last line, so a kill at any moment leaves the state
readable. Nothing here is ever written among the outputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .images import atomic_write
from .manifest import Job
from .weights import sha256_of, split_weights_spec


def default_state_dir(manifest: Path) -> Path:
    return manifest.parent / ".nstbatch" / manifest.name


class FileHashes:
    """sha256 of input files, each read once per (path, size, mtime): rows share images."""

    def __init__(self):
        self._cache: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = sha256_of(path)
        return self._cache[key]


def params_hash(job: Job, hashes: FileHashes, weights_id: str) -> str:
    """What decides whether an existing output is done: the resolved parameters, the content
    of every input file, and the weights. Paths and row numbers do not count."""
    data = {
        "params": job.params.to_dict(),
        "content": hashes(job.content),
        "styles": [[hashes(path), weight] for path, weight in job.styles],
        "weights": weights_id,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def weights_identity(spec: str) -> str:
    """A cheap stand-in for ``Weights.id`` that needs no decoding: the spec, and for a file its
    content hash. Used in params hashes so checking done-ness never loads a network."""
    path, suffix = split_weights_spec(spec)
    return spec if path is None else f"file:{sha256_of(path)}:{suffix}"


@dataclass
class StateDir:
    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    @property
    def report_path(self) -> Path:
        return self.root / "report.jsonl"

    def done_path(self, job_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
        return self.root / "done" / f"{safe}.json"

    def ensure(self) -> None:
        (self.root / "done").mkdir(parents=True, exist_ok=True)

    def write_json(self, path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=1, sort_keys=True).encode()
        atomic_write(path, lambda f: f.write(text))

    def read_done(self, job_id: str) -> dict | None:
        try:
            return json.loads(self.done_path(job_id).read_text())
        except (OSError, ValueError):
            return None

    def mark_done(self, job: Job, hash_: str, record: dict) -> None:
        self.write_json(self.done_path(job.id), {**record, "id": job.id, "output": str(job.output),
                                                 "params_hash": hash_})

    def forget(self, job: Job) -> None:
        try:
            self.done_path(job.id).unlink()
        except FileNotFoundError:
            pass

    def append_report(self, record: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = (json.dumps({"time": time.time(), **record}, sort_keys=True) + "\n").encode()
        fd = os.open(self.report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one line: appends never interleave mid-line
        finally:
            os.close(fd)

    def report_lines(self) -> Iterator[dict]:
        try:
            with open(self.report_path, "rb") as f:
                for raw in f:
                    try:
                        yield json.loads(raw)
                    except ValueError:
                        continue  # a line torn by a kill mid-write
        except FileNotFoundError:
            return

    def is_done(self, job: Job, hash_: str) -> bool:
        record = self.read_done(job.id)
        return (record is not None and record.get("params_hash") == hash_
                and record.get("output") == str(job.output) and job.output.is_file())

    def why_run(self, job: Job, hash_: str) -> str | None:
        """None when the job is done; otherwise why it would run."""
        record = self.read_done(job.id)
        if record is None:
            return "new"
        if record.get("params_hash") != hash_:
            return "parameters or inputs changed"
        if record.get("output") != str(job.output):
            return "output path changed"
        if not job.output.is_file():
            return "output missing"
        return None
