"""Running planned jobs: one path for 1..N jobs sharing one optimisation pass (a single job is
a batch of one). Around each pass, one attempt: claim the jobs, check the memory it needs,
resume a checkpoint, stylize with checkpoints and snapshots, write the outputs, the cost
histories and the done records, and turn every failure into an ``Outcome`` of its own job.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch

from ..engine.devices import is_out_of_memory, memory_available, report_every, resolve_device
from ..errors import NstbatchError, OptimizationError
from ..fs import remove_stale_temps
from ..io.images import save_image
from ..styles.onnx_backend import OnnxError
from ..engine.optimize import Checkpoint, Progress, Result
from ..engine.vgg import build_features
from ..engine.pixels import to_pil
from ..io.webdataset import staged
from ..io.video import ClipInfo
from ..styles.store import StyleTargetStore
from ..engine.targets import StyleTarget
from ..engine.vgg import VGGFeatures
from .checkpoints import discard_checkpoint, load_checkpoint, save_checkpoint, slice_checkpoint
from .claims import Claim, claim_at
from .ledger import JobStatus, Outcome, StateDir
from .memory import Estimate, estimate, plan_memory
from .options import RunOptions
from .plan import Planned, style_pixels
from .clip import ClipCall, ClipResult, clip_inputs, clip_job, stylize_clips, write_clip
from .frames import FrameStore
from .single import (Hooks, Preempted, check_job_files, engine_memory, load_content, optimize_job, provenance,
                     save_output)

# A job whose cost turns NaN or infinite is retried once with its learning rate times this.
RETRY_LR_FACTOR = 0.1


def error_text(error: BaseException) -> str:
    if isinstance(error, NstbatchError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename or ''}: {error.strerror}".lstrip(": ")
    if is_out_of_memory(error):
        return f"out of memory: {str(error).splitlines()[0]} (use a smaller size or another device)"
    return f"{type(error).__name__}: {error}"


def _costs(progress: Progress) -> dict:
    return {"step": progress.step, "steps": progress.steps, "content": progress.content,
            "style": progress.style, "tv": progress.tv, "total": progress.total}


@dataclass
class _Clip:
    item: Planned
    info: ClipInfo
    size: tuple[int, int]  # its frames' (height, width)
    targets: StyleTarget
    frames: FrameStore
    done: ClipResult


@dataclass
class _Loaded:
    item: Planned
    content: torch.Tensor  # (1, 3, H, W) at the job's size


class JobExecutor:
    """Runs batches of planned jobs on one device, with the network built once per weights,
    pooling and layers. ``should_stop`` is asked between steps (a stop signal); ``peers``
    executors share the device's memory (CPU workers of one machine), each planning its jobs
    into its share."""

    def __init__(self, options: RunOptions, state_root, device: str, *,
                 notice: Callable[[str], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False, peers: int = 1):
        self.options = options
        self.state = StateDir(state_root, options.shard.tag)
        self.device = resolve_device(device)
        self.store = StyleTargetStore(backend=options.targets, cache_dir=options.cache_dir,
                                      device=self.device, providers=options.providers,
                                      allow_fallback=options.allow_fallback, notice=notice)
        self.should_stop, self.notice = should_stop, notice
        self.report_every = report_every(self.device)
        self.peers = max(1, peers)
        self.features: dict[tuple, VGGFeatures] = {}

    def _features(self, params) -> VGGFeatures:
        key = (params.weights, params.pooling, params.feature_layers)
        if key not in self.features:
            self.features[key] = build_features(params, self.device)
            if self.options.compile:
                self.features[key].compile_trunk()
        return self.features[key]

    # --- the attempt around a pass -----------------------------------------------------------

    @contextmanager
    def _claimed(self, batch: list[Planned], outcomes: list[Outcome]) -> Iterator[dict[str, Claim]]:
        """Claim each job; one that another run holds or has finished becomes an ELSEWHERE
        outcome. Every claim is released on the way out, whatever happens."""
        claims: dict[str, Claim] = {}
        try:
            for item in batch:
                if item.hash is None:
                    outcomes.append(self._outcome(item, JobStatus.FAILED,
                                                  error=f"{item.job.where}: {item.standing.why}"))
                    continue
                claim = claim_at(self.state.claim_path(item.job.id), self.options.claim_stale)
                if isinstance(claim, str):
                    outcomes.append(self._outcome(item, JobStatus.ELSEWHERE, error=f"claimed by {claim}"))
                elif self.state.done_since(item.job, item.hash, item.planned_at if item.force else None):
                    claim.release()
                    outcomes.append(self._outcome(item, JobStatus.ELSEWHERE, error="finished by another run"))
                else:
                    claims[item.job.id] = claim
            yield claims
        finally:
            for claim in claims.values():
                claim.release()

    def _outcome(self, item: Planned, status: JobStatus, **fields) -> Outcome:
        return Outcome(item.job, status, device=str(self.device), **fields)

    def _load(self, items: list[Planned], outcomes: list[Outcome]) -> list[_Loaded]:
        loaded = []
        for item in items:
            job = item.job
            try:
                check_job_files(job.content, job.styles, staged(job.output), job.params)
                remove_stale_temps(staged(job.output))  # left by a run killed while saving this output
                loaded.append(_Loaded(item, load_content(job.content, job.params)))
            except NstbatchError as error:
                outcomes.append(self._outcome(item, JobStatus.FAILED, error=str(error)))
        return loaded

    def run(self, batch: list[Planned], on_step: Callable[[Progress], None] | None = None,
            on_start: Callable[[Planned], None] | None = None) -> list[Outcome]:
        """Every job of ``batch`` (jobs that share styles, parameters and size) in one pass,
        or fewer at a time where memory or a failure asks for it; one outcome per job.
        ``on_start`` hears of each job this run attempts, once claimed: not of those another
        run holds or finished (ELSEWHERE), which are no attempt of this run's."""
        outcomes = [self._join(item) for item in batch if item.join]  # a clip another owns: its free shots
        batch = [item for item in batch if not item.join]
        with self._claimed(batch, outcomes) as claims:
            elsewhere = {outcome.job.id for outcome in outcomes if outcome.status == JobStatus.ELSEWHERE}
            for item in batch:
                if on_start is not None and item.job.id not in elsewhere:
                    on_start(item)
            clips = [item for item in batch if item.job.clip and item.job.id in claims]
            if clips:  # clips of one size and parameters: frame t of each in one pass
                outcomes += self._clips(clips, claims, on_step)
            loaded = self._load([item for item in batch if item.job.id in claims and not item.job.clip], outcomes)
            if loaded:
                outcomes += self._pass(loaded, claims, on_step)
        return outcomes

    # --- clips ---------------------------------------------------------------------------------

    def _clips(self, items: list[Planned], claims: dict[str, Claim], on_step) -> list[Outcome]:
        """Clip jobs (``plan.batches``: one size and parameters, mixed styles): each checked and
        given its style targets alone (a broken clip fails alone), then those of one frame size
        together (``clip.stylize_clips``), their frames kept in the state directory as they are
        made (a rerun resumes at the first missing frame), then each output: a video encoded from
        them, or the frames copied into the output folder, each atomically."""
        started, outcomes, ready = time.monotonic(), [], []
        for item in items:
            job = item.job
            try:
                info, size, targets, sources = clip_inputs(job, self.store)
            except OnnxError:
                raise
            except Exception as error:  # noqa: BLE001 - one job's failure never ends the run
                outcomes.append(self._outcome(item, JobStatus.FAILED, error=error_text(error)))
                continue
            done = ClipResult(info.frames, 0, [], None, sources=sources)
            ready.append(_Clip(item, info, size, targets, FrameStore(self.state.frames_path(job.id, item.hash)), done))
        for size in dict.fromkeys(clip.size for clip in ready):
            outcomes += self._clip_group([clip for clip in ready if clip.size == size], claims, on_step, started)
        return outcomes

    def _clip_group(self, group: list["_Clip"], claims: dict[str, Claim], on_step, started: float) -> list[Outcome]:
        """Clips of one frame size stylized together; a batch that fails runs each clip alone
        (from the frames it wrote)."""
        params, mine = group[0].item.job.params, [claims[clip.item.job.id] for clip in group]

        def heartbeat(*_) -> None:
            for claim in mine:
                claim.heartbeat()

        def frame_done(index: int, count: int) -> None:  # progress by frames, for a clip alone
            if on_step is not None and len(group) == 1 and (final := group[0].done.final()) is not None:
                on_step(Progress(index + 1, count, final.content, final.style, final.tv, final.total))
        hooks = Hooks(on_step=heartbeat, report_every=self.report_every, should_stop=self.should_stop)
        call = ClipCall(self._features(params), hooks, frame_done, self.device, claim_stale=self.options.claim_stale,
                        on_wait=heartbeat)
        try:
            ends = stylize_clips([(c.info, c.targets, c.frames, c.done) for c in group], params, group[0].size, call)
        except Preempted:
            return [self._outcome(c.item, JobStatus.PREEMPTED, seconds=time.monotonic() - started,
                                  error=f"stopped after {c.frames.count()} frame(s) of the clip; they are kept",
                                  sources=tuple(c.done.sources)) for c in group]
        except OnnxError:
            raise
        except Exception as error:  # noqa: BLE001 - one job's failure never ends the run
            if len(group) > 1:
                return [outcome for c in group for outcome in self._clip_group([c], claims, on_step, started)]
            return [self._outcome(group[0].item, JobStatus.FAILED, seconds=time.monotonic() - started,
                                  error=error_text(error), sources=tuple(group[0].done.sources))]
        return [self._clip_done(c, pts, len(group), started) for c, (_, pts) in zip(group, ends)]

    def _clip_done(self, clip: "_Clip", pts: list[int | None], together: int, started: float) -> Outcome:
        """A clip's output from its frames, its done record, and its outcome."""
        job, item, done = clip.item.job, clip.item, clip.done
        share = (time.monotonic() - started) / together  # as a batch of images: each clip's share of the passes
        try:
            write_clip(clip.info, clip.frames, job.output, clip.size, pts)
            final = done.final()
            costs = _costs(final) if final else {}
            self.state.mark_done(job, item.hash, seconds=share, batch=together, costs=costs,
                                 device=str(self.device), activation_checkpointing=False)
        except Exception as error:  # noqa: BLE001 - one job's failure never ends the run
            return self._outcome(item, JobStatus.FAILED, seconds=share, error=error_text(error),
                                 sources=tuple(done.sources))
        clip.frames.discard()
        batched = f", with {together - 1} other clip(s) in its passes" if together > 1 else ""
        return self._outcome(item, JobStatus.DONE, seconds=share, costs=costs, batch=together, images=done.stylized,
                             sources=tuple(done.sources), note=f"{clip.info.frames} frame(s), {len(done.shots)} shot(s),"
                             f" {done.stylized} stylized by this run{batched}")

    def _join(self, item: Planned) -> Outcome:
        """A share of a clip that another run or worker owns (``Planned.join``): the shots
        nobody holds, stylized into the owner's frames; the owner writes the output and records
        the job. A ``joined`` outcome, which nothing records; what was done here is a notice. A
        failure is left for the owner to meet and report."""
        job, started = item.job, time.monotonic()
        done = ClipResult(0, 0, [], None)
        frames = FrameStore(self.state.frames_path(job.id, item.hash))
        nothing_free = frames.shots() is not None and not frames.open_shots(self.options.claim_stale)
        try:
            if not nothing_free and not self.state.done_since(job, item.hash):
                call = ClipCall(self._features(job.params), Hooks(should_stop=self.should_stop), device=self.device,
                                join=True, claim_stale=self.options.claim_stale)
                clip_job(job, self.store, frames, call, done)
        except OnnxError:
            raise
        except Exception:  # noqa: BLE001 - a stop, or a failure its owner meets too and reports
            pass
        if done.stylized and self.notice is not None:
            self.notice(f"{job.id}: {done.stylized} frame(s) of its shots stylized here, for the run or worker"
                        " that owns the clip")
        return self._outcome(item, JobStatus.ELSEWHERE, seconds=time.monotonic() - started, joined=True,
                             error=f"{done.stylized} frame(s) of its shots stylized here")

    # --- one optimisation pass -----------------------------------------------------------------

    def _split(self, loaded: list[_Loaded], claims, on_step, size: int = 1) -> list[Outcome]:
        """The jobs in passes of ``size``."""
        return [outcome for start in range(0, len(loaded), size)
                for outcome in self._pass(loaded[start:start + size], claims, on_step)]

    def _pass(self, loaded: list[_Loaded], claims: dict[str, Claim], on_step) -> list[Outcome]:
        started = time.monotonic()
        first = loaded[0].item
        params = first.job.params
        if len({tuple(entry.content.shape) for entry in loaded}) > 1:
            return self._split(loaded, claims, on_step)
        height, width = loaded[0].content.shape[-2:]
        limit = memory_available(self.device)
        if limit is not None and self.peers > 1:
            limit = replace(limit, bytes=limit.bytes // self.peers, source=f"{limit.source}, shared by {self.peers} workers")
        styles = max(style_pixels(entry.item.job, max(entry.content.shape[-2:])) for entry in loaded)
        memory = plan_memory(params, height, width, limit.bytes if limit else None, len(loaded), self.device.type,
                             styles)
        if memory is None:
            if len(loaded) > 1:  # as many together as fit (at least one, which may then fail alone)
                fits = [k for k in range(len(loaded) - 1, 1, -1)
                        if plan_memory(params, height, width, limit.bytes, k, self.device.type, styles)]
                return self._split(loaded, claims, on_step, fits[0] if fits else 1)
            lean = estimate(params, height, width, checkpointing=True, device=self.device.type, style_pixels=styles)
            return [self._outcome(first, JobStatus.FAILED, error=(
                f"needs about {lean} for a {width}x{height} image, too much for the {limit.bytes / 2**30:.2f} GiB"
                f" free ({limit.source}); use a smaller size,"
                " fewer jobs per batch, or a machine with more memory"))]
        sources: list[list[str]] = [[] for _ in loaded]  # per job: where its style targets came from
        resume = load_checkpoint(self.state, first.job, first.hash) if len(loaded) == 1 else None
        try:
            style_targets, sources = self._style_targets(loaded)
            result, params, note = self._optimize(loaded, style_targets, resume, memory, claims, on_step)
        except Preempted as stop:
            for index, entry in enumerate(loaded):
                save_checkpoint(self.state, entry.item.job, entry.item.hash,
                                slice_checkpoint(stop.checkpoint, index, len(loaded)))
            return [self._outcome(entry.item, JobStatus.PREEMPTED, seconds=time.monotonic() - started,
                                  error=f"checkpointed after step {stop.checkpoint.step}",
                                  sources=tuple(sources[index])) for index, entry in enumerate(loaded)]
        except OnnxError:
            raise  # the ONNX Runtime set-up is broken for every job, not this one
        except Exception as error:  # noqa: BLE001 - one job's failure never ends the run
            if len(loaded) > 1 and (is_out_of_memory(error) or isinstance(error, OptimizationError)):
                # As a batch it did not fit, or went non-finite: one job at a time, each with its
                # own retry, after freeing what the attempt held.
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                return self._split(loaded, claims, on_step)
            return [self._outcome(entry.item, JobStatus.FAILED, seconds=time.monotonic() - started,
                                  error=error_text(error), sources=tuple(sources[index]))
                    for index, entry in enumerate(loaded)]
        return self._finish(loaded, result, params, note, resume, sources, time.monotonic() - started,
                            memory.checkpointing)

    def _style_targets(self, loaded: list[_Loaded]) -> tuple[StyleTarget, list[list[str]]]:
        """The pass's style targets, and where each job's came from. Jobs that share their
        styles share one ``(1, C, C)`` Gram per layer; a mixed-style batch stacks each job's
        own into ``(B, C, C)``, so every image is pulled towards its own style."""
        per_job = [self.store.for_job(entry.item.job, max(entry.content.shape[-2:])) for entry in loaded]
        sources = [found for _, found in per_job]
        if all(entry.item.job.styles == loaded[0].item.job.styles for entry in loaded):
            return per_job[0][0], sources
        return StyleTarget.stack([targets for targets, _ in per_job]), sources

    def _optimize(self, loaded: list[_Loaded], style_targets, resume: Checkpoint | None, memory: Estimate,
                  claims: dict[str, Claim], on_step) -> tuple[Result, object, str | None]:
        """``optimize_job`` with checkpoints, snapshots, heartbeats and the stop signal; a single job whose cost turns
        non-finite is retried once at a tenth of its learning rate."""
        params = loaded[0].item.job.params
        content = torch.cat([entry.content for entry in loaded]).to(self.device)

        def step(progress: Progress) -> None:
            for claim in claims.values():
                claim.heartbeat()
            if on_step is not None:
                on_step(progress)

        def checkpoint(c: Checkpoint) -> None:
            for index, entry in enumerate(loaded):
                save_checkpoint(self.state, entry.item.job, entry.item.hash, slice_checkpoint(c, index, len(loaded)))

        hooks = Hooks(on_step=step, report_every=self.report_every, should_stop=self.should_stop,
                      checkpoint_every=self.options.checkpoint_every, on_checkpoint=checkpoint,
                      on_snapshot=self._snapshots(loaded))
        note = None
        for attempt in (1, 2):
            try:
                result = optimize_job(content, style_targets, params, features=self._features(params), resume=resume,
                                      hooks=hooks, memory=engine_memory(memory))
                return result, params, note
            except OptimizationError as error:
                if len(loaded) > 1:
                    raise
                if attempt == 2:
                    raise OptimizationError(f"{error.message}, also after a retry with lr {params.lr:g}",
                                            hint="lower lr further, or check the weights") from None
                note = f"{error.message} with lr {params.lr:g}; retried with lr {params.lr * RETRY_LR_FACTOR:g}"
                params, resume = replace(params, lr=params.lr * RETRY_LR_FACTOR), None
                discard_checkpoint(self.state, loaded[0].item.job)
        raise AssertionError("unreachable")

    def _snapshots(self, loaded: list[_Loaded]):
        """The engine's snapshot callback: ``<snapshots>/<job id>/step-000050.png``, in the state
        directory (or ``--snapshot-dir``), never among the outputs."""
        root = StateDir(self.options.snapshot_dir) if self.options.snapshot_dir else self.state

        def save(step: int, images) -> None:
            for index, entry in enumerate(loaded):
                path = root.job_file("snapshots", entry.item.job.id, f"/step-{step:06d}.png")
                path.parent.mkdir(parents=True, exist_ok=True)
                save_image(to_pil(images[index:index + 1]), path)
        return save

    def _finish(self, loaded: list[_Loaded], result: Result, params, note, resume, sources, seconds,
                checkpointing: bool) -> list[Outcome]:
        """Outputs, histories, done records: each job's own, in that order (the done record
        last: a job is done only once its output is whole)."""
        per_image = seconds / len(loaded)
        outcomes = []
        for index, entry in enumerate(loaded):
            job, hash_ = entry.item.job, entry.item.hash
            final = result.final(index)
            try:
                save_output(result.image[index:index + 1], staged(job.output),  # a shard's: packed later
                            params, provenance(params, result, job.content, job.styles, index), job.content)
                self.state.write_history(job.id, result.history, of_batch=len(loaded))
                self.state.mark_done(job, hash_, seconds=per_image, batch=len(loaded), costs=_costs(final),
                                     device=str(self.device), activation_checkpointing=checkpointing,
                                     recoveries=len(result.recoveries))
            except (NstbatchError, OSError) as error:  # a full or read-only disk: this job alone
                outcomes.append(self._outcome(entry.item, JobStatus.FAILED, seconds=per_image,
                                              error=error_text(error), sources=tuple(sources[index])))
                continue
            discard_checkpoint(self.state, job)
            outcomes.append(self._outcome(entry.item, JobStatus.DONE, seconds=per_image, costs=_costs(final),
                                          sources=tuple(sources[index]), resumed_from=resume.step if resume else None,
                                          note=note, batch=len(loaded), checkpointing=checkpointing,
                                          recoveries=tuple(result.recoveries)))
        return outcomes
