"""The state directory: done records, the JSONL report of every attempt, the run summary.

Layout (default ``<manifest folder>/.nstbatch/<manifest name>/``, ``--state-dir`` to move it):

    done/<job id>.json     one per finished job: its output and params hash
    report.jsonl           a 'started' line per attempt, then its outcome: id, status, output,
                           seconds, steps, costs, device, error (report-s<i>of<n>.jsonl per shard)
    summary.json           the last run's totals
    history/<job id>.csv   each finished job's costs by step
    checkpoints/, claims/  jobs in progress; snapshots/ (save_every), thumbs/ (nstbatch report)

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
    of every input file, and the weights. Paths, row numbers and snapshots do not count."""
    params = job.params.to_dict()
    params.pop("save_every")  # snapshots along the way do not change the output
    if job.params.init_file:
        params["init"] = "file:" + hashes(Path(job.params.init_file))
    data = {
        "params": params,
        "content": hashes(job.content),
        "styles": [[hashes(path), weight] for path, weight in job.styles],
        "weights": weights_id,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


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


def weights_identity(spec: str) -> str:
    """A cheap stand-in for ``Weights.id`` that needs no decoding: the spec, and for a file its
    content hash. Used in params hashes so checking done-ness never loads a network."""
    path, suffix = split_weights_spec(spec)
    return spec if path is None else f"file:{sha256_of(path)}:{suffix}"


@dataclass
class StateDir:
    root: Path
    tag: str = ""  # a shard's tag ('s3of8'): its report gets a file of its own

    def __post_init__(self):
        self.root = Path(self.root)

    @property
    def report_path(self) -> Path:
        return self.root / (f"report-{self.tag}.jsonl" if self.tag else "report.jsonl")

    def history_path(self, job_id: str) -> Path:
        return self.job_file("history", job_id, ".csv")

    def write_history(self, job_id: str, history, of_batch: int = 1) -> Path:
        """A job's costs as CSV, one row per reported step. ``of_batch`` > 1: the job ran in a
        batch of that many images, and the costs are the batch's means."""
        return write_history(self.history_path(job_id), history, of_batch)

    def job_file(self, folder: str, job_id: str, suffix: str) -> Path:
        """``<root>/<folder>/<job id, made safe for a file name><suffix>``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
        return self.root / folder / f"{safe}{suffix}"

    def done_path(self, job_id: str) -> Path:
        return self.job_file("done", job_id, ".json")

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

    def append_report(self, record: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
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


# --- checkpoints of interrupted jobs -------------------------------------------------------

def checkpoint_path(state: StateDir, job: Job) -> Path:
    return state.job_file("checkpoints", job.id, ".pt")


def save_checkpoint(state: StateDir, job: Job, hash_: str, checkpoint) -> Path:
    """An ``optimize.Checkpoint`` as plain tensors, numbers and dicts (nothing to unpickle)."""
    import io

    import torch

    history = torch.tensor([[p.step, p.content, p.style, p.tv, p.total] for p in checkpoint.history],
                           dtype=torch.float64).reshape(-1, 5)
    entry = {"format": 1, "params_hash": hash_, "step": checkpoint.step, "image": checkpoint.image,
             "optimizer": checkpoint.optimizer, "history": history, "scale": checkpoint.scale}
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    path = checkpoint_path(state, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def load_checkpoint(state: StateDir, job: Job, hash_: str, steps: int):
    """The job's checkpoint if it belongs to these exact params and inputs, else None (a stale
    or unreadable one is deleted). Loaded with ``weights_only``: no arbitrary objects."""
    import torch

    from .optimize import Checkpoint, Progress

    path = checkpoint_path(state, job)
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if entry.get("format") != 1 or entry["params_hash"] != hash_:
            raise ValueError("stale")
        history = [Progress(int(row[0]), steps, *(float(v) for v in row[1:])) for row in entry["history"]]
        return Checkpoint(int(entry["step"]), entry["image"], entry["optimizer"], history,
                          float(entry["scale"]))
    except Exception:  # noqa: BLE001 - a bad checkpoint only costs a restart of its job
        discard_checkpoint(state, job)
        return None


def discard_checkpoint(state: StateDir, job: Job) -> None:
    try:
        checkpoint_path(state, job).unlink()
    except FileNotFoundError:
        pass


# --- claims: one worker per job, across processes and hosts -----------------------------

@dataclass
class Claim:
    path: Path
    heartbeat_every: float = 30.0
    _last: float = 0.0

    def heartbeat(self) -> None:
        """Refresh the claim's mtime (cheap; call it often, it writes at most every few s)."""
        now = time.time()
        if now - self._last >= self.heartbeat_every:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass
            self._last = now

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _dead_here(owner: str) -> bool:
    """A claim by a process of this host that no longer exists (killed -9, say) is stale at
    once; on other hosts only the heartbeat can tell."""
    import socket

    host, _, rest = owner.partition(":")
    pid = rest.split()[0] if rest.split() else ""
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim_job(state: StateDir, job: Job, stale_after: float = 300.0) -> Claim | str:
    """Take the job's lock file (host, pid, time), or say who holds it. A claim whose heartbeat
    is older than ``stale_after`` seconds belonged to a dead process and is broken."""
    import socket

    path = state.job_file("claims", job.id, ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                age = time.time() - path.stat().st_mtime
                owner = path.read_text().strip() or "?"
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if age < stale_after and not _dead_here(owner):
                return owner
            # Stale: move it aside under a unique name. Only one breaker's rename succeeds.
            try:
                os.rename(path, path.with_name(f"{path.name}.stale-{holder.replace(':', '-')}"))
                os.unlink(path.with_name(f"{path.name}.stale-{holder.replace(':', '-')}"))
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{holder} {time.time():.0f}\n")
        return Claim(path, _last=time.time())
    return "contended"
