"""Running planned jobs: one attempt path (``JobExecutor._attempt``) for stills and clips, for
1..N jobs sharing one optimisation pass (a single job is a batch of one; clips of one frame size
make frame t of each in one pass). Around each pass, one attempt: claim the jobs, check the
memory it needs (split the pass where it does not fit), resume a checkpoint, stylize with
heartbeats, checkpoints, snapshots and the stop signal (a job whose cost turns non-finite
retried once at a tenth of its learning rate), write the outputs, the cost histories and the
done records (with the memory plan the pass ran with), and turn every failure into an
``Outcome`` of its own job.
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
from ..styles.networks import Networks
from ..styles.onnx_backend import OnnxError
from ..engine.optimize import Checkpoint, Progress, Result
from ..engine.regions import Regions
from ..engine.vgg import build_features
from ..engine.pixels import to_pil
from ..io.webdataset import staged
from ..io.video import ClipInfo
from ..styles.store import StyleTargetStore
from ..engine.targets import StyleTarget
from ..engine.vgg import VGGFeatures
from .checkpoints import discard_checkpoint, load_checkpoint, save_checkpoint, slice_checkpoint
from .claims import Claim, claim_at
from .ledger import LineStatus, Outcome, StateDir
from .memory import Estimate, estimate, plan_memory
from .options import RunOptions
from .plan import Planned, style_pixels
from .clip import (ClipCall, ClipResult, FramesKept, NetworkFrames, clip_inputs, clip_job, clip_regions,
                   network_clip_job, sealed, stylize_clips, write_clip)
from .frames import FrameStore
from .single import (Hooks, Preempted, check_job_files, engine_memory, job_regions, load_content, network_provenance,
                     optimize_job, provenance, save_output)

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
    """A clip job of a pass: its frames (``shape``: their height and width) made frame by frame."""

    item: Planned
    info: ClipInfo
    shape: tuple[int, int]
    targets: StyleTarget
    frames: FrameStore
    done: ClipResult


@dataclass
class _Loaded:
    """A still job of a pass: its content at the job's size."""

    item: Planned
    content: torch.Tensor  # (1, 3, H, W)
    init: torch.Tensor | None = None  # (1, 3, H, W): where its optimisation starts (a network's picture)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.content.shape[-2:])


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
        self.networks = Networks(options.providers, allow_fallback=options.allow_fallback, device=self.device,
                                 notice=notice)

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
                    outcomes.append(self._outcome(item, LineStatus.FAILED,
                                                  error=f"{item.job.where}: {item.standing.why}"))
                    continue
                claim = claim_at(self.state.claim_path(item.job.id), self.options.claim_stale)
                if isinstance(claim, str):
                    outcomes.append(self._outcome(item, LineStatus.ELSEWHERE, error=f"claimed by {claim}"))
                elif self.state.done_since(item.job, item.hash, item.planned_at if item.force else None):
                    claim.release()
                    outcomes.append(self._outcome(item, LineStatus.ELSEWHERE, error="finished by another run"))
                else:
                    claims[item.job.id] = claim
            yield claims
        finally:
            for claim in claims.values():
                claim.release()

    def _outcome(self, item: Planned, status: LineStatus, **fields) -> Outcome:
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
                outcomes.append(self._outcome(item, LineStatus.FAILED, error=str(error)))
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
            elsewhere = {outcome.job.id for outcome in outcomes if outcome.status == LineStatus.ELSEWHERE}
            for item in batch:
                if on_start is not None and item.job.id not in elsewhere:
                    on_start(item)
            mine = [item for item in batch if item.job.id in claims]
            outcomes += [self._network_clip(item, claims[item.job.id]) for item in mine
                         if item.job.clip and item.job.network]
            clips = self._clip_inputs([item for item in mine if item.job.clip and not item.job.network], outcomes)
            for shape in dict.fromkeys(clip.shape for clip in clips):  # clips of one frame size: frame t of each in one pass
                outcomes += self._attempt([clip for clip in clips if clip.shape == shape], claims, on_step)
            loaded = self._load([item for item in batch if item.job.id in claims and not item.job.clip], outcomes)
            if networked := [unit for unit in loaded if unit.item.job.network and not unit.item.job.refine_steps]:
                outcomes += self._through_network(networked)
            if refined := [unit for unit in loaded if unit.item.job.refine_steps]:
                outcomes += self._attempt(self._network_starts(refined, outcomes), claims, on_step)
            if loaded := [unit for unit in loaded if unit.item.job.network is None]:
                outcomes += self._attempt(loaded, claims, on_step)
        return outcomes

    def _clip_inputs(self, items: list[Planned], outcomes: list[Outcome]) -> list[_Clip]:
        """Clip jobs (``plan.batches``: one size and parameters, mixed styles), each checked and
        given its style targets alone: a broken clip fails alone."""
        ready = []
        for item in items:
            try:
                info, shape, targets, sources = clip_inputs(item.job, self.store)
            except OnnxError:
                raise
            except Exception as error:  # noqa: BLE001 - one job's failure never ends the run
                outcomes.append(self._outcome(item, LineStatus.FAILED, error=error_text(error)))
                continue
            frames = sealed(FrameStore(self.state.frames_path(item.job.id, item.hash)), info, item.job.output, shape,
                            item.job.params)
            ready.append(_Clip(item, info, shape, targets, frames, ClipResult(info.frames, sources=sources)))
        return ready

    def _join(self, item: Planned) -> Outcome:
        """A share of a clip that another run or worker owns (``Planned.join``): the shots
        nobody holds, stylized into the owner's frames; the owner writes the output and records
        the job. A ``joined`` outcome, which nothing records; what was done here is a notice. A
        failure is left for the owner to meet and report."""
        job, started = item.job, time.monotonic()
        done = ClipResult(0)
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
        return self._outcome(item, LineStatus.ELSEWHERE, seconds=time.monotonic() - started, joined=True,
                             error=f"{done.stylized} frame(s) of its shots stylized here")

    def _painting(self, job) -> str:
        """The name of the painting ``job``'s network paints it with (its card's)."""
        return self.networks.open(job.network)[1].names()[self.networks.row(job.network, job.styles[0][0])]

    def _network_clip(self, item: Planned, claim: Claim) -> Outcome:
        """A clip through its trained network (``clip.network_clip_job``): its frames kept in
        the state directory as they are painted (a rerun resumes at the first missing one),
        then its output and done record."""
        job, started = item.job, time.monotonic()
        frames = FrameStore(self.state.frames_path(job.id, item.hash))
        painting = job.styles[0][0]

        def paint(images: torch.Tensor) -> torch.Tensor:
            claim.heartbeat()
            return self.networks(job.network, images, [painting] * len(images))
        try:
            info, painted = network_clip_job(job, frames, NetworkFrames(paint, should_stop=self.should_stop))
            self.state.mark_done(job, item.hash, seconds=time.monotonic() - started, batch=1, costs=None,
                                 device=str(self.device), activation_checkpointing=False)
        except OnnxError:
            raise
        except FramesKept as stop:
            return self._outcome(item, LineStatus.PREEMPTED, seconds=time.monotonic() - started, error=str(stop))
        except Exception as error:  # noqa: BLE001 - one job's failure never ends the run
            return self._outcome(item, LineStatus.FAILED, seconds=time.monotonic() - started, error=error_text(error))
        frames.discard()
        session = self.networks.open(job.network)[0]
        return self._outcome(item, LineStatus.DONE, seconds=time.monotonic() - started, images=painted,
                             note=f"{info.frames} frame(s) through network {job.network.name} on {session.provider},"
                                  f" {painted} painted by this run")

    def _network_starts(self, loaded: list[_Loaded], outcomes: list[Outcome]) -> list[_Loaded]:
        """Jobs that the optimiser refines (``refine_steps``), each with its network's picture
        as its start; a job whose network fails is its own failure."""
        started = []
        for unit in loaded:
            job = unit.item.job
            try:
                started.append(replace(unit, init=self.networks(job.network, unit.content, [job.styles[0][0]])))
            except OnnxError:
                raise
            except Exception as error:  # noqa: BLE001 - one job's failure never ends the run
                outcomes.append(self._outcome(unit.item, LineStatus.FAILED, error=error_text(error)))
        return started

    def _through_network(self, loaded: list[_Loaded]) -> list[Outcome]:
        """Jobs through their trained network (``network:``), one pass for each network and
        image size; each output written and recorded as a still's is."""
        outcomes = []
        for network, shape in dict.fromkeys((unit.item.job.network, unit.shape) for unit in loaded):
            group = [unit for unit in loaded if (unit.item.job.network, unit.shape) == (network, shape)]
            started = time.monotonic()
            try:
                images = self.networks(network, torch.cat([unit.content for unit in group]),
                                       [unit.item.job.styles[0][0] for unit in group])
                session = self.networks.open(network)[0]
            except OnnxError:
                raise
            except Exception as error:  # noqa: BLE001 - these jobs' failure never ends the run
                outcomes += [self._outcome(unit.item, LineStatus.FAILED, error=error_text(error)) for unit in group]
                continue
            per_image = (time.monotonic() - started) / len(group)
            for index, unit in enumerate(group):
                job = unit.item.job
                try:
                    save_output(images[index:index + 1], staged(job.output), job.params,
                                network_provenance(job.params, network, self._painting(job), job.content), job.content)
                    self.state.mark_done(job, unit.item.hash, seconds=per_image, batch=len(group), costs=None,
                                         device=str(self.device), activation_checkpointing=False)
                except (NstbatchError, OSError) as error:
                    outcomes.append(self._outcome(unit.item, LineStatus.FAILED, error=error_text(error)))
                    continue
                outcomes.append(self._outcome(unit.item, LineStatus.DONE, seconds=per_image, batch=len(group),
                                              note=f"network {network.name} on {session.provider}"))
        return outcomes

    # --- one attempt at a pass: stills or clips ------------------------------------------------------

    def _split(self, units: list, claims, on_step, size: int = 1) -> list[Outcome]:
        """The jobs in attempts of ``size``."""
        return [outcome for start in range(0, len(units), size)
                for outcome in self._attempt(units[start:start + size], claims, on_step)]

    def _attempt(self, units: list[_Loaded] | list[_Clip], claims: dict[str, Claim], on_step) -> list[Outcome]:
        """One attempt at stills (``_Loaded``) or clips (``_Clip``: frame t of each in one
        optimisation pass) of one size, together: the memory check (a pass too large is split,
        a job too large for the device fails with what it needs), stylizing (``_stylize``:
        heartbeats, checkpoints, the stop signal, the NaN retry), a batch that fails split into
        single jobs, then each job's output and done record; every failure is its own job's
        outcome."""
        started, first = time.monotonic(), units[0].item
        if len({unit.shape for unit in units}) > 1:
            return self._split(units, claims, on_step)
        memory = self._fit(units)
        if isinstance(memory, int):
            return self._split(units, claims, on_step, memory)
        if isinstance(memory, str):
            return [self._outcome(first, LineStatus.FAILED, error=memory)]
        clips = isinstance(units[0], _Clip)
        sources = [list(unit.done.sources) if clips else [] for unit in units]  # where each job's style came from
        resume = load_checkpoint(self.state, first.job, first.hash) if len(units) == 1 and not clips else None
        try:
            result, params, note = self._stylize(units, resume, memory, claims, on_step, sources)
        except Preempted as stop:
            return self._stopped(units, stop, time.monotonic() - started, sources)
        except OnnxError:
            raise  # the ONNX Runtime set-up is broken for every job, not this one
        except Exception as error:  # noqa: BLE001 - one job's failure never ends the run
            if len(units) > 1 and (clips or is_out_of_memory(error) or isinstance(error, OptimizationError)):
                # As a batch it did not fit, went non-finite, or one clip's frames failed: one job
                # at a time, each with its own retry (a clip from the frames it wrote), after
                # freeing what the attempt held.
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                return self._split(units, claims, on_step)
            return [self._outcome(unit.item, LineStatus.FAILED, seconds=time.monotonic() - started,
                                  error=error_text(error), sources=tuple(sources[index]))
                    for index, unit in enumerate(units)]
        ended = (self._clip_done if clips else self._still_done)
        return ended(units, result, params, note, resume, sources, time.monotonic() - started, memory.checkpointing)

    def _fit(self, units: list) -> Estimate | int | str:
        """How the pass fits the device's memory (``plan_memory``: activation checkpointing,
        tiles); or how many of the jobs fit together where all do not; or why one job alone
        cannot run here."""
        params = units[0].item.job.params
        height, width = units[0].shape
        limit = memory_available(self.device)
        if limit is not None and self.peers > 1:
            limit = replace(limit, bytes=limit.bytes // self.peers, source=f"{limit.source}, shared by {self.peers} workers")
        styles = max(style_pixels(unit.item.job, max(unit.shape)) for unit in units)
        memory = plan_memory(params, height, width, limit.bytes if limit else None, len(units), self.device.type,
                             styles)
        if memory is not None:
            return memory
        if len(units) > 1:  # as many together as fit (at least one, which may then fail alone)
            fits = [k for k in range(len(units) - 1, 1, -1)
                    if plan_memory(params, height, width, limit.bytes, k, self.device.type, styles)]
            return fits[0] if fits else 1
        lean = estimate(params, height, width, checkpointing=True, device=self.device.type, style_pixels=styles)
        return (f"needs about {lean} for a {width}x{height} image, too much for the {limit.bytes / 2**30:.2f} GiB"
                f" free ({limit.source}); use a smaller size, fewer jobs per batch, or a machine with more memory")

    def _stylize(self, units: list, resume: Checkpoint | None, memory: Estimate, claims: dict[str, Claim], on_step,
                 sources: list[list[str]]) -> tuple[object, object, str | None]:
        """The pass stylized (``_stills`` or ``_clips``) with the claims' heartbeats, the stop
        signal, checkpoints and snapshots: ``(result, params, note)``. A single job whose cost
        turns non-finite is retried once at a tenth of its learning rate (a clip from the
        frames it wrote)."""
        params = units[0].item.job.params
        mine = [claims[unit.item.job.id] for unit in units]

        def heartbeat(*_) -> None:
            for claim in mine:
                claim.heartbeat()
        note = None
        for attempt in (1, 2):
            try:
                if isinstance(units[0], _Clip):
                    return self._clips(units, params, memory, heartbeat, on_step), params, note
                return self._stills(units, params, resume, memory, heartbeat, on_step, sources), params, note
            except OptimizationError as error:
                if len(units) > 1:
                    raise
                if attempt == 2:
                    raise OptimizationError(f"{error.message}, also after a retry with lr {params.lr:g}",
                                            hint="lower lr further, or check the weights") from None
                note = f"{error.message} with lr {params.lr:g}; retried with lr {params.lr * RETRY_LR_FACTOR:g}"
                params, resume = replace(params, lr=params.lr * RETRY_LR_FACTOR), None
                discard_checkpoint(self.state, units[0].item.job)
        raise AssertionError("unreachable")

    def _stills(self, loaded: list[_Loaded], params, resume: Checkpoint | None, memory: Estimate, heartbeat,
                on_step, sources: list[list[str]]) -> Result:
        """Stills in one pass (``optimize_job``), checkpointed every ``checkpoint_every`` steps."""
        style_targets, sources[:] = self._style_targets(loaded)
        content = torch.cat([entry.content for entry in loaded]).to(self.device)
        regions = None
        if loaded[0].item.job.regions is not None:  # a batch's jobs have as many regions each (plan.batches)
            regions = Regions.stack([job_regions(e.item.job.content, e.item.job.styles, e.item.job.regions,
                                                 e.item.job.params, e.content, self.store) for e in loaded])

        def step(progress: Progress) -> None:
            heartbeat()
            if on_step is not None:
                on_step(progress)

        def checkpoint(c: Checkpoint) -> None:
            for index, entry in enumerate(loaded):
                save_checkpoint(self.state, entry.item.job, entry.item.hash, slice_checkpoint(c, index, len(loaded)))

        hooks = Hooks(on_step=step, report_every=self.report_every, should_stop=self.should_stop,
                      checkpoint_every=self.options.checkpoint_every, on_checkpoint=checkpoint,
                      on_snapshot=self._snapshots(loaded))
        init = torch.cat([entry.init for entry in loaded]) if loaded[0].init is not None else None
        return optimize_job(content, style_targets, params, features=self._features(params), init=init,
                            regions=regions, resume=resume, hooks=hooks, memory=engine_memory(memory))

    def _clips(self, group: list[_Clip], params, memory: Estimate, heartbeat, on_step) -> list[list[int | None]]:
        """Clips of one frame size in lockstep (``clip.stylize_clips``), their frames kept in the
        state directory as they are made (a rerun resumes at the first missing frame); each
        clip's timestamps. A clip alone reports its progress by frames."""
        def frame_done(index: int, count: int) -> None:
            if on_step is not None and len(group) == 1 and (final := group[0].done.final()) is not None:
                on_step(Progress(index + 1, count, final.content, final.style, final.tv, final.total))
        hooks = Hooks(on_step=heartbeat, report_every=self.report_every, should_stop=self.should_stop)
        first = group[0]  # a clip with masks runs alone (plan.batches): its regions are its own
        regions = clip_regions(first.item.job, first.info, first.shape, self.store)
        call = ClipCall(self._features(params), hooks, frame_done, self.device, claim_stale=self.options.claim_stale,
                        on_wait=heartbeat, memory=engine_memory(memory), regions=regions)
        ends = stylize_clips([(c.info, c.targets, c.frames, c.done) for c in group], params, group[0].shape, call)
        return [pts for _, pts in ends]

    def _stopped(self, units: list, stop: Preempted, seconds: float, sources: list[list[str]]) -> list[Outcome]:
        """A stop signal mid-pass: stills checkpointed where they are, a clip's frames kept."""
        if isinstance(units[0], _Clip):
            return [self._outcome(c.item, LineStatus.PREEMPTED, seconds=seconds, sources=tuple(c.done.sources),
                                  error=f"stopped after {c.frames.count()} frame(s) of the clip; they are kept")
                    for c in units]
        for index, entry in enumerate(units):
            save_checkpoint(self.state, entry.item.job, entry.item.hash,
                            slice_checkpoint(stop.checkpoint, index, len(units)))
        return [self._outcome(entry.item, LineStatus.PREEMPTED, seconds=seconds, sources=tuple(sources[index]),
                              error=f"checkpointed after step {stop.checkpoint.step}")
                for index, entry in enumerate(units)]

    def _style_targets(self, loaded: list[_Loaded]) -> tuple[StyleTarget, list[list[str]]]:
        """The pass's style targets, and where each job's came from. Jobs that share their
        styles share one ``(1, C, C)`` Gram per layer; a mixed-style batch stacks each job's
        own into ``(B, C, C)``, so every image is pulled towards its own style."""
        per_job = [self.store.for_job(entry.item.job, max(entry.content.shape[-2:])) for entry in loaded]
        sources = [found for _, found in per_job]
        if all(entry.item.job.styles == loaded[0].item.job.styles for entry in loaded):
            return per_job[0][0], sources
        return StyleTarget.stack([targets for targets, _ in per_job]), sources

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

    def _still_done(self, loaded: list[_Loaded], result: Result, params, note, resume, sources, seconds,
                    checkpointing: bool) -> list[Outcome]:
        """Outputs, histories, done records: each job's own, in that order (the done record
        last: a job is done only once its output is whole)."""
        per_image = seconds / len(loaded)
        outcomes = []
        for index, entry in enumerate(loaded):
            job, hash_ = entry.item.job, entry.item.hash
            final = result.final(index)
            try:
                made = provenance(params, result, job.content, job.styles, index)
                if job.network is not None:  # refined from the network's picture
                    painting = self._painting(job)
                    made["network"] = network_provenance(params, job.network, painting, job.content)["network"]
                save_output(result.image[index:index + 1], staged(job.output),  # a shard's: packed later
                            params, made, job.content)
                self.state.write_history(job.id, result.history, of_batch=len(loaded))
                self.state.mark_done(job, hash_, seconds=per_image, batch=len(loaded), costs=_costs(final),
                                     device=str(self.device), activation_checkpointing=checkpointing,
                                     recoveries=len(result.recoveries))
            except (NstbatchError, OSError) as error:  # a full or read-only disk: this job alone
                outcomes.append(self._outcome(entry.item, LineStatus.FAILED, seconds=per_image,
                                              error=error_text(error), sources=tuple(sources[index])))
                continue
            discard_checkpoint(self.state, job)
            outcomes.append(self._outcome(entry.item, LineStatus.DONE, seconds=per_image, costs=_costs(final),
                                          sources=tuple(sources[index]), resumed_from=resume.step if resume else None,
                                          note=note, batch=len(loaded), checkpointing=checkpointing,
                                          recoveries=tuple(result.recoveries)))
        return outcomes

    def _clip_done(self, group: list[_Clip], ends: list[list[int | None]], params, note, resume, sources,
                   seconds: float, checkpointing: bool) -> list[Outcome]:
        """Each clip's output from its frames (``clip.write_clip``: a video encoded, or the
        frames copied into its folder, atomically), then its done record: the done record last."""
        share = seconds / len(group)  # as a batch of images: each clip's share of the passes
        outcomes = []
        for clip, pts in zip(group, ends):
            job, item, done = clip.item.job, clip.item, clip.done
            final = done.final()
            costs = _costs(final) if final else {}
            try:
                write_clip(clip.info, clip.frames, job.output, clip.shape, pts, job.params)
                self.state.mark_done(job, item.hash, seconds=share, batch=len(group), costs=costs,
                                     device=str(self.device), activation_checkpointing=checkpointing)
            except Exception as error:  # noqa: BLE001 - one job's failure never ends the run
                outcomes.append(self._outcome(item, LineStatus.FAILED, seconds=share, error=error_text(error),
                                              sources=tuple(done.sources)))
                continue
            clip.frames.discard()
            batched = f", with {len(group) - 1} other clip(s) in its passes" if len(group) > 1 else ""
            outcomes.append(self._outcome(
                item, LineStatus.DONE, seconds=share, costs=costs, batch=len(group), images=done.stylized,
                sources=tuple(done.sources), checkpointing=checkpointing,
                note=f"{clip.info.frames} frame(s), {len(done.shots)} shot(s), {done.stylized} stylized by this run"
                     f"{batched}" + (f"; {note}" if note else "")))
        return outcomes
