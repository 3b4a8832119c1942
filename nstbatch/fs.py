"""Files: atomic writes (a temp file beside the target, then ``os.replace``) and content
digests. Every module that writes a whole file a reader may look at writes it through here;
the one exception is the append-only report (``jobs/runlog.py``), whose lines each go out in
one ``write`` of their own."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, then ``os.replace`` it into
    place: a reader never sees a half-written file, and a crash leaves only the old one."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """For writers that want a file name, not a file object (an encoder muxing a video): yield a
    temp path beside ``path``, then ``os.replace`` it into place if the block ends well; remove
    it if not. The temp's name ends in ``.tmp``: give the writer the format itself."""
    path = Path(path)
    fd, tmp = _create_temp(path)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:  # what the writer wrote is on the disk before it is in place
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete temp files an ``atomic_write`` of ``path`` left when its process was killed."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
            try:
                stale.unlink()
                removed.append(stale)
            except FileNotFoundError:
                pass
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _create_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside ``path`` (``.<name>.<random>.tmp``), created 0666 so that the
    process's umask gives it the permissions any new file gets (mkstemp's 0600 would hide
    outputs from the group)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name beside {path}")


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented, key-sorted JSON at ``path``, atomically (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(text))


def read_json(path: Path) -> dict | None:
    """The JSON object at ``path``; None for a file that is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
