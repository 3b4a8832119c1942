"""Which samples each packed output shard holds (``packed/<hash of its path>.json``, written by
the packer in the run's parent, ``outputs``): job id -> params hash, valid while the shard is the
file that was written (its size and mtime)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..fs import read_json, write_json


class PackedIndex:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._read: dict[tuple, dict[str, str]] = {}  # by (shard, size, mtime): what read() found

    def path(self, shard: Path) -> Path:
        name = hashlib.sha1(os.path.abspath(shard).encode()).hexdigest()[:16]
        return self.root / "packed" / f"{name}.json"

    def read(self, shard: Path) -> dict[str, str]:
        """The samples ``shard`` holds as packed (job id -> params hash), while the shard is
        the one that was written (its size and mtime); {} for none."""
        try:
            stat = os.stat(shard)
        except OSError:
            return {}
        key = (os.path.abspath(shard), stat.st_size, stat.st_mtime_ns)
        if key not in self._read:
            record = read_json(self.path(shard)) or {}
            fits = [record.get("size"), record.get("mtime_ns")] == [stat.st_size, stat.st_mtime_ns]
            self._read[key] = dict(record.get("members") or {}) if fits else {}
        return self._read[key]

    def write(self, shard: Path, members: dict[str, str]) -> None:
        stat = os.stat(shard)
        write_json(self.path(shard), {"shard": os.path.abspath(shard), "size": stat.st_size,
                                      "mtime_ns": stat.st_mtime_ns, "members": members})
