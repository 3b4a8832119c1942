"""``run_manifest(options)``: plan, then run every job of this shard that is not done, on worker
processes, recording every attempt. The parent writes the report, kill records, summary and
digest index; the process that runs a job writes its output and done record (``ledger``'s
table of who writes what)."""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

from .shards import Shard
from ..io.manifest import Job, Problem
from ..errors import NstbatchError
from ..io.webdataset import is_member
from .frames import FrameStore
from .ledger import JobState, LineStatus, Outcome, RunSummary, StateDir, state_root
from .options import RunOptions
from .outputs import Outputs
from .plan import Plan, Planned, batches, plan_run
from .pool import Stop, WorkerPool, run_here

__all__ = ["run_manifest", "RunEvents"]


class RunEvents:
    """What a face hears of a run. Jobs are numbered as they start and as they finish, each
    once, in that order (with several workers, not in manifest order)."""

    def planned(self, plan: Plan) -> None: ...
    def invalid(self, problems: list[Problem]) -> None: ...
    def notice(self, message: str) -> None: ...
    def job_started(self, job: Job, number: int, count: int) -> None: ...
    def step(self, progress) -> None: ...
    def job_finished(self, outcome: Outcome, number: int, count: int) -> None: ...
    def more(self, count: int) -> None: ...  # the run took on other shards' jobs: ``count`` in all


# Outcomes after which a job is settled (``JobState.is_settled``): done, or failed for good.
SETTLING = (LineStatus.DONE, LineStatus.FAILED, LineStatus.INVALID, LineStatus.QUARANTINED)


class _Run:
    """Between the workers and the ledger: every start and outcome is recorded, counted and
    told to the face."""

    def __init__(self, state: StateDir, summary: RunSummary, events: RunEvents, count: int,
                 outputs: Outputs | None = None):
        self.state, self.summary, self.events, self.count = state, summary, events, count
        self.outputs = outputs  # output shards to pack, metadata to keep current
        self.started = self.finished = 0
        self.owners: dict[str, str] = {}  # jobs of other shards this run took on -> their shard
        self.jobs: dict[str, Job] = {}  # every job this run took on, its own and others'
        self.forced: set[str] = set()  # ...those it runs whatever their standing (--force)
        self.settled: set[str] = set()  # ...those it ended done or failed
        self.elsewhere: set[str] = set()  # ...and those it found another run had

    def taking(self, items: list[Planned]) -> None:
        self.jobs.update((item.job.id, item.job) for item in items)
        self.forced.update(item.job.id for item in items if item.force)

    def helping(self, items: list[Planned], shards: int) -> None:
        self.taking(items)
        for item in items:
            self.owners[item.job.id] = Shard.owner(item.job.id, shards).tag
        self.count += len(items)
        self.events.more(self.count)

    def notice(self, message: str) -> None:
        self.events.notice(message)

    def step(self, progress) -> None:
        self.events.step(progress)

    def job_started(self, job: Job) -> None:
        self.state.log.start(job)
        self.started += 1
        self.events.job_started(job, self.started, self.count)

    def left(self, claim_stale: float) -> int:
        """The jobs this run took on that are still to do, as ``StateDir.standing`` says (not
        settled: pending, interrupted, or a claim left behind; a forced job, whose done record
        may be an earlier run's, until this run ended it done or failed), less those another
        run has."""
        hasher, latest = self.state.job_hasher(), self.state.log.latest()
        return sum(job_id in self.forced and job_id not in self.settled
                   or not self.state.standing(job, hasher, claim_stale, latest).status.is_settled
                   for job_id, job in self.jobs.items() if job_id not in self.elsewhere)

    def record(self, outcome: Outcome) -> None:
        if outcome.joined:
            return  # shots of a clip that another run or worker owns and records
        owner = self.owners.get(outcome.job.id)
        if outcome.status == LineStatus.ELSEWHERE:
            self.elsewhere.add(outcome.job.id)
        if owner and outcome.status == LineStatus.ELSEWHERE:
            self.count -= 1  # its own shard (or another helper) had it after all: not ours to count
            self.events.more(self.count)
            return
        line = self.state.log.record(outcome, owner)
        if outcome.status in SETTLING:
            self.settled.add(outcome.job.id)
        if outcome.status == LineStatus.DONE:
            self.state.kills.forget(outcome.job)  # a job done forgets the kills it caused
        self.summary.add(outcome, line)
        self.summary.helped += bool(owner) and outcome.status == LineStatus.DONE
        self.finished += 1
        self.events.job_finished(outcome, self.finished, self.count)
        if self.outputs:
            self.outputs.finished(outcome.job, outcome.status)


@contextmanager
def stop_on(signals):
    """A ``Stop`` that the stop signals and Ctrl-C set while the run lasts (in the main thread)."""
    stop = Stop(signals[0] if signals else signal.SIGTERM)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (*signals, signal.SIGINT):
            previous[signum] = signal.signal(signum, stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _copy_sidecars(plan: Plan, summary: RunSummary, events: RunEvents) -> None:
    """Dataset entries' sidecar files, before the jobs (cheap, and labels stay beside images)."""
    from ..io.dataset import copy_file

    for copy in plan.copies:
        if is_member(copy.target):
            continue  # a sample's sidecar in an output shard: packed with it
        try:
            summary.copied += copy_file(copy)
        except (OSError, NstbatchError) as e:
            summary.copy_failed += 1
            events.notice(f"{copy.where}: cannot copy {copy.source} to {copy.target}"
                          f" ({getattr(e, 'strerror', None) or e}); the images go on")


def _assemble(outputs: Outputs, summary: RunSummary, events: RunEvents) -> None:
    """The last pass over output shards and metadata files (``outputs``)."""
    result = outputs.finish()
    summary.shards_packed, summary.pack_failed = result.packed, len(result.failures)
    for failure in result.failures:
        events.notice(failure)


def _execute(options: RunOptions, state: StateDir, devices: list[str], tasks, run: _Run, stop: Stop) -> bool:
    """Run ``tasks`` on worker processes (or here); True if Ctrl-C interrupted them."""
    if not tasks:
        return False
    if options.isolate:
        return WorkerPool(options, state, devices, run, run.record, stop).run(tasks)
    return run_here(options, state, devices[0], tasks, run, run.record, stop)


# How often a helping shard looks again at jobs that other runs hold (seconds).
HELP_POLL = 2.0
# How many times a helping shard joins one clip (each time taking every shot free then).
JOIN_TRIES = 20


def _help(options: RunOptions, state: StateDir, devices: list[str], plan: Plan, size: int, run: _Run,
          stop: Stop) -> bool:
    """Once its own share is done, a shard of an array takes the other shards' pending jobs
    that nobody holds (a live claim), in ``plan.others``'s order, through the same claims,
    so each job still runs once. Jobs other runs hold are looked at again every few seconds
    until they are done, fail, or their claim goes stale (a killed or preempted owner): then
    they are taken over, from their checkpoint where there is one. Ends when every job of
    the manifest is done or failed; True if Ctrl-C interrupted it. A clip another run holds
    is joined where it has shots nobody holds (``frames.FrameStore.open_shots``): their frames
    are stylized here, and the owner writes the clip. So is a clip of this shard's own that a
    helper took before this shard came to it (only joined: its holder finishes it)."""
    hasher = state.job_hasher()
    own = {item.job.id: item.job for item in plan.to_run if item.job.clip}
    remaining = plan.others + list(own.values())
    joined: dict[str, int] = {}  # clips joined, and how often: a clip whose shots fail here is left
    while remaining and not stop.requested:
        todo: list[Planned] = []
        held: list[Job] = []
        latest = state.log.latest()  # once a round: only the lines appended since the last
        for job in remaining:
            standing = state.standing(job, hasher, options.claim_stale, latest)
            if standing.status.is_settled:
                continue  # (a job whose inputs cannot be read: its own shard reports it)
            if (standing.status == JobState.RUNNING and job.clip and joined.get(job.id, 0) < JOIN_TRIES
                    and FrameStore(state.frames_path(job.id, standing.hash)).open_shots(options.claim_stale)):
                joined[job.id] = joined.get(job.id, 0) + 1
                todo.append(Planned(job, standing, join=True))
            elif job.id in own:
                continue
            elif standing.status == JobState.RUNNING:
                held.append(job)
            else:
                todo.append(Planned(job, standing))
        remaining = [item.job for item in todo] + held
        if todo:
            run.helping([item for item in todo if not item.join], options.shard.count)
            if _execute(options, state, devices, batches(todo, size, state), run, stop):
                return True
            continue
        deadline = time.monotonic() + HELP_POLL
        while held and not stop.requested and time.monotonic() < deadline:
            time.sleep(0.1)
    return False


def _devices(options: RunOptions) -> list[str]:
    """One device per worker, and for ONNX targets the providers, refused before any work."""
    from ..engine.devices import worker_devices

    devices = worker_devices(options.devices, options.workers)
    if options.targets == "onnx":
        from ..styles.onnx_backend import check_providers

        check_providers(options.providers, options.allow_fallback)
    return devices


def _names_a_gpu(options: RunOptions) -> bool:
    plain = ("auto", "cpu")
    return ((options.devices or "auto").strip().lower() not in plain
            or options.targets == "onnx" and (options.providers or "auto").strip().lower() not in plain)


def run_manifest(options: RunOptions, events: RunEvents | None = None) -> tuple[RunSummary, Plan]:
    """Run every job of this shard of the manifest that is not done. A failing job is
    recorded and the rest go on; outputs are atomic; a stop signal or Ctrl-C checkpoints the
    jobs in progress, and a run so stopped with jobs left says so (``RunSummary.exit_code``: 75,
    or 130 for Ctrl-C); a job that killed its worker twice is skipped until it changes.
    A shard of an array that finishes its own jobs helps with the others' (``steal``)."""
    events = events or RunEvents()
    root = state_root(options.manifest, options.state_dir, dict(options.overrides))
    state = StateDir(root, options.shard.tag)
    plan = plan_run(options.manifest, state, shard=options.shard, force=options.force,
                    skip_invalid=options.skip_invalid, overrides=dict(options.overrides))
    summary = RunSummary(total=len(plan.jobs), skipped=plan.done, shard=str(options.shard),
                         invalid=len({p.job_id or p.where for p in plan.problems}))
    if plan.problems:
        events.invalid(plan.problems)
    if options.overrides:
        from ..io.manifest import trial_folder

        events.notice(f"a trial ({', '.join(f'{k}={v}' for k, v in options.overrides)}): its outputs go under"
                      f" {trial_folder(options.manifest, dict(options.overrides))}, its records apart; the"
                      " manifest's own outputs and records are untouched (status and report take the same --set)")
    if options.dry_run:
        if _names_a_gpu(options):  # a dry run refuses the GPUs a run would (torch only then)
            _devices(options)
        return summary, plan
    devices = _devices(options)
    state.save_hashes()  # before any job: a run killed in its first job still restarts fast
    for problem in plan.problems:  # --skip-invalid: each skipped row's reason, on record
        state.log.invalid(problem)
    for item in plan.quarantined:
        summary.quarantined += 1
        events.notice(f"skipped {item.job.id} ({item.job.where}): {item.standing.why}")
    if options.force:
        for item in plan.jobs:
            state.kills.forget(item.job)
    _copy_sidecars(plan, summary, events)
    to_run = plan.to_run
    size = options.batch if options.batch != "auto" else (16 if devices[0].startswith("cuda") else 1)
    tasks = batches(to_run, size, state)
    if options.isolate and len(devices) > 1:  # the other workers join a clip's shots once theirs are done
        tasks += [[Planned(item.job, item.standing, join=True)] for item in to_run if item.job.clip
                  for _ in devices[1:]]
    events.planned(plan)
    state.ensure()
    summary.workers = len(devices)
    outputs = Outputs(state, plan.valid, plan.valid_copies, options.claim_stale)
    run = _Run(state, summary, events, len(to_run), outputs)
    run.taking(to_run)
    started = time.monotonic()
    with stop_on(options.stop_signals) as stop:
        interrupted = _execute(options, state, devices, tasks, run, stop)
        helpable = plan.others or any(item.job.clip for item in to_run)  # (a clip of ours another task took)
        if options.steal and helpable and not interrupted and not stop.requested:
            interrupted = _help(options, state, devices, plan, size, run, stop)
    if outputs and not interrupted and stop.signal != signal.SIGINT:
        _assemble(outputs, summary, events)
    summary.seconds = time.monotonic() - started
    state.save_hashes()  # what helping hashed
    if stop.requested:
        # however the stop met the jobs (one in flight, between two, or one just finished),
        # a job the table says is not settled is work left: the exit code says so
        # (RunSummary.exit_code)
        summary.left = run.left(options.claim_stale)
        summary.stopped_by = signal.Signals(stop.signal).name if stop.signal else "SIGTERM"
    state.log.write_summary(summary)
    if interrupted:
        raise KeyboardInterrupt
    return summary, plan
