"""Where jobs run: worker processes (one per device; by default even for one device), or this
process. The parent hands each idle worker its next task over the worker's own pipe and writes
the report lines and kill records (a worker writes its jobs' outputs and done records: the
ledger's table of who writes what); a worker that dies — killed by the kernel's out-of-memory killer, a
crash in native code — ends only the attempt it was making: its jobs fail with the signal and
a likely cause, the kill is counted (two quarantine a job), and a fresh worker goes on.

A pipe per worker, not a shared queue: a worker killed in the middle of a write can then
corrupt only its own pipe, never the messages of the others.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.connection import wait
from typing import Callable, Protocol

from ..environment import usable_cpus
from ..errors import NstbatchError
from ..io.manifest import Job
from .ledger import LineStatus, Outcome, StateDir
from .options import RunOptions
from .plan import Planned


class Msg(str, Enum):
    """Worker → parent. (Parent → worker: a task, a list of ``Planned``; or None: leave.)"""

    READY = "ready"  # idle: send the next task
    START = "start"  # a job of the task began (payload: its Planned)
    STEP = "step"  # progress (payload: optimize.Progress), at most twice a second
    END = "end"  # a job's outcome (payload: Outcome)
    NOTICE = "notice"  # a line for the user
    FATAL = "fatal"  # an error that ends the run for every job (payload: NstbatchError)
    EXIT = "exit"  # the worker leaves


class Events(Protocol):
    def notice(self, message: str) -> None: ...
    def job_started(self, job: Job) -> None: ...
    def step(self, progress) -> None: ...


# --- the worker's side ----------------------------------------------------------------------

def _stop_with_parent(signum: int) -> None:
    """Have the kernel send ``signum`` to this worker when its parent dies (Linux), so that a
    run killed with -9 does not leave a worker going on alone, holding its jobs' claims: the
    worker checkpoints at its next step and leaves."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the worker notices at its next message instead
    if os.getppid() == 1:  # the parent died before the request was made
        os.kill(os.getpid(), signum)


def _prepare_process(options: RunOptions, device: str, threads: int | None) -> None:
    """Process-wide settings, made once where the jobs run (a worker; or the CLI's process
    with ``--in-process``, which made the same settings already)."""
    import torch

    from ..environment import lift_pillow_limit, quiet_onnxruntime_logs

    lift_pillow_limit()
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # one image size per job: autotuning pays
    if options.targets == "onnx":
        quiet_onnxruntime_logs()
    if options.worker_setup is not None:
        options.worker_setup()


def worker_main(options: RunOptions, state_root, device: str, threads: int | None, conn,
                worker_id: int, peers: int = 1) -> None:
    """A worker process: one executor (VGG-19 loaded once), one task at a time. A stop signal
    lets the current step finish and checkpoints the jobs in progress."""
    import time

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    for signum in options.stop_signals:
        signal.signal(signum, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into a stop signal
    _stop_with_parent(options.stop_signals[0] if options.stop_signals else signal.SIGKILL)
    try:
        _prepare_process(options, device, threads)
        from .executor import JobExecutor

        executor = JobExecutor(options, state_root, device, notice=lambda m: conn.send((Msg.NOTICE, m)),
                               should_stop=lambda: stopping, peers=peers)
        last = [0.0]

        def step(progress) -> None:
            now = time.monotonic()
            if now - last[0] > 0.5 or progress.step == progress.steps:
                last[0] = now
                conn.send((Msg.STEP, progress))

        while not stopping:
            conn.send((Msg.READY, None))
            task = conn.recv()
            if task is None:
                break
            for outcome in executor.run(task, step, lambda item: conn.send((Msg.START, item))):
                conn.send((Msg.END, outcome))
    except NstbatchError as e:
        conn.send((Msg.FATAL, e))
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone: nothing to report to
    finally:
        try:
            conn.send((Msg.EXIT, None))
        except (OSError, EOFError):
            pass


# --- the parent's side ------------------------------------------------------------------------

def likely_cause(exitcode: int | None) -> str:
    """What a worker's end says about why it ended."""
    if exitcode is None or exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        return f"was killed by signal {-exitcode}"
    causes = {"SIGKILL": "likely the kernel's out-of-memory killer (or a kill -9)",
              "SIGSEGV": "a crash in native code", "SIGBUS": "a crash in native code",
              "SIGABRT": "a native library aborted", "SIGILL": "an instruction this CPU lacks"}
    return f"was killed by {name}" + (f": {causes[name]}" if name in causes else "")


@dataclass
class _Worker:
    process: object
    conn: object
    device: str
    task: list[Planned] = field(default_factory=list)  # sent to it, not yet ended
    started: set[str] = field(default_factory=set)  # ids of the task's jobs that began


class Stop:
    """Set by a stop signal or the first Ctrl-C in the parent; forwards it to the worker
    processes (Ctrl-C as ``forward_as``: workers ignore SIGINT) and remembers the first
    signal, which decides the run's exit code. A second Ctrl-C interrupts at once."""

    def __init__(self, forward_as: int = signal.SIGTERM):
        self.requested = False
        self.signal: int | None = None  # the first signal that asked for the stop
        self.forward_as = forward_as
        self.pids: list[int] = []

    def __call__(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt  # Ctrl-C again: stop now (the workers still checkpoint)
        self.requested = True
        self.signal = self.signal or signum
        self.forward(self.forward_as if signum == signal.SIGINT else signum)

    def forward(self, signum: int) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


class WorkerPool:
    """Runs tasks on worker processes, one per entry of ``devices``; ``record`` receives every
    outcome in the parent."""

    def __init__(self, options: RunOptions, state: StateDir, devices: list[str], events: Events,
                 record: Callable[[Outcome], None], stop: Stop):
        self.options, self.state, self.devices = options, state, devices
        self.events, self.record, self.stop = events, record, stop
        self.context = multiprocessing.get_context("spawn")  # no fork of a process holding CUDA or threads
        self.cpu_workers = sum(d == "cpu" for d in devices)
        self.threads = max(1, usable_cpus() // self.cpu_workers) if self.cpu_workers else None
        self.workers: dict[int, _Worker] = {}
        self.pending: list[list[Planned]] = []
        self.fatal: NstbatchError | None = None
        self.started = 0  # workers started so far: the next one's id

    def _start(self, device: str) -> None:
        wid = self.started
        self.started += 1
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=worker_main, name=f"nstbatch-worker-{wid}", daemon=True,
            args=(self.options, self.state.root, device, self.threads if device == "cpu" else None,
                  child_end, wid, self.cpu_workers if device == "cpu" else 1))
        process.start()
        child_end.close()
        self.workers[wid] = _Worker(process, parent_end, device)
        self.stop.pids = [w.process.pid for w in self.workers.values()]

    def _lost(self, wid: int) -> None:
        """A worker whose process ended, or whose pipe broke, while it held jobs."""
        worker = self.workers.pop(wid)
        worker.process.join(timeout=5)
        cause = likely_cause(worker.process.exitcode)
        waiting = [item for item in worker.task if item.job.id not in worker.started and not item.join]
        if waiting:  # handed over but never begun: not theirs to answer for (a join is dropped: the
            # owner of its clip takes over the shot it held once that claim is stale)
            self.pending.append(waiting)
        for item in worker.task:
            if item.job.id not in worker.started:
                continue
            error = f"worker on {worker.device} {cause} during this job"
            quarantine = self.state.kills.add(item.job, item.hash, cause) if item.hash else None
            self.record(Outcome(item.job, LineStatus.QUARANTINED if quarantine else LineStatus.FAILED,
                                error=quarantine or error, device=worker.device))
        if self.pending and not self.stop.requested:
            self.events.notice(f"worker {wid} on {worker.device} {cause}; starting a new one")
            self._start(worker.device)

    def _receive(self, wid: int) -> bool:
        """Act on one message of worker ``wid``; False when its pipe is torn or closed."""
        worker = self.workers[wid]
        try:
            kind, payload = worker.conn.recv()
        except Exception:  # noqa: BLE001 - EOF, or a message torn by a killed worker
            return False
        if kind == Msg.START:
            worker.started.add(payload.job.id)
            self.events.job_started(payload.job)
        elif kind == Msg.STEP:
            self.events.step(payload)
        elif kind == Msg.END:
            worker.task = [item for item in worker.task if item.job.id != payload.job.id]
            self.record(payload)
        elif kind == Msg.NOTICE:
            self.events.notice(payload)
        elif kind == Msg.READY:
            task = None if self.stop.requested or not self.pending else self.pending.pop()
            worker.task, worker.started = list(task or []), set()
            try:
                worker.conn.send(task)
            except OSError:
                return False
        elif kind == Msg.FATAL:
            self.fatal, self.stop.requested = payload, True
            self.stop.forward(signal.SIGTERM)
        elif kind == Msg.EXIT:
            self.workers.pop(wid).process.join(timeout=10)
        return True

    def _settle(self, wid: int) -> None:
        """The process ended: read what it said, then account for what it held."""
        worker = self.workers[wid]
        while wid in self.workers and worker.conn.poll() and self._receive(wid):
            pass
        if wid in self.workers:
            if worker.task or worker.process.exitcode not in (0, None):
                self._lost(wid)
            else:
                self.workers.pop(wid)

    def run(self, tasks: list[list[Planned]]) -> bool:
        """Run every task; True if Ctrl-C interrupted it. Raises a worker's fatal error."""
        self.pending = list(reversed(tasks))  # pop() from the end hands tasks out in order
        for device in self.devices:
            self._start(device)
        interrupted = False
        while self.workers:
            by_conn = {w.conn: wid for wid, w in self.workers.items()}
            by_sentinel = {w.process.sentinel: wid for wid, w in self.workers.items()}
            try:
                ready = wait(list(by_conn) + list(by_sentinel), timeout=1.0)
            except KeyboardInterrupt:
                # Ctrl-C: the workers ignore SIGINT; ask them to checkpoint and stop.
                interrupted, self.stop.requested = True, True
                self.stop.forward(signal.SIGTERM)
                continue
            for handle in ready:
                wid = by_sentinel.get(handle, by_conn.get(handle))
                if wid not in self.workers:
                    continue
                if handle in by_sentinel:
                    self._settle(wid)
                elif not self._receive(wid):
                    self._lost(wid)
        if self.fatal is not None:
            raise self.fatal
        return interrupted


def run_here(options: RunOptions, state: StateDir, device: str, tasks: list[list[Planned]], events: Events,
             record: Callable[[Outcome], None], stop: Stop) -> bool:
    """The same, in this process (``isolate=False``): no protection from crashes, for
    debuggers and profilers. True if Ctrl-C interrupted it."""
    from .executor import JobExecutor

    _prepare_process(options, device, None)
    executor = JobExecutor(options, state.root, device, notice=events.notice, should_stop=lambda: stop.requested)
    for task in tasks:
        if stop.requested:
            break
        try:
            outcomes = executor.run(task, events.step, lambda item: events.job_started(item.job))
        except KeyboardInterrupt:
            for item in task:
                record(Outcome(item.job, LineStatus.INTERRUPTED, error="interrupted (Ctrl-C)", device=device))
            return True
        for outcome in outcomes:
            record(outcome)
    return False
