"""Claims: one worker per job, across processes and hosts sharing a state directory.

A claim is a lock file (``claims/<job id>.lock``: host, pid, time) created with ``O_EXCL``;
its holder refreshes its mtime as a heartbeat. A claim whose heartbeat is older than
``stale_after`` seconds, or whose process on this host is gone, is broken by the next taker.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

# Seconds without a heartbeat after which a claim (a run on another host that died) is stale.
CLAIM_STALE = 300.0


@dataclass
class Claim:
    path: Path
    heartbeat_every: float = 30.0
    _last: float = 0.0

    def heartbeat(self) -> None:
        """Refresh the claim's mtime (cheap; call it often: it writes at most every
        ``heartbeat_every`` seconds, 30 by default)."""
        now = time.time()
        if now - self._last >= self.heartbeat_every:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass
            self._last = now

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _dead_here(owner: str) -> bool:
    """A claim by a process of this host that no longer exists (killed -9, say) is stale at
    once; on other hosts only the heartbeat can tell."""
    host, _, rest = owner.partition(":")
    pid = rest.split()[0] if rest.split() else ""
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A process that has ended but was not reaped yet (its parent, killed too, cannot; in a
    container without an init that reaps, it stays so): dead, though ``kill(pid, 0)`` finds it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False  # no /proc (not Linux): the heartbeat decides
    return stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X")


def _live_owner(path: Path, stale_after: float) -> str | None:
    """The holder of the claim file ``path`` if its claim is live (a fresh heartbeat, and on
    this host a living process); None if it is stale. FileNotFoundError: no claim."""
    age = time.time() - path.stat().st_mtime
    owner = path.read_text().strip() or "?"
    return owner if age < stale_after and not _dead_here(owner) else None


def live_holder_at(path: Path, stale_after: float = CLAIM_STALE) -> str | None:
    """Who holds a live claim in the claim file ``path``, or None: nobody, or a claim the
    next taker breaks (its heartbeat is stale, or its process on this host is gone)."""
    try:
        return _live_owner(path, stale_after)
    except (FileNotFoundError, NotADirectoryError):
        return None


def claim_at(path: Path, stale_after: float = CLAIM_STALE) -> Claim | str:
    """Take the lock file ``path`` (host, pid, time), or say who holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = _live_owner(path, stale_after)
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if owner is not None:
                return owner
            # Stale: move it aside under a unique name. Only one breaker's rename succeeds.
            aside = path.with_name(f"{path.name}.stale-{holder.replace(':', '-')}")
            try:
                os.rename(path, aside)
                os.unlink(aside)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{holder} {time.time():.0f}\n")
        return Claim(path, heartbeat_every=min(30.0, stale_after / 4), _last=time.time())
    return "contended"
