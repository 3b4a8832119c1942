"""Fault injection for worker processes (``RunOptions.worker_setup``): picklable callables that
a spawned worker runs at its start, wrapping the engine so that chosen jobs crash the worker."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class KillWorker:
    """SIGKILL this worker (as the kernel's OOM killer would) when a job with ``seed`` reaches
    step ``at_step``."""

    seed: int
    at_step: int = 2

    def __call__(self) -> None:
        import dataclasses

        import nstbatch.jobs.executor as executor

        real = executor.optimize_job

        def optimize(content, style_targets, params, **kwargs):
            if params.seed == self.seed:
                hooks = kwargs["hooks"]

                def dying(progress):
                    if progress.step >= self.at_step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    if hooks.on_step:
                        hooks.on_step(progress)

                kwargs["hooks"] = dataclasses.replace(hooks, on_step=dying)
            return real(content, style_targets, params, **kwargs)

        executor.optimize_job = optimize
