"""Running jobs: from files to a written output, with provenance."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import __version__
from .api import stylize_with_history
from .config import StyleParams
from .devices import resolve_device
from .errors import InputError, NstbatchError, UsageError
from .images import check_output_path, load_image, probe_image, remove_stale_temps, save_image
from .manifest import Job, Manifest, Problem, read_manifest
from .onnx_backend import OnnxError
from .optimize import Progress, Result, build_features
from .precompute import StyleTargetStore
from .state import FileHashes, StateDir, default_state_dir, params_hash, weights_identity
from .validate import validate
from .vgg import VGGFeatures
from .weights import load_weights


StyleSpec = Sequence[tuple["str | os.PathLike", float]]


def _style_list(style) -> list[tuple[Path, float]]:
    """One style path, or a blend: a sequence of (path, weight)."""
    if isinstance(style, (str, os.PathLike)):
        return [(Path(style), 1.0)]
    return [(Path(path), float(weight)) for path, weight in style]


def provenance(params: StyleParams, result: Result, content: Path,
               styles: list[tuple[Path, float]]) -> dict:
    """What made an output, stored inside it (PNG text chunks)."""
    final = result.history[-1]
    return {
        "params": params.to_dict(),
        "weights": load_weights(params.weights).id,
        "content": content.name,
        "style": [[path.name, weight] for path, weight in styles] if len(styles) > 1 else styles[0][0].name,
        "final_cost": {"total": final.total, "content": final.content, "style": final.style,
                       "tv": final.tv},
        "version": {"nstbatch": __version__, "torch": torch.__version__},
    }


def check_job_files(content: Path, styles: list[tuple[Path, float]], output: Path) -> None:
    """Everything about the files that can be known without decoding or running anything."""
    probe_image(content)
    for style, _ in styles:
        probe_image(style)
    check_output_path(output)
    for source in [content] + [style for style, _ in styles]:
        if output.resolve() == source.resolve() or output.exists() and os.path.samefile(output, source):
            raise InputError(f"{output}: the output is also an input; it would be overwritten",
                             hint="choose another output path")


def stylize_file(content: str | os.PathLike, style: "str | os.PathLike | StyleSpec",
                 output: str | os.PathLike, params: StyleParams, *, device: str = "auto",
                 callback: Callable[[Progress], None] | None = None,
                 features: VGGFeatures | None = None,
                 style_targets: dict | None = None) -> Result:
    """Stylize ``content`` with ``style`` (a path, or a blend of (path, weight)) and write
    ``output`` atomically: on any failure, nothing is written. With ``style_targets``
    (precomputed), the style images are not decoded again."""
    content, output, styles = Path(content), Path(output), _style_list(style)
    check_job_files(content, styles, output)
    load_weights(params.weights)  # a weights problem shows before any decoding work
    style_images = (None if style_targets is not None
                    else [(load_image(path), weight) for path, weight in styles])
    image, result = stylize_with_history(load_image(content), style_images, params, device=device,
                                         callback=callback, features=features,
                                         style_targets=style_targets)
    save_image(image, output, provenance(params, result, content, styles))
    return result


class InvalidManifest(UsageError):
    """The manifest has problems and ``--skip-invalid`` was not given."""

    def __init__(self, manifest: Path, problems: list[Problem]):
        super().__init__(f"{manifest}: {len(problems)} problem(s); nothing was run",
                         hint="fix them (nstbatch validate lists them), or pass --skip-invalid")
        self.problems = problems


@dataclass
class Planned:
    job: Job
    reason: str | None  # why it runs; None when it is done already
    hash: str | None  # None when an input cannot be hashed (it will fail, with the reason)


@dataclass
class Outcome:
    job: Job
    status: str  # done | failed
    seconds: float
    error: str | None = None
    final: Progress | None = None


@dataclass
class RunSummary:
    total: int = 0
    done: int = 0
    skipped: int = 0  # already done before this run
    failed: int = 0
    invalid: int = 0
    seconds: float = 0.0
    style_targets_computed: int = 0
    style_targets_reused: int = 0  # from the cache (or memory) instead of computed

    @property
    def images_per_hour(self) -> float:
        return 3600.0 * self.done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_hour": round(self.images_per_hour, 2)}


class RunEvents:
    """What a face hears of a run (the engine's callback, and jobs starting and ending)."""

    def planned(self, to_run: list[Planned], skipped: int) -> None: ...
    def notice(self, message: str) -> None: ...
    def job_started(self, job: Job, index: int, count: int) -> None: ...
    def step(self, progress: Progress) -> None: ...
    def job_finished(self, outcome: Outcome, index: int, count: int) -> None: ...


def load_checked(manifest_path: Path, skip_invalid: bool) -> tuple[Manifest, list[Problem], list[Job]]:
    """Read and validate; the jobs that may run (all, or the valid ones with skip_invalid)."""
    manifest = read_manifest(manifest_path)
    problems = validate(manifest)
    if problems and not skip_invalid:
        raise InvalidManifest(manifest_path, problems)
    bad = {p.job_id for p in problems if p.job_id}
    return manifest, problems, [job for job in manifest.jobs if job.id not in bad]


def plan(jobs: list[Job], state: StateDir, force: bool = False) -> list[Planned]:
    hashes = FileHashes()
    weights_ids: dict[str, str] = {}
    planned = []
    for job in jobs:
        try:
            spec = job.params.weights
            weights_ids.setdefault(spec, weights_identity(spec))
            hash_ = params_hash(job, hashes, weights_ids[spec])
        except OSError as e:
            planned.append(Planned(job, f"input unreadable ({e.strerror or e})", None))
            continue
        reason = state.why_run(job, hash_)
        planned.append(Planned(job, "--force" if force and reason is None else reason, hash_))
    return planned


def _error_text(error: BaseException) -> str:
    if isinstance(error, NstbatchError):
        return str(error)
    if "out of memory" in str(error).lower():
        return f"out of memory: {str(error).splitlines()[0]} (use a smaller size or another device)"
    return f"{type(error).__name__}: {error}"


def run_manifest(manifest_path: str | os.PathLike, *, state_dir: str | os.PathLike | None = None,
                 device: str = "auto", force: bool = False, skip_invalid: bool = False,
                 dry_run: bool = False, events: RunEvents | None = None, targets: str = "onnx",
                 cache_dir: str | os.PathLike | None = None, providers: str = "auto",
                 allow_fallback: bool = False) -> tuple[RunSummary, list[Planned]]:
    """Run every job of a manifest that is not done. A failing job is recorded and the rest go
    on; the outputs are atomic, so an interrupted run leaves only whole files behind."""
    manifest_path = Path(manifest_path)
    events = events or RunEvents()
    _, problems, jobs = load_checked(manifest_path, skip_invalid)
    state = StateDir(Path(state_dir) if state_dir else default_state_dir(manifest_path))
    planned = plan(jobs, state, force)
    to_run = [p for p in planned if p.reason is not None]
    summary = RunSummary(total=len(jobs) + len({p.where for p in problems}),
                         skipped=len(planned) - len(to_run),
                         invalid=len({p.job_id or p.where for p in problems}))
    if dry_run:
        return summary, planned
    torch_device = resolve_device(device)
    store = StyleTargetStore(backend=targets, cache_dir=cache_dir, device=torch_device,
                             providers=providers, allow_fallback=allow_fallback, notice=events.notice)
    events.planned(to_run, summary.skipped)
    state.ensure()
    features: dict[tuple, VGGFeatures] = {}
    started = time.monotonic()
    for index, item in enumerate(to_run, start=1):
        job = item.job
        events.job_started(job, index, len(to_run))
        t0 = time.monotonic()
        sources: list[str] = []
        try:
            if item.hash is None:
                raise InputError(f"{job.where}: {item.reason}")
            remove_stale_temps(job.output)  # left by a run killed while saving this output
            key = (job.params.weights, job.params.pooling, job.params.feature_layers)
            if key not in features:
                features[key] = build_features(job.params, torch_device)
            style_targets, sources = store.for_job(job)
            result = stylize_file(job.content, job.styles, job.output, job.params,
                                  callback=events.step, features=features[key],
                                  style_targets=style_targets)
            final = result.history[-1]
            outcome = Outcome(job, "done", time.monotonic() - t0, final=final)
            state.mark_done(job, item.hash, {"seconds": outcome.seconds, "finished": time.time()})
        except OnnxError:
            raise  # the ONNX Runtime set-up is broken for every job, not this one
        except KeyboardInterrupt:
            state.append_report({"id": job.id, "status": "interrupted", "output": str(job.output),
                                 "seconds": time.monotonic() - t0, "device": str(torch_device)})
            raise
        except Exception as error:  # noqa: BLE001 - one job's failure never ends the batch
            outcome = Outcome(job, "failed", time.monotonic() - t0, error=_error_text(error))
        record = {"id": job.id, "where": job.where, "status": outcome.status,
                  "output": str(job.output), "seconds": round(outcome.seconds, 3),
                  "steps": job.params.steps, "device": str(torch_device), "error": outcome.error}
        if outcome.final is not None:
            record["costs"] = asdict(outcome.final)
        if sources:
            record["style_targets"] = sources  # computed | cache | memory, per style
        state.append_report(record)
        summary.done += outcome.status == "done"
        summary.failed += outcome.status == "failed"
        events.job_finished(outcome, index, len(to_run))
    summary.seconds = time.monotonic() - started
    summary.style_targets_computed, summary.style_targets_reused = store.computed, store.reused
    state.write_json(state.root / "summary.json", {**summary.to_dict(), "finished": time.time()})
    return summary, planned


@dataclass
class JobStatus:
    job: Job
    status: str  # done | failed | pending
    error: str | None = None


def job_statuses(manifest_path: str | os.PathLike, state_dir=None) -> tuple[list[JobStatus], list[Problem]]:
    """Where each job stands, from the state directory; safe while a run is writing it."""
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    state = StateDir(Path(state_dir) if state_dir else default_state_dir(manifest_path))
    last: dict[str, dict] = {}
    for record in state.report_lines():
        last[record.get("id")] = record
    statuses = []
    for item in plan(manifest.jobs, state):
        if item.reason is None:
            statuses.append(JobStatus(item.job, "done"))
        elif last.get(item.job.id, {}).get("status") == "failed":
            statuses.append(JobStatus(item.job, "failed", last[item.job.id].get("error")))
        else:
            statuses.append(JobStatus(item.job, "pending"))
    return statuses, manifest.problems
