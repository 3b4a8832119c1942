"""Planning a run, before any GPU time: read and validate the manifest, take this shard's
jobs, decide which are done (and why the others run), and group what can share an
optimisation pass into batches. Reads image headers only; no torch."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import StyleParams
from ..io.dataset import Copy
from .shards import WHOLE, Shard, shard_of
from ..errors import NstbatchError, UsageError
from ..geometry import long_side_size, output_size
from ..io.images import probe_image
from ..io.video import probe_clip
from ..io.manifest import Job, Manifest, Problem, read_manifest
from ..io.validate import validate
from .ledger import JobState, Standing, StateDir
from .memory import Estimate, estimate


class InvalidManifest(UsageError):
    """The manifest has problems and ``--skip-invalid`` was not given."""

    def __init__(self, manifest: Path, problems: list[Problem]):
        super().__init__(f"{manifest}: {len(problems)} problem(s); nothing was run",
                         hint="fix them (nstbatch validate lists them), or pass --skip-invalid")
        self.problems = problems


@dataclass
class Planned:
    job: Job
    standing: Standing  # where it stood when planned
    force: bool = False  # rerun although done or quarantined (--force)...
    planned_at: float = 0.0  # ...but not when another run (a helping shard) finished it since
    join: bool = False  # a clip another run owns: stylize the shots nobody holds (``clip.clip_job``)

    @property
    def hash(self) -> str | None:
        """None when an input cannot be hashed (it will fail, with the reason)."""
        return self.standing.hash

    @property
    def runs(self) -> bool:
        return self.force or self.standing.status not in (JobState.DONE, JobState.QUARANTINED)

    @property
    def why(self) -> str:
        """What a dry run says of it."""
        status, why = self.standing.status, self.standing.why
        if self.force:
            return "run   (--force)"
        if status in (JobState.DONE, JobState.QUARANTINED):
            return f"skip  ({status})"
        if status == JobState.RUNNING:
            return f"held  ({why})"
        if status.is_failure:
            return f"run   (retry: it {'failed' if status == JobState.FAILED else 'was invalid'} last time)"
        return f"run   ({why})"


@dataclass
class Plan:
    manifest: Manifest
    problems: list[Problem]  # this shard's (file-level ones go to shard 0)
    jobs: list[Planned]  # this shard's valid jobs
    copies: list[Copy] = field(default_factory=list)  # this shard's valid sidecar files
    # The other shards' valid jobs, in the order this shard walks them when it helps.
    others: list[Job] = field(default_factory=list)
    # Every shard's valid jobs and sidecars: what output shards and metadata files hold.
    valid: list[Job] = field(default_factory=list)
    valid_copies: list[Copy] = field(default_factory=list)

    @property
    def to_run(self) -> list[Planned]:
        return [p for p in self.jobs if p.runs]

    @property
    def done(self) -> int:
        return sum(p.standing.status == JobState.DONE and not p.force for p in self.jobs)

    @property
    def quarantined(self) -> list[Planned]:
        return [p for p in self.jobs if p.standing.status == JobState.QUARANTINED and not p.force]


def plan_run(manifest_path: str | os.PathLike, state: StateDir, *, shard: Shard = WHOLE,
             force: bool = False, skip_invalid: bool = False, overrides: dict[str, str] | None = None) -> Plan:
    """Read (with ``--set``'s ``overrides``), validate (refusing an invalid manifest unless
    ``skip_invalid``), take the shard, and plan each job."""
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path, overrides)
    problems = validate(manifest)
    if problems and not skip_invalid:
        raise InvalidManifest(manifest_path, problems)
    bad = {p.job_id for p in problems if p.job_id}
    refused = {p.where for p in problems if not p.job_id}  # (a sidecar's own problem names it)
    valid_copies = [c for c in manifest.copies if c.where not in refused]
    jobs = [job for job in manifest.jobs if job.id not in bad and shard.owns(job.id)]
    # Each shard speaks for its own jobs; problems of the file itself go to shard 0.
    problems = [p for p in problems if (shard.owns(p.job_id) if p.job_id else shard.index == 0)]
    copies = [c for c in valid_copies if shard.owns(c.key)]
    valid = [job for job in manifest.jobs if job.id not in bad]
    return Plan(manifest, problems, plan_jobs(jobs, state, force), copies, helping_order(valid, shard), valid,
                valid_copies)


def helping_order(jobs: list[Job], shard: Shard) -> list[Job]:
    """The other shards' jobs in the order shard ``i`` of ``n`` offers to help with them: the
    shards after it first (i+1, i+2, … mod n), so that helpers spread over different shards,
    and each shard's jobs from its last, since its owner works from its first."""
    if shard.count == 1:
        return []
    owned: list[list[Job]] = [[] for _ in range(shard.count)]
    for job in jobs:
        owned[shard_of(job.id, shard.count)].append(job)
    return [job for k in range(1, shard.count)
            for job in reversed(owned[(shard.index + k) % shard.count])]


def plan_jobs(jobs: list[Job], state: StateDir, force: bool = False) -> list[Planned]:
    hasher, latest, now = state.job_hasher(), state.log.latest(), time.time()
    return [Planned(job, state.standing(job, hasher, latest=latest), force=force, planned_at=now) for job in jobs]


def probe_content(job: Job):
    """The content's header: an image's (``ImageInfo``), or a clip's (``ClipInfo``: its frames)."""
    return probe_clip(job.content) if job.clip else probe_image(job.content)


def content_size(job: Job) -> tuple[int, int] | None:
    """The output's (height, width), from the content image's header (a clip's: its frames');
    None if unreadable."""
    try:
        info = probe_content(job)
    except NstbatchError:
        return None
    width, height = output_size(info.width, info.height, *job.params.geometry)
    return height, width


def output_side(job: Job) -> int | None:
    """The long side of the job's output (what its style images are sized by,
    ``StyleParams.style_side``), from the content's header; None if unreadable."""
    size = content_size(job)
    return max(size) if size else None


def style_pixels(job: Job, output_long_side: int | None = None) -> int:
    """The largest of the job's style images at their size, in pixels (headers only; 0 for one
    that cannot be read: validation reports it). ``output_long_side``: the output's long side
    where the caller knows it (else the content's header is read for it)."""
    side = output_long_side if output_long_side is not None else output_side(job)
    largest, side = 0, job.params.style_side(side)
    for path, _ in job.styles:
        try:
            info = probe_image(path)
        except NstbatchError:
            continue
        width, height = long_side_size(info.width, info.height, side)
        largest = max(largest, width * height)
    return largest


def distinct_targets(jobs: list[Job]) -> list[tuple[Path, StyleParams, Path, int | None]]:
    """One (style, params, content, output side) per distinct style target the jobs need, in
    first-use order (the content matters only to ``preserve_color: histogram``)."""
    seen: dict[tuple, tuple[Path, StyleParams, Path, int | None]] = {}
    for job in jobs:
        if not job.params.style_layers:
            continue
        p, side = job.params, output_side(job)
        for style, weight in job.styles:
            key = (str(style), p.style_side(side), p.weights, p.pooling, p.style_layers, p.preserve_color,
                   str(job.content) if p.preserve_color == "histogram" else "")
            if weight and key not in seen:
                seen[key] = (style, p, job.content, side)
    return list(seen.values())


def batches(to_run: list[Planned], size: int, state: StateDir) -> list[list[Planned]]:
    """The run's tasks, in manifest order: batches of up to ``size`` Adam jobs that share
    parameters and output size, whatever their styles (each image has its own Gram targets),
    and single jobs (batches of one). Sizes are bucketed exactly: jobs of one output shape,
    wherever they are in the manifest, fill a batch together (a dataset at ``crop: center`` is
    one shape). A job with a checkpoint resumes alone. L-BFGS is never batched (its line
    search couples the images), nor ``preserve_color: histogram``, whose style targets depend
    on each job's content. Clips batch with clips alone (frame t of each in one pass, their
    frames in order), and a share of a clip another owns (``join``) runs alone. Jobs with
    regions batch with jobs of as many regions (each image its own masks and paintings,
    ``Regions.stack``); a clip with masks runs alone. Jobs through one
    trained network (``network:``, not refined) batch by output size alone: one pass of the
    network, each image its own painting's row."""
    if size <= 1:
        return [[item] for item in to_run]
    groups: dict[tuple, list[Planned]] = {}
    order: list[list[Planned]] = []
    for item in to_run:
        job, key = item.job, None
        if item.hash is not None and job.network is not None and not job.refine_steps and not job.clip:
            shape = content_size(job)  # a network's pass: any of its paintings, whatever the optimiser
            key = ("network", str(job.network), shape) if shape else None
        elif (item.hash is not None and job.params.optimizer == "adam" and job.params.preserve_color != "histogram"
                and not item.join and not state.checkpoint_path(job.id).exists()):
            shape = content_size(job)
            key = (job.clip, job.params.to_json(), shape, region_count(job)) if shape else None
            key = None if job.clip and job.regions is not None else key  # a clip's masks: frame by frame, its own
        if key is None:
            order.append([item])
        elif key in groups and len(groups[key]) < size:
            groups[key].append(item)
        else:
            groups[key] = [item]
            order.append(groups[key])
    return order


@dataclass(frozen=True)
class ShardLoad:
    index: int
    jobs: int
    megapixel_steps: float
    peak: Estimate | None  # the largest job's memory; None when no image could be read


def plan_shards(manifest_path: str | os.PathLike, count: int, batch: int = 1,
                overrides: dict[str, str] | None = None) -> list[ShardLoad]:
    """Per shard: its jobs, their work (megapixel-steps) and the peak memory of its largest
    job (of ``batch`` such jobs together)."""
    if count < 1:
        raise UsageError("--shards must be at least 1")
    manifest = read_manifest(manifest_path, overrides)
    sizes: dict[Path, tuple[int, int, int] | None] = {}  # width, height, frames
    work = [[0, 0.0, None] for _ in range(count)]
    for job in manifest.jobs:
        if job.content not in sizes:
            try:
                info = probe_content(job)
                sizes[job.content] = (info.width, info.height, getattr(info, "frames", 1))
            except NstbatchError:
                sizes[job.content] = None  # validate reports it; the plan just counts
        row = work[shard_of(job.id, count)]
        row[0] += 1
        if sizes[job.content]:
            width, height = output_size(*sizes[job.content][:2], *job.params.geometry)
            row[1] += width * height * _steps(job, sizes[job.content][2]) / 1e6
            side = int(job.params.tile) if job.params.tile.isdigit() else None  # a side the user chose: its tiles
            peak = estimate(job.params, height, width, batch, style_pixels=style_pixels(job, max(width, height)),
                            tile=side)
            if row[2] is None or peak.bytes > row[2].bytes:
                row[2] = peak
    return [ShardLoad(i, jobs, mps, peak) for i, (jobs, mps, peak) in enumerate(work)]


def region_count(job: Job) -> int:
    """A job's regions (0: none; a keep mask alone: one, the whole picture's painting): the
    jobs of a batch have as many each (``Regions.stack``)."""
    if job.regions is None:
        return 0
    return len(job.styles) if job.regions.masks or job.regions.labels else 1


def _steps(job: Job, frames: int) -> int:
    """A job's steps: an image's, or a clip's over its frames (each after the first in
    ``frame_steps``, and each frame again in each pass after the first; shots cut short by scene
    cuts take the full steps, unknown here)."""
    params = job.params
    later = params.frame_steps or params.steps
    return params.steps + (frames - 1) * later + frames * (params.passes - 1) * later if job.clip else params.steps


# What a worker holds before its first job: the interpreter, torch, the network (measured on
# the CPU, benchmarks/RESULTS.md: 0.9 GiB).
WORKER_BASELINE = 2**30


def memory_warnings(manifest: Manifest, skip: set[str | None] = frozenset()) -> list[str]:
    """Jobs that would not fit this machine's memory (RAM, within its cgroup and limits) even
    with activation checkpointing, or fit only with it: warnings, not errors (a GPU, or another
    node of the cluster, may have more). Image headers only."""
    from ..environment import cpu_memory_limit
    from .memory import plan_memory

    limit = cpu_memory_limit()
    if limit is None:
        return []
    room = limit.bytes - WORKER_BASELINE
    warnings, seen = [], set()
    for job in manifest.jobs:
        shape = None if job.id in skip else content_size(job)
        if shape is None or (job.params.to_json(), shape) in seen:
            continue
        seen.add((job.params.to_json(), shape))
        styles = style_pixels(job, max(shape))
        fit = plan_memory(job.params, *shape, room, style_pixels=styles)
        need = estimate(job.params, *shape, checkpointing=fit is None or fit.checkpointing, style_pixels=styles)
        where = f"{job.where}: job {job.id} ({shape[1]}x{shape[0]} px) needs about {need}"
        if fit is None:
            warnings.append(f"{where}, too much for this machine's {room / 2**30:.1f} GiB ({limit.source},"
                            " less a worker's 1 GiB): it will fail here; use a smaller size or a"
                            " machine with more memory")
        elif fit.checkpointing:
            warnings.append(f"{where}: it fits here only so, which is slower")
    return warnings
