"""``run_manifest(options)``: plan, then run every job of this shard that is not done, on worker
processes, recording every attempt. The parent alone writes the ledger."""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..manifest import Job, Problem
from .ledger import JobStatus, Outcome, RunSummary, StateDir, default_state_dir
from .options import RunOptions
from .plan import Plan, batches, plan_run
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


class _Run:
    """Between the workers and the ledger: every start and outcome is recorded, counted and
    told to the face."""

    def __init__(self, state: StateDir, summary: RunSummary, events: RunEvents, count: int):
        self.state, self.summary, self.events, self.count = state, summary, events, count
        self.started = self.finished = 0

    def notice(self, message: str) -> None:
        self.events.notice(message)

    def step(self, progress) -> None:
        self.events.step(progress)

    def job_started(self, job: Job) -> None:
        self.state.record_start(job)
        self.started += 1
        self.events.job_started(job, self.started, self.count)

    def record(self, outcome: Outcome) -> None:
        self.state.record(outcome)
        self.summary.add(outcome)
        self.finished += 1
        self.events.job_finished(outcome, self.finished, self.count)


@contextmanager
def _stop_on(signals):
    stop = Stop()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            previous[signum] = signal.signal(signum, stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _copy_sidecars(plan: Plan, summary: RunSummary, events: RunEvents) -> None:
    """Dataset entries' sidecar files, before the jobs (cheap, and labels stay beside images)."""
    from ..dataset import copy_file

    for copy in plan.copies:
        try:
            summary.copied += copy_file(copy)
        except OSError as e:
            summary.copy_failed += 1
            events.notice(f"{copy.where}: cannot copy {copy.source} to {copy.target}"
                          f" ({e.strerror or e}); the images go on")


def run_manifest(options: RunOptions, events: RunEvents | None = None) -> tuple[RunSummary, Plan]:
    """Run every job of this shard of the manifest that is not done. A failing job is
    recorded and the rest go on; outputs are atomic; a stop signal checkpoints the jobs in
    progress (exit code 75); a job that killed its worker twice is skipped until it changes."""
    events = events or RunEvents()
    root = Path(options.state_dir) if options.state_dir else default_state_dir(options.manifest)
    state = StateDir(root, options.shard.tag)
    plan = plan_run(options.manifest, state, shard=options.shard, force=options.force,
                    skip_invalid=options.skip_invalid)
    summary = RunSummary(total=len(plan.jobs), skipped=plan.done, shard=str(options.shard),
                         invalid=len({p.job_id or p.where for p in plan.problems}))
    if plan.problems:
        events.invalid(plan.problems)
    if options.dry_run:
        return summary, plan
    for problem in plan.problems:  # --skip-invalid: each skipped row's reason, on record
        state.append_report({"id": problem.job_id, "where": problem.where, "status": JobStatus.INVALID,
                             "error": problem.message, "shard": state.tag or None})
    for item in plan.quarantined:
        summary.quarantined += 1
        events.notice(f"skipped {item.job.id} ({item.job.where}): {item.quarantined}")
    if options.force:
        for item in plan.jobs:
            state.forget_kills(item.job)
    _copy_sidecars(plan, summary, events)
    from ..devices import worker_devices

    devices = worker_devices(options.devices, options.workers)
    if options.targets == "onnx":
        from ..onnx_backend import check_providers

        check_providers(options.providers, options.allow_fallback)
    to_run = plan.to_run
    size = options.batch if options.batch != "auto" else (16 if devices[0].startswith("cuda") else 1)
    tasks = batches(to_run, size, state)
    events.planned(plan)
    state.ensure()
    summary.workers = len(devices)
    run = _Run(state, summary, events, len(to_run))
    started = time.monotonic()
    with _stop_on(options.stop_signals) as stop:
        if options.isolate:
            interrupted = WorkerPool(options, state, devices, run, run.record, stop).run(tasks)
        else:
            interrupted = run_here(options, state, devices[0], tasks, run, run.record, stop)
    summary.seconds = time.monotonic() - started
    state.write_summary(summary)
    if interrupted:
        raise KeyboardInterrupt
    return summary, plan
