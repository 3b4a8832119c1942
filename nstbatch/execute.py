"""Executing jobs: files in, an output out, with claims, checkpoints and provenance.

``stylize_file`` is one job without bookkeeping (``nstbatch stylize``). ``JobExecutor`` runs a
planned job of a manifest: it claims it, resumes its checkpoint, stylizes, writes the done
record, and turns every failure into an ``Outcome``. ``worker_main`` is a worker process
around one executor, fed from a queue by the parent run.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import __version__
from .api import stylize_with_history
from .config import StyleParams
from .devices import resolve_device
from .errors import InputError, NstbatchError, OptimizationError
from .images import (check_output_path, load_image, probe_image, remove_stale_temps, resize_long_side,
                     save_image)
from .pixels import to_pil, to_tensor
from .manifest import Job
from .onnx_backend import OnnxError
from .optimize import Preempted, Progress, Result, build_features, optimize
from .precompute import StyleTargetStore
from .state import (StateDir, claim_job, discard_checkpoint, load_checkpoint, save_checkpoint)
from .vgg import VGGFeatures
from .weights import load_weights


StyleSpec = Sequence[tuple["str | os.PathLike", float]]


def _style_list(style) -> list[tuple[Path, float]]:
    """One style path, or a blend: a sequence of (path, weight)."""
    if isinstance(style, (str, os.PathLike)):
        return [(Path(style), 1.0)]
    return [(Path(path), float(weight)) for path, weight in style]


def provenance(params: StyleParams, result: Result, content: Path,
               styles: list[tuple[Path, float]], index: int = 0) -> dict:
    """What made an output (image ``index`` of the result), stored inside it (PNG text chunks)."""
    final = result.final(index)
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
                 style_targets: dict | None = None, **optimize_options) -> Result:
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
                                         style_targets=style_targets, **optimize_options)
    save_image(image, output, provenance(params, result, content, styles))
    return result


@dataclass
class Planned:
    job: Job
    reason: str | None  # why it runs; None when it is done already
    hash: str | None  # None when an input cannot be hashed (it will fail, with the reason)


@dataclass
class Outcome:
    job: Job
    status: str  # done | failed | preempted | elsewhere (claimed or finished by another run)
    seconds: float
    error: str | None = None
    final: Progress | None = None
    sources: tuple[str, ...] = ()  # where each style target came from
    resumed_from: int | None = None  # the checkpoint step it resumed from
    device: str = ""
    note: str | None = None  # what happened on the way (a retry), for the report


# A job whose cost turns NaN or infinite is retried once with its learning rate times this.
RETRY_LR_FACTOR = 0.1


def error_text(error: BaseException) -> str:
    if isinstance(error, NstbatchError):
        return str(error)
    if "out of memory" in str(error).lower():
        return f"out of memory: {str(error).splitlines()[0]} (use a smaller size or another device)"
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class ExecutorConfig:
    """Everything a worker needs to run jobs (picklable: it crosses to worker processes)."""

    state_root: Path
    device: str = "auto"
    targets: str = "onnx"
    cache_dir: str | None = None
    providers: str = "auto"
    allow_fallback: bool = False
    checkpoint_every: int = 0
    claim_stale: float = 300.0
    threads: int | None = None  # torch threads in a CPU worker
    compile: bool = False  # torch.compile the VGG-19 (pays on GPUs for long runs of one size)
    snapshot_dir: str | None = None  # where save_every's snapshots go [default: state/snapshots]


class JobExecutor:
    def __init__(self, config: ExecutorConfig, *, notice: Callable[[str], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False):
        self.config = config
        self.state = StateDir(config.state_root)
        self.device = resolve_device(config.device)
        self.store = StyleTargetStore(backend=config.targets, cache_dir=config.cache_dir,
                                      device=self.device, providers=config.providers,
                                      allow_fallback=config.allow_fallback, notice=notice)
        self.should_stop = should_stop
        self.features: dict[tuple, VGGFeatures] = {}
        # On a GPU, reading the costs back every step would stall the queue of kernels.
        self.report_every = 1 if self.device.type == "cpu" else 10
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one image size per job: autotune pays

    def snapshot_path(self, job: Job, step: int) -> Path:
        """``<snapshots>/<job id>/step-000050.png``: never among the outputs unless asked."""
        root = StateDir(Path(self.config.snapshot_dir)) if self.config.snapshot_dir else self.state
        return root.job_file("snapshots", job.id, f"/step-{step:06d}.png")

    def _snapshots(self, jobs: list[Job]):
        """The engine's snapshot callback for these jobs (one per image of the batch)."""
        def save(step: int, images) -> None:
            for index, job in enumerate(jobs):
                path = self.snapshot_path(job, step)
                path.parent.mkdir(parents=True, exist_ok=True)
                save_image(to_pil(images[index:index + 1]), path)
        return save

    def _features(self, params: StyleParams) -> VGGFeatures:
        """VGG-19 for these weights, pooling and layers, built once per executor."""
        key = (params.weights, params.pooling, params.feature_layers)
        if key not in self.features:
            self.features[key] = build_features(params, self.device)
            if self.config.compile:
                self.features[key].compile_trunk()
        return self.features[key]

    def run(self, task: "Planned | list[Planned]", step=None) -> list[Outcome]:
        """A task is one planned job, or a batch of jobs that share style, size and params."""
        if isinstance(task, list) and len(task) > 1:
            outcomes = self._execute_batch(task, step)
            for outcome in outcomes:
                outcome.device = outcome.device or str(self.device)
            return outcomes
        return [self.execute(task[0] if isinstance(task, list) else task, step)]

    def _execute_batch(self, items: list[Planned], step) -> list[Outcome]:
        """Optimise several contents in one pass. Adam is elementwise, so each image follows
        its own trajectory; in exact arithmetic it ends as it would alone, but where a batch
        picks other kernels (GPUs) their rounding grows like any tiny perturbation
        (benchmarks/RESULTS.md). Claims, done records and outputs stay per job; an
        out-of-memory batch is retried one job at a time."""
        started = time.monotonic()
        outcomes: list[Outcome] = []
        claims: dict[str, object] = {}
        ready: list[Planned] = []
        for item in items:
            claim = claim_job(self.state, item.job, self.config.claim_stale)
            if isinstance(claim, str):
                outcomes.append(Outcome(item.job, "elsewhere", 0.0, error=f"claimed by {claim}"))
            elif item.reason != "--force" and self.state.is_done(item.job, item.hash):
                claim.release()
                outcomes.append(Outcome(item.job, "elsewhere", 0.0, error="finished by another run"))
            else:
                claims[item.job.id] = claim
                ready.append(item)
        contents, loaded = [], []
        for item in ready:
            try:
                check_job_files(item.job.content, list(item.job.styles), item.job.output)
                remove_stale_temps(item.job.output)
                contents.append(to_tensor(resize_long_side(load_image(item.job.content), item.job.params.size)))
                loaded.append(item)
            except NstbatchError as error:
                claims.pop(item.job.id).release()
                outcomes.append(Outcome(item.job, "failed", 0.0, error=str(error)))
        if len(loaded) <= 1 or len({tuple(c.shape) for c in contents}) > 1:
            for claim in claims.values():
                claim.release()
            return outcomes + [self.execute(item, step) for item in loaded]
        params, sources = loaded[0].job.params, []
        try:
            features = self._features(params)
            style_targets, sources = self.store.for_job(loaded[0].job)

            def on_step(progress: Progress) -> None:
                for claim in claims.values():
                    claim.heartbeat()
                if step is not None:
                    step(progress)

            result = optimize(torch.cat(contents).to(self.device), None, params,
                              features=features, callback=on_step, style_targets=style_targets,
                              should_stop=self.should_stop, report_every=self.report_every,
                              on_snapshot=self._snapshots([item.job for item in loaded]))
            seconds = (time.monotonic() - started) / len(loaded)
            for index, item in enumerate(loaded):
                job = item.job
                save_image(to_pil(result.image[index:index + 1]), job.output,
                           provenance(params, result, job.content, list(job.styles), index))
                self.state.write_history(job.id, result.history, of_batch=len(loaded))
                self.state.mark_done(job, item.hash, {"seconds": seconds, "finished": time.time(),
                                                      "batch": len(loaded)})
                outcomes.append(Outcome(job, "done", seconds, final=result.final(index),
                                        sources=tuple(sources)))
            return outcomes
        except Preempted as stop:
            for index, item in enumerate(loaded):
                save_checkpoint(self.state, item.job, item.hash, _slice(stop.checkpoint, index, len(loaded)))
                outcomes.append(Outcome(item.job, "preempted", 0.0, sources=tuple(sources),
                                        error=f"checkpointed after step {stop.checkpoint.step}"))
            return outcomes
        except OnnxError:
            raise
        except Exception as error:  # noqa: BLE001
            if "out of memory" not in str(error).lower() and not isinstance(error, OptimizationError):
                return outcomes + [Outcome(item.job, "failed", 0.0, error=error_text(error),
                                           sources=tuple(sources)) for item in loaded]
        finally:
            for claim in claims.values():
                claim.release()
        # Out of memory, or a non-finite cost, as a batch: free what the attempt held, then one
        # job at a time (each with its own retry).
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return outcomes + [self.execute(item, step) for item in loaded]

    def execute(self, item: Planned, step: Callable[[Progress], None] | None = None) -> Outcome:
        outcome = self._execute(item, step)
        outcome.device = str(self.device)
        return outcome

    def _execute(self, item: Planned, step: Callable[[Progress], None] | None) -> Outcome:
        job, started = item.job, time.monotonic()
        if item.hash is None:
            return Outcome(job, "failed", 0.0, error=f"{job.where}: {item.reason}")
        claim = claim_job(self.state, job, self.config.claim_stale)
        if isinstance(claim, str):
            return Outcome(job, "elsewhere", 0.0, error=f"claimed by {claim}")
        sources: list[str] = []
        resume = None
        try:
            if item.reason != "--force" and self.state.is_done(job, item.hash):
                return Outcome(job, "elsewhere", 0.0, error="finished by another run")
            remove_stale_temps(job.output)  # left by a run killed while saving this output
            features = self._features(job.params)
            style_targets, sources = self.store.for_job(job)
            resume = load_checkpoint(self.state, job, item.hash, job.params.steps)

            def on_step(progress: Progress) -> None:
                claim.heartbeat()
                if step is not None:
                    step(progress)

            params, note = job.params, None
            for attempt in (1, 2):
                try:
                    result = stylize_file(
                        job.content, job.styles, job.output, params, callback=on_step,
                        features=features, style_targets=style_targets, resume=resume,
                        should_stop=self.should_stop, checkpoint_every=self.config.checkpoint_every,
                        report_every=self.report_every, on_snapshot=self._snapshots([job]),
                        on_checkpoint=lambda c: save_checkpoint(self.state, job, item.hash, c))
                    break
                except OptimizationError as error:
                    if attempt == 2:
                        raise OptimizationError(f"{error.message}, also after a retry with lr {params.lr:g}",
                                                hint="lower lr further, or check the weights") from None
                    note = f"{error.message} with lr {params.lr:g}; retried with lr {params.lr * RETRY_LR_FACTOR:g}"
                    params, resume = replace(params, lr=params.lr * RETRY_LR_FACTOR), None
                    discard_checkpoint(self.state, job)
            seconds = time.monotonic() - started
            self.state.write_history(job.id, result.history)
            self.state.mark_done(job, item.hash, {"seconds": seconds, "finished": time.time()})
            discard_checkpoint(self.state, job)
            return Outcome(job, "done", seconds, final=result.history[-1], sources=tuple(sources),
                           resumed_from=resume.step if resume else None, note=note)
        except Preempted as stop:
            save_checkpoint(self.state, job, item.hash, stop.checkpoint)
            return Outcome(job, "preempted", time.monotonic() - started,
                           error=f"checkpointed after step {stop.checkpoint.step}", sources=tuple(sources))
        except OnnxError:
            raise  # the ONNX Runtime set-up is broken for every job, not this one
        except Exception as error:  # noqa: BLE001 - one job's failure never ends the batch
            return Outcome(job, "failed", time.monotonic() - started, error=error_text(error),
                           sources=tuple(sources))
        finally:
            claim.release()


def _slice(checkpoint, index: int, count: int):
    """One image's share of a batch checkpoint: Adam's state is per pixel, so slicing it
    gives exactly the state that image would have alone."""
    def take(obj):
        if isinstance(obj, torch.Tensor) and obj.dim() > 0 and obj.shape[0] == count:
            return obj[index:index + 1].clone()
        if isinstance(obj, dict):
            return {k: take(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [take(v) for v in obj]
        return obj

    return replace(checkpoint, image=checkpoint.image[index:index + 1].clone(),
                   optimizer=take(checkpoint.optimizer))


def worker_main(config: ExecutorConfig, conn, worker_id: int, stop_signals: Sequence[int]) -> None:
    """A worker process: one executor (VGG-19 loaded once), fed one task at a time over its
    own pipe. It says "ready", gets a task (None: exit), and reports start, steps and
    outcomes. A stop signal lets the current step finish and checkpoints the job.

    A pipe per worker, not a shared queue: a worker killed in the middle of a write can then
    corrupt only its own pipe, never the messages of the others."""
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    for signum in stop_signals:
        signal.signal(signum, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into a stop signal
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        executor = JobExecutor(config, notice=lambda m: conn.send(("notice", worker_id, m)),
                               should_stop=lambda: stopping)
        while not stopping:
            conn.send(("ready", worker_id, None))
            task = conn.recv()
            if task is None:
                break
            for item in (task if isinstance(task, list) else [task]):
                conn.send(("start", worker_id, item))
            last = [0.0]

            def step(progress: Progress) -> None:
                now = time.monotonic()
                if now - last[0] > 0.5 or progress.step == progress.steps:
                    last[0] = now
                    conn.send(("step", worker_id, progress))

            for outcome in executor.run(task, step):
                conn.send(("end", worker_id, outcome))
    except NstbatchError as e:
        conn.send(("fatal", worker_id, e))
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone: nothing to report to
    finally:
        try:
            conn.send(("exit", worker_id, None))
        except (OSError, EOFError):
            pass
