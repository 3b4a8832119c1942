"""What the run's parent assembles from finished jobs: output shards and ``metadata.jsonl``.

**Output shards.** A job whose output is a member of a ``.tar`` (``io.webdataset``) writes its image
to the shard's staging folder (``out/.train-000000.tar.staging/``). Once every sample of the
shard is settled (done, failed, invalid or quarantined: ``StateDir.standing``), the process
that settled its last sample packs it: the done samples in manifest order, each as its image,
a ``<sample>.json`` provenance and the sidecars ``copy:`` names, written to a temp file beside
the shard and moved into place; then ``packed/<hash>.json`` in the state directory records the
samples it holds (job id -> params hash), which is what makes a packed sample done, and the
staged files are removed. A pack lock (``claims/pack-<hash>.lock``) keeps two runs of an array
from writing one shard at once; a run that finds it held leaves the shard to its holder, and
every run's last pass packs what is settled and not packed yet (a killed packer's shard, one
whose failed sample a rerun finished), so a kill at any moment and a rerun give whole shards
with each sample once. A repack takes the packed samples from the shard itself.

**metadata.jsonl.** Each dataset entry that writes a folder tree keeps a ``metadata.jsonl``
at its output root (the template's fixed folder): a line per done image with ``file_name``
(relative to the root), ``label`` (the content's first folder: its class), ``style``,
``content`` and ``variant`` — what ``datasets.load_dataset("imagefolder", data_dir=root)``
reads as columns. Rewritten atomically, under the same kind of lock, at the end of every run
(from the done records, so the last task of an array writes them all) and every
``METADATA_EVERY`` seconds during one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..io import webdataset
from ..io.dataset import Copy
from ..errors import NstbatchError
from ..fs import atomic_write, remove_stale_temps
from ..io.manifest import Job
from .claims import CLAIM_STALE, Claim, claim_at
from .ledger import JobState, LineStatus, StateDir

METADATA = "metadata.jsonl"
METADATA_EVERY = 300.0  # seconds between rewrites of metadata.jsonl during a run


@dataclass
class _Shard:
    path: Path
    jobs: list[Job]
    copies: list[Copy]
    settled: int = 0  # how many of its jobs, from the first, this run knows to be settled


@dataclass
class Assembled:
    """What a pass packed and wrote, and what it could not."""

    packed: int = 0
    samples: int = 0
    metadata: int = 0
    failures: list[str] = field(default_factory=list)


class Outputs:
    """The output shards and metadata files of a run's jobs. ``jobs``: the manifest's valid
    jobs (every shard's, not only this array task's); ``copies``: its sidecars."""

    def __init__(self, state: StateDir, jobs: list[Job], copies: list[Copy], claim_stale: float = CLAIM_STALE):
        self.state, self.claim_stale = state, claim_stale
        self.hasher = state.job_hasher()
        self.shards: dict[Path, _Shard] = {}
        self.trees: dict[str, list[Job]] = {}
        self.of_job: dict[str, Path] = {}
        for job in jobs:
            parts = webdataset.split(job.output)
            if parts is not None:
                shard = self.shards.setdefault(parts[0], _Shard(parts[0], [], []))
                shard.jobs.append(job)
                self.of_job[job.id] = parts[0]
            elif job.origin is not None:
                self.trees.setdefault(job.origin.root, []).append(job)
        for copy in copies:
            parts = webdataset.split(copy.target)
            if parts is not None and parts[0] in self.shards:
                self.shards[parts[0]].copies.append(copy)
        self.result = Assembled()
        self._metadata_at = time.monotonic()
        self._done: dict[str, set[str]] = {}  # per tree: the jobs with a metadata row

    def __bool__(self) -> bool:
        return bool(self.shards or self.trees)

    # --- when --------------------------------------------------------------------------------

    def finished(self, job: Job, status: LineStatus) -> None:
        """After a job's outcome is on record: pack its shard if that was its last sample;
        its metadata row."""
        self.recorded(job, status)
        shard = self.of_job.get(job.id)
        if shard is not None:
            self._pack_if_settled(self.shards[shard], resume=True)
        if self.trees and time.monotonic() - self._metadata_at > METADATA_EVERY:
            self.write_metadata()

    def finish(self) -> Assembled:
        """The run's last pass: every settled shard that is not packed as it stands, and the
        metadata files."""
        for shard in self.shards.values():
            self._pack_if_settled(shard, resume=False)
        self.write_metadata(rescan=True)
        return self.result

    # --- shards ------------------------------------------------------------------------------

    def _standings(self, jobs: list[Job]):
        latest = self.state.log.latest()
        return [self.state.standing(job, self.hasher, self.claim_stale, latest) for job in jobs]

    def _pack_if_settled(self, shard: _Shard, resume: bool) -> None:
        """Pack ``shard`` when all its samples are settled. ``resume``: count on the samples
        already known settled (each is asked about once while a run goes on)."""
        if not resume:
            shard.settled = 0
        latest = self.state.log.latest()
        while shard.settled < len(shard.jobs):
            standing = self.state.standing(shard.jobs[shard.settled], self.hasher, self.claim_stale, latest)
            if not standing.status.is_settled:
                return
            shard.settled += 1
        lock = claim_at(self.state.job_file("claims", "pack-" + _digest(shard.path), ".lock"), self.claim_stale)
        if not isinstance(lock, Claim):
            return  # another run packs it now
        try:
            self._pack(shard)
        except (OSError, NstbatchError) as e:  # a full disk; a packed sample's shard changed meanwhile
            self.result.failures.append(f"cannot write the shard {shard.path} ({getattr(e, 'strerror', None) or e});"
                                        " its staged samples wait for the next run")
        finally:
            lock.release()

    def _pack(self, shard: _Shard) -> None:
        standings = self._standings(shard.jobs)  # again, under the lock
        if not all(s.status.is_settled for s in standings):
            return
        done = [(job, s.hash) for job, s in zip(shard.jobs, standings) if s.status == JobState.DONE]
        members = {job.id: hash_ for job, hash_ in done}
        staged = [webdataset.staged(job.output) for job, _ in done]
        if members == self.state.packed.read(shard.path) and not any(p.is_file() for p in staged):
            return  # packed as it stands
        by_key = {}  # a sample's key, WebDataset's way (to the name's first dot: s1.mask.png is s1's)
        for copy in shard.copies:
            by_key.setdefault(_sample_key(webdataset.split(copy.target)[1]), []).append(copy)
        entries = []
        for (job, hash_), path in zip(done, staged):
            name = webdataset.split(job.output)[1]
            entries.append(webdataset.Entry(name, path if path.is_file() else job.output))
            stem = os.path.splitext(name)[0]
            entries.append(webdataset.Entry(stem + ".json", data=_provenance(job, hash_)))
            entries += [webdataset.Entry(webdataset.split(c.target)[1], c.source)
                        for c in by_key.get(_sample_key(name), [])]
        remove_stale_temps(shard.path)  # a packer killed while writing this shard
        webdataset.pack(shard.path, entries, mtime=time.time())
        self.state.packed.write(shard.path, members)
        self.result.packed += 1
        self.result.samples += len(done)
        remove_staged(shard.path, staged)

    # --- metadata.jsonl ----------------------------------------------------------------------

    def recorded(self, job: Job, status: LineStatus) -> None:
        """A job this run finished: a metadata row from now on."""
        if status == LineStatus.DONE and job.origin is not None and job.origin.root in self._done:
            self._done[job.origin.root].add(job.id)  # (before the first scan, the scan finds it)

    def write_metadata(self, rescan: bool = False) -> None:
        """Every tree's ``metadata.jsonl``: its done images (a done record for this output,
        and the file; read from the state directory the first time and with ``rescan``, to
        count other runs' images, else this run's own added)."""
        self._metadata_at = time.monotonic()
        for root, jobs in self.trees.items():
            if rescan or root not in self._done:
                self._done[root] = {job.id for job in jobs if self.state.is_done(job, self.hasher)}
            lock = claim_at(self.state.job_file("claims", "metadata-" + _digest(Path(root)), ".lock"),
                            self.claim_stale)
            if not isinstance(lock, Claim):
                continue
            try:
                done = self._done[root]
                rows = sorted((_metadata_row(job, root) for job in jobs if job.id in done), key=_by_file)
                data = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
                path = Path(root) / METADATA
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda f: f.write(data))
                self.result.metadata += 1
            except OSError as e:
                self.result.failures.append(f"cannot write {Path(root) / METADATA} ({e.strerror or e})")
            finally:
                lock.release()

def _digest(path: Path) -> str:
    return hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]


def _by_file(row: dict) -> str:
    return row["file_name"]


def _provenance(job: Job, hash_: str) -> bytes:
    """A sample's ``.json``: where it comes from and how it was made."""
    parts = webdataset.split(job.content)
    data = {"id": job.id, "content": str(job.content), "style": [str(p) for p, _ in job.styles],
            "style_weights": [w for _, w in job.styles], "seed": job.params.seed, "params_hash": hash_,
            "preset": job.params.preset}
    if parts is not None:
        data.update(content_shard=str(parts[0]), content_key=webdataset.split_key(parts[1])[0])
    if job.origin is not None:
        data.update(variant=job.origin.variant, style_label=job.origin.style)
    return (json.dumps(data, sort_keys=True) + "\n").encode()


def _metadata_row(job: Job, root: str) -> dict:
    origin = job.origin
    return {"file_name": os.path.relpath(job.output, root).replace(os.sep, "/"), "label": origin.label,
            "style": origin.style, "content": origin.relpath, "variant": origin.variant}


def remove_staged(shard: Path, staged: list[Path]) -> None:
    for path in staged:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    folder = webdataset.staging_folder(shard)
    for sub in sorted({p.parent for p in staged}, key=lambda p: -len(p.parts)):
        while sub != folder.parent and sub.is_relative_to(folder):
            try:
                sub.rmdir()
            except OSError:
                break  # not empty: another sample waits there
            sub = sub.parent


def _sample_key(name: str) -> str:
    """A member's sample key (``webdataset.split_key``; the name itself without a dot)."""
    parts = webdataset.split_key(name)
    return parts[0] if parts is not None else name
