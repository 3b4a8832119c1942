"""Progress as a person sees it: a bar on a terminal, plain lines in a log (cluster jobs)."""
from __future__ import annotations

import sys
import time

import typer


class StepProgress:
    """The callback the engine reports through: a bar on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.task = None
        self.started = time.monotonic()

    def __call__(self, progress) -> None:
        if self.quiet:
            return
        text = f"total {progress.total:.4g}  content {progress.content:.4g}  style {progress.style:.4g}"
        if self.tty:
            if self.bar is None:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                                    TimeRemainingColumn(), TextColumn("{task.description}"),
                                    transient=True)
                self.bar.start()
                self.task = self.bar.add_task(text, total=progress.steps)
            self.bar.update(self.task, completed=progress.step, description=text)
            if progress.step == progress.steps:
                self.bar.stop()
            return
        every = max(1, progress.steps // 10)
        if progress.step % every == 0 or progress.step == progress.steps:
            elapsed = time.monotonic() - self.started
            print(f"step {progress.step}/{progress.steps}  {text}  ({elapsed:.1f}s)",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class RunProgress:
    """``RunEvents`` for a terminal (a bar over jobs, the current job's step and costs, an ETA)
    or for a log (one plain line per finished job)."""

    def __init__(self, quiet: bool = False, verbose: bool = False):
        self.quiet, self.verbose = quiet, verbose
        self.tty = sys.stderr.isatty() and not quiet
        self.bar = None
        self.last_step_line = 0.0
        self.last_tenth = None

    def planned(self, plan) -> None:
        to_run = plan.to_run
        if not self.quiet:
            typer.echo(f"{len(to_run)} job(s) to run, {plan.done} already done"
                       + (f", {len(plan.quarantined)} quarantined" if plan.quarantined else ""), err=True)
        if self.tty and to_run:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("jobs"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.description}"), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=len(to_run))

    def more(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, total=count)

    def invalid(self, problems) -> None:
        from .io.manifest import merged

        for line in merged(problems):
            typer.echo(f"skipped (invalid) {line}", err=True)

    def job_started(self, job, number: int, count: int) -> None:
        self.current = job

    def notice(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message, markup=False, highlight=False)
        elif not self.quiet or message.startswith("WARNING"):
            typer.echo(message, err=True)

    def _new_tenth(self, progress) -> bool:
        """Whether ``progress`` is the first report past another tenth of the job (workers
        report at most twice a second, so exact multiples rarely come)."""
        tenth = progress.step * 10 // max(1, progress.steps)
        key = (self.current.id, tenth)
        if progress.step and key == self.last_tenth:
            return False
        self.last_tenth = key
        return True

    def step(self, progress) -> None:
        clip = getattr(self.current, "clip", False)  # a clip's progress is its frames: minutes each
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.current.id} {'frame' if clip else 'step'}"
                                                   f" {progress.step}/{progress.steps}  total {progress.total:.4g}")
        elif clip and not self.quiet:
            if self._new_tenth(progress) or time.monotonic() - self.last_step_line > 30:
                self.last_step_line = time.monotonic()
                typer.echo(f"  {self.current.id} ({self.current.where}): frame {progress.step}/{progress.steps}",
                           err=True)
        elif self.verbose and not self.quiet and (self._new_tenth(progress)
                                                  or time.monotonic() - self.last_step_line > 2):
            self.last_step_line = time.monotonic()
            typer.echo(f"  {self.current.id} step {progress.step}/{progress.steps}  total {progress.total:.4g}"
                       f"  content {progress.content:.4g}  style {progress.style:.4g}", err=True)

    def job_finished(self, outcome, number: int, count: int) -> None:
        from .jobs.ledger import LineStatus, recovered

        if self.bar is not None:
            self.bar.advance(self.task)
        if outcome.status != LineStatus.DONE:
            if outcome.status == LineStatus.ELSEWHERE and not self.verbose:
                return
            label = {LineStatus.FAILED: "FAILED", LineStatus.QUARANTINED: "FAILED (quarantined)",
                     LineStatus.ELSEWHERE: "skipped"}.get(outcome.status, str(outcome.status))
            line = f"[{number}/{count}] {label} {outcome.job.id} ({outcome.job.where}): {outcome.error}"
            (self.bar.console.print(line, markup=False, highlight=False) if self.bar
             else typer.echo(line, err=True))
        elif not self.quiet and self.bar is None:
            cost = f", total cost {outcome.costs['total']:.4g}" if outcome.costs else ""  # none: a network's pass
            typer.echo(f"[{number}/{count}] done {outcome.job.id} -> {outcome.job.output}"
                       f" ({outcome.seconds:.1f}s{cost})"
                       + "".join(f"; {said}" for said in (outcome.note, recovered(outcome.recoveries)) if said),
                       err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
