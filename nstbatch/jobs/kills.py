"""Jobs that kill their worker (``kills/<job id>.json``, written by the run's parent): two
attempts with the same params hash that ended in the worker's death quarantine the job until its
parameters or inputs change, or ``--force``."""
from __future__ import annotations

import time
from pathlib import Path

from ..fs import read_json, write_json
from ..io.manifest import Job
from .records import safe_name

KILLS_BEFORE_QUARANTINE = 2


class Kills:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, job_id: str) -> Path:
        return self.root / "kills" / (safe_name(job_id) + ".json")

    def add(self, job: Job, hash_: str, reason: str) -> str | None:
        """Count an attempt of this job (these exact params and inputs) that killed its worker;
        the quarantine reason once that makes it quarantined, else None."""
        record = read_json(self.path(job.id)) or {}
        kills = record.get("kills", []) if record.get("params_hash") == hash_ else []
        kills.append({"time": time.time(), "reason": reason})
        write_json(self.path(job.id), {"params_hash": hash_, "kills": kills})
        return self.quarantine_reason(job, hash_)

    def quarantine_reason(self, job: Job, hash_: str) -> str | None:
        """Why the job is skipped for good, or None: it killed its worker twice with these
        params and inputs (another hash, and it may run again)."""
        record = read_json(self.path(job.id))
        if not record or record.get("params_hash") != hash_:
            return None
        kills = record.get("kills", [])
        if len(kills) < KILLS_BEFORE_QUARANTINE:
            return None
        return (f"killed its worker {len(kills)} times (last: {kills[-1].get('reason')}); skipped until"
                " its parameters or inputs change, or --force")

    def forget(self, job: Job) -> None:
        """A job done forgets the kills it caused."""
        try:
            self.path(job.id).unlink()
        except FileNotFoundError:
            pass
