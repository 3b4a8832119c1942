"""Content hashes: of files (what a cache key and a weights check compare), and of a job (what
a done record compares: its parameters, its input files' contents and its weights)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .config import FIELDS, LATER_FIELDS

if TYPE_CHECKING:
    from .manifest import Job


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FileHashes:
    """sha256 of files, each read once per (path, size, mtime): a manifest's rows share images."""

    def __init__(self):
        self._cache: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = sha256_of(path)
        return self._cache[key]


def weights_identity(spec: str) -> str:
    """A cheap stand-in for ``Weights.id`` that needs no decoding: the spec, and for a file its
    content hash. Used in params hashes so checking done-ness never loads a network."""
    from .weights import split_weights_spec  # (weights uses this module's sha256_of)

    path, suffix = split_weights_spec(spec)
    return spec if path is None else f"file:{sha256_of(path)}:{suffix}"


def params_hash(job: Job, hashes: FileHashes, weights_id: str) -> str:
    """What decides whether an existing output is done: the resolved parameters, the content
    of every input file, and the weights. Paths, row numbers and snapshots do not count."""
    params = job.params.to_dict()
    params.pop("save_every")  # snapshots along the way do not change the output
    for name in LATER_FIELDS:
        if params[name] == FIELDS[name].default:
            del params[name]
    if job.params.init_file:
        params["init"] = "file:" + hashes(Path(job.params.init_file))
    data = {
        "params": params,
        "content": hashes(job.content),
        "styles": [[hashes(path), weight] for path, weight in job.styles],
        "weights": weights_id,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class JobHasher:
    """``params_hash`` for many jobs: each file hashed once, each weights spec identified once."""

    def __init__(self):
        self.files = FileHashes()
        self._weights: dict[str, str] = {}

    def __call__(self, job: Job) -> str:
        spec = job.params.weights
        if spec not in self._weights:
            self._weights[spec] = weights_identity(spec)
        return params_hash(job, self.files, self._weights[spec])
