"""The resident memory of this process, and its peak over a stretch of work, sampled every 2 ms
by a thread (the benchmarks' child processes import it: ``sys.path`` has ``benchmarks/``)."""
from __future__ import annotations

import os
import threading
import time


def rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """``start()`` takes the baseline and starts sampling; ``stop()`` returns the peak increase
    over the baseline, in bytes."""

    def __init__(self):
        self.baseline = self.peak = 0
        self._done = False
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> "PeakSampler":
        self.baseline = self.peak = rss()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done:
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def stop(self) -> int:
        self._done = True
        self._thread.join()
        return self.peak - self.baseline
