"""Running a manifest: validate, plan, take this shard, run the jobs on one or more workers,
and record every attempt. The parent alone writes the report, the progress and the summary."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .distributed import WHOLE, Shard, shard_of
from .errors import NstbatchError, UsageError
from .execute import ExecutorConfig, JobExecutor, Outcome, Planned, stylize_file, worker_main
from .images import long_side_size, probe_image
from .manifest import Job, Manifest, Problem, read_manifest
from .onnx_backend import check_providers
from .optimize import Progress
from .state import FileHashes, StateDir, checkpoint_path, default_state_dir, params_hash, weights_identity
from .validate import validate

__all__ = ["run_manifest", "plan_shards", "stylize_file", "EXIT_PREEMPTED"]

# Exit code of a run stopped by a preemption signal after checkpointing (BSD EX_TEMPFAIL):
# job scripts requeue on it.
EXIT_PREEMPTED = 75
DEFAULT_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class InvalidManifest(UsageError):
    """The manifest has problems and ``--skip-invalid`` was not given."""

    def __init__(self, manifest: Path, problems: list[Problem]):
        super().__init__(f"{manifest}: {len(problems)} problem(s); nothing was run",
                         hint="fix them (nstbatch validate lists them), or pass --skip-invalid")
        self.problems = problems


@dataclass
class RunSummary:
    total: int = 0
    done: int = 0
    skipped: int = 0  # already done before this run
    failed: int = 0
    invalid: int = 0
    preempted: int = 0  # checkpointed on a stop signal; the next run resumes them
    elsewhere: int = 0  # claimed or finished by another run meanwhile
    seconds: float = 0.0
    style_targets_computed: int = 0
    style_targets_reused: int = 0  # from the cache instead of computed
    shard: str = "all jobs"
    workers: int = 1

    @property
    def images_per_hour(self) -> float:
        return 3600.0 * self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.preempted:
            return EXIT_PREEMPTED
        return 1 if self.failed or self.invalid else 0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_hour": round(self.images_per_hour, 2)}


class RunEvents:
    """What a face hears of a run (the engine's callback, and jobs starting and ending)."""

    def planned(self, to_run: list[Planned], skipped: int) -> None: ...
    def invalid(self, problems: list[Problem]) -> None: ...
    def notice(self, message: str) -> None: ...
    def job_started(self, job: Job, index: int, count: int) -> None: ...
    def step(self, progress: Progress) -> None: ...
    def job_finished(self, outcome: Outcome, index: int, count: int) -> None: ...


class _StartsOnRecord:
    """The run's events, with a 'started' report line for each attempt, so that the report
    accounts for attempts that never finish (a killed run)."""

    def __init__(self, events: RunEvents, state: StateDir, tag: str):
        self.events, self.state, self.tag = events, state, tag

    def __getattr__(self, name):
        return getattr(self.events, name)

    def job_started(self, job: Job, index: int, count: int) -> None:
        self.state.append_report({"id": job.id, "where": job.where, "status": "started",
                                  "shard": self.tag or None})
        self.events.job_started(job, index, count)


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


def resolve_workers(devices: str = "auto", workers: int | None = None) -> list[str]:
    """One device per worker: ``auto`` (every visible GPU, else the CPU; under torchrun the
    GPU of ``LOCAL_RANK``), ``all`` (every GPU),
    ``cpu``, or ``cuda:0,cuda:1`` (``cuda`` alone is ``cuda:0``). ``workers`` splits the CPU among that many workers."""
    spec = (devices or "auto").strip().lower()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    if spec == "auto":
        local_rank = os.environ.get("LOCAL_RANK", "")
        if gpus and local_rank.isdigit():  # under torchrun: one process per GPU already
            return [f"cuda:{int(local_rank) % gpus}"]
        spec = "all" if gpus else "cpu"
    if spec == "cpu":
        return ["cpu"] * (workers or 1)
    if workers is not None:
        raise UsageError("--workers splits the CPU; with GPUs there is one worker per device",
                         hint="list devices instead: --devices cuda:0,cuda:1")
    if spec == "all":
        if not gpus:
            raise UsageError("--devices all: torch sees no GPU", hint="use --devices auto or cpu")
        return [f"cuda:{i}" for i in range(gpus)]
    names = ["cuda:0" if d.strip() == "cuda" else d.strip() for d in spec.split(",") if d.strip()]
    for name in names:
        index = name.partition(":")[2]
        if not (name.startswith("cuda:") and index.isdigit()) or int(index) >= gpus:
            raise UsageError(f"--devices: {name!r} is not a visible GPU ({gpus} visible)",
                             hint="use auto, all, cpu, or cuda:N,…")
    return names


class _Stop:
    """Set by a stop signal; forwards it to worker processes when there are any."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self.pids: list[int] = []

    def __call__(self, signum, frame) -> None:
        self.requested, self.signum = True, signum
        self.forward(signum)

    def forward(self, signum: int) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


@contextmanager
def _stop_on(signals):
    stop = _Stop()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            previous[signum] = signal.signal(signum, stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_manifest(manifest_path: str | os.PathLike, *, state_dir: str | os.PathLike | None = None,
                 devices: str = "auto", workers: int | None = None, force: bool = False,
                 skip_invalid: bool = False, dry_run: bool = False, events: RunEvents | None = None,
                 targets: str = "onnx", cache_dir: str | os.PathLike | None = None,
                 providers: str = "auto", allow_fallback: bool = False, shard: Shard = WHOLE,
                 checkpoint_every: int = 0, stop_signals=DEFAULT_STOP_SIGNALS,
                 claim_stale: float = 300.0, batch: str | int = 1,
                 compile: bool = False,
                 snapshot_dir: str | os.PathLike | None = None) -> tuple[RunSummary, list[Planned]]:
    """Run every job of this shard of a manifest that is not done. A failing job is recorded
    and the rest go on; outputs are atomic; a stop signal checkpoints the jobs in progress."""
    manifest_path = Path(manifest_path)
    events = events or RunEvents()
    _, problems, jobs = load_checked(manifest_path, skip_invalid)
    if shard.count > 1:
        jobs = [job for job in jobs if shard_of(job.id, shard.count) == shard.index]
    state = StateDir(Path(state_dir) if state_dir else default_state_dir(manifest_path), shard.tag)
    planned = plan(jobs, state, force)
    to_run = [p for p in planned if p.reason is not None]
    if shard.count > 1:  # each shard speaks for its own jobs; file-level problems go to shard 0
        problems = [p for p in problems if (shard_of(p.job_id, shard.count) == shard.index if p.job_id
                                            else shard.index == 0)]
    summary = RunSummary(total=len(jobs), skipped=len(planned) - len(to_run), shard=str(shard),
                         invalid=len({p.job_id or p.where for p in problems}))
    if problems:
        events.invalid(problems)
    if dry_run:
        return summary, planned
    for problem in problems:  # --skip-invalid: each skipped row's reason, on record
        state.append_report({"id": problem.job_id, "where": problem.where, "status": "invalid",
                             "error": problem.message, "shard": shard.tag or None})
    worker_devices = resolve_workers(devices, workers)
    if targets == "onnx":
        check_providers(providers, allow_fallback)
    config = ExecutorConfig(state.root, worker_devices[0], targets, str(cache_dir) if cache_dir else None,
                            providers, allow_fallback, checkpoint_every, claim_stale, compile=compile,
                            snapshot_dir=str(snapshot_dir) if snapshot_dir else None)
    tasks = group_batches(to_run, resolve_batch(batch, worker_devices[0]), state)
    events.planned(to_run, summary.skipped)
    state.ensure()
    summary.workers = len(worker_devices)
    started = time.monotonic()

    def record(outcome: Outcome, index: int) -> None:
        if outcome.status != "elsewhere":
            line = {"id": outcome.job.id, "where": outcome.job.where, "status": outcome.status,
                    "output": str(outcome.job.output), "seconds": round(outcome.seconds, 3),
                    "steps": outcome.job.params.steps, "error": outcome.error, "shard": shard.tag or None,
                    "device": outcome.device}
            if outcome.final is not None:
                line["costs"] = asdict(outcome.final)
            if outcome.note:
                line["note"] = outcome.note
            if outcome.sources:
                line["style_targets"] = list(outcome.sources)  # computed | cache | memory
            if outcome.resumed_from is not None:
                line["resumed_from_step"] = outcome.resumed_from
            state.append_report(line)
        summary.done += outcome.status == "done"
        summary.failed += outcome.status == "failed"
        summary.preempted += outcome.status == "preempted"
        summary.elsewhere += outcome.status == "elsewhere"
        summary.style_targets_computed += outcome.sources.count("computed")
        summary.style_targets_reused += outcome.sources.count("cache")
        events.job_finished(outcome, index, len(to_run))

    with _stop_on(stop_signals) as stop:
        if len(worker_devices) == 1:
            _run_inline(config, tasks, len(to_run), _StartsOnRecord(events, state, shard.tag), record, stop)
        else:
            _run_pool(config, worker_devices, tasks, len(to_run), _StartsOnRecord(events, state, shard.tag),
                      record, stop, stop_signals)
    summary.seconds = time.monotonic() - started
    name = f"summary-{shard.tag}.json" if shard.tag else "summary.json"
    state.write_json(state.root / name, {**summary.to_dict(), "finished": time.time()})
    return summary, planned


def resolve_batch(batch: str | int, device: str) -> int:
    """``--batch N``, or ``auto``: 1 on the CPU (a batch there saves nothing per image), else
    as many 512 px images as fit in 70 % of the GPU's free memory at ~1.5 GiB each, at most 16."""
    if str(batch) != "auto":
        try:
            size = int(batch)
        except ValueError:
            raise UsageError(f"--batch {batch!r}: expected a number or auto") from None
        if size < 1:
            raise UsageError("--batch must be at least 1")
        return size
    if not device.startswith("cuda"):
        return 1
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(16, int(0.7 * free / (1.5 * 2**30))))


def group_batches(to_run: list[Planned], size: int, state: StateDir) -> list:
    """Tasks for the workers: single jobs, or lists of up to ``size`` Adam jobs that share
    styles, parameters and content size (read from the image headers). A job with a
    checkpoint resumes alone. L-BFGS is never batched: its line search couples the images; nor
    is ``preserve_color: histogram``, whose style targets depend on each job's content."""
    if size <= 1:
        return list(to_run)
    groups: dict[tuple, list[Planned]] = {}
    order: list = []
    for item in to_run:
        job = item.job
        key = None
        if (item.hash is not None and job.params.optimizer == "adam" and job.params.preserve_color != "histogram"
                and not checkpoint_path(state, job).exists()):
            try:
                info = probe_image(job.content)
                key = (job.styles, job.params.to_json(), *long_side_size(info.width, info.height, job.params.size))
            except NstbatchError:
                key = None
        if key is None:
            order.append(item)
        elif key in groups:
            groups[key].append(item)
        else:
            groups[key] = [item]
            order.append(groups[key])
    tasks = []
    for entry in order:
        if isinstance(entry, list):
            chunks = [entry[i:i + size] for i in range(0, len(entry), size)]
            tasks += [chunk if len(chunk) > 1 else chunk[0] for chunk in chunks]
        else:
            tasks.append(entry)
    return tasks


def _items(task) -> list[Planned]:
    return task if isinstance(task, list) else [task]


def _run_inline(config, tasks, count, events, record, stop) -> None:
    executor = JobExecutor(config, notice=events.notice, should_stop=lambda: stop.requested)
    index = 0
    for task in tasks:
        if stop.requested:
            break
        for item in _items(task):
            index += 1
            events.job_started(item.job, index, count)
        try:
            outcomes = executor.run(task, events.step)
        except KeyboardInterrupt:
            for item in _items(task):
                record(Outcome(item.job, "interrupted", 0.0, error="interrupted (Ctrl-C)"), index)
            raise
        for outcome in outcomes:
            record(outcome, index)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _run_pool(config, worker_devices, tasks_list, count, events, record, stop, stop_signals) -> None:
    """One process per device; the parent hands each idle worker the next task over the
    worker's own pipe. A worker that dies fails the jobs it held and is replaced."""
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")  # no fork of a process holding CUDA or threads
    pending = list(tasks_list)
    pending.reverse()  # pop() from the end hands tasks out in manifest order
    cores = os.cpu_count() or 1
    cpu_workers = sum(d == "cpu" for d in worker_devices)
    workers: dict[int, tuple] = {}  # id -> (process, connection, device)
    current: dict[int, list[Planned]] = {}
    live: set[int] = set()

    def start(device: str) -> None:
        wid = len(workers)
        threads = max(1, cores // cpu_workers) if device == "cpu" else None
        parent_end, child_end = context.Pipe()
        proc = context.Process(target=worker_main, name=f"nstbatch-worker-{wid}", daemon=True,
                               args=(replace(config, device=device, threads=threads), child_end,
                                     wid, tuple(stop_signals)))
        proc.start()
        child_end.close()
        workers[wid], current[wid] = (proc, parent_end, device), []
        live.add(wid)
        stop.pids = [p.pid for p, _, _ in workers.values()]

    def lost(wid: int) -> None:
        """A worker whose process ended or whose pipe broke."""
        proc, conn, device = workers[wid]
        live.discard(wid)
        proc.join(timeout=5)
        for item in current[wid]:
            record(Outcome(item.job, "failed", 0.0,
                           error=f"worker on {device} {_describe_exit(proc.exitcode)} during this job"),
                   started)
        current[wid] = []
        if pending and not stop.requested:
            events.notice(f"worker {wid} on {device} {_describe_exit(proc.exitcode)}; starting a new one")
            start(device)

    for device in worker_devices:
        start(device)
    started = 0
    fatal = None
    interrupted = False

    def receive(wid: int, conn) -> bool:
        """Act on one message of worker ``wid``; False when its pipe is torn or closed."""
        nonlocal started, fatal
        try:
            kind, _, payload = conn.recv()
        except Exception:  # noqa: BLE001 - EOF, or a message torn by a killed worker
            return False
        if kind == "start":
            current[wid].append(payload)
            started += 1
            events.job_started(payload.job, started, count)
        elif kind == "step":
            events.step(payload)
        elif kind == "end":
            current[wid] = [item for item in current[wid] if item.job.id != payload.job.id]
            record(payload, started)
        elif kind == "notice":
            events.notice(payload)
        elif kind == "ready":
            try:
                conn.send(None if stop.requested or not pending else pending.pop())
            except OSError:
                return False
        elif kind == "fatal":
            fatal, stop.requested = payload, True
            stop.forward(signal.SIGTERM)
        elif kind == "exit":
            live.discard(wid)
            workers[wid][0].join(timeout=10)
        return True

    while live:
        by_conn = {workers[w][1]: w for w in live}
        by_sentinel = {workers[w][0].sentinel: w for w in live}
        try:
            ready = wait(list(by_conn) + list(by_sentinel), timeout=1.0)
        except KeyboardInterrupt:
            # Ctrl-C: the workers ignore SIGINT; ask them to checkpoint and stop.
            interrupted, stop.requested = True, True
            stop.forward(signal.SIGTERM)
            continue
        for handle in ready:
            if handle in by_sentinel:  # the process ended: read what it said, then settle it
                wid = by_sentinel[handle]
                conn = workers[wid][1]
                while wid in live and conn.poll() and receive(wid, conn):
                    pass
                if wid in live:
                    if current[wid] or workers[wid][0].exitcode not in (0, None):
                        lost(wid)
                    else:
                        live.discard(wid)
                continue
            wid = by_conn.get(handle)
            if wid is not None and wid in live and not receive(wid, handle):
                lost(wid)
    if fatal is not None:
        raise fatal
    if interrupted:
        raise KeyboardInterrupt


def plan_shards(manifest_path: str | os.PathLike, count: int) -> list[tuple[int, int, float]]:
    """Per shard: (index, jobs, megapixel-steps) — the work each task of an array gets."""
    if count < 1:
        raise UsageError("--shards must be at least 1")
    manifest = read_manifest(manifest_path)
    sizes: dict[Path, tuple[int, int] | None] = {}
    work = [[0, 0.0] for _ in range(count)]
    for job in manifest.jobs:
        if job.content not in sizes:
            try:
                info = probe_image(job.content)
                sizes[job.content] = (info.width, info.height)
            except Exception:  # noqa: BLE001 - validate reports it; the plan just counts
                sizes[job.content] = None
        shard = shard_of(job.id, count)
        work[shard][0] += 1
        if sizes[job.content]:
            w, h = sizes[job.content]
            scale = job.params.size / max(w, h)
            work[shard][1] += (w * scale) * (h * scale) * job.params.steps / 1e6
    return [(i, jobs, mps) for i, (jobs, mps) in enumerate(work)]
