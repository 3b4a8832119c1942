"""Content hashes: of files (what a cache key and a weights check compare), and of a job (what
a done record compares: its parameters, its input files' contents and its weights)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import webdataset
from ..errors import NstbatchError
from ..fs import sha256_of
from ..config import DELIVERY_FIELDS, LATER_FIELDS, VIDEO_FIELDS, split_weights_spec
from .video import clip_digest

if TYPE_CHECKING:
    from .manifest import Job


def pixels_digest(image) -> str:
    """sha256 of an image in memory, a Pillow image (its mode, size and pixels) or a tensor (its
    dtype, shape and values): what a style target of such an image is keyed by, where a file's
    bytes key a file's."""
    if hasattr(image, "tobytes"):
        head, data = f"{image.mode}:{image.size}:", image.tobytes()
    else:
        head = f"tensor:{image.dtype}:{tuple(image.shape)}:"
        data = image.detach().float().cpu().contiguous().numpy().tobytes()
    digest = hashlib.sha256(head.encode())
    digest.update(data)
    return digest.hexdigest()




class FileHashes:
    """sha256 of files, each read once per (path, size, mtime, ctime, inode): a manifest's rows
    share images.

    With ``index`` (a state directory), digests that earlier runs wrote to its
    ``hashes*.jsonl`` are taken from there while the file's path, size, mtime, ctime and inode
    are unchanged, as git's index and make do, so a restarted run of a large dataset stats its
    inputs instead of reading them all again; ``save`` appends the digests computed since to
    ``name``. Lines are whole JSON objects; a torn or foreign one is skipped. Once ``name``
    holds ``COMPACT_AT`` lines and more than two per file it names (files that changed), it
    is rewritten with each file's latest line.
    """

    COMPACT_AT = 100_000

    def __init__(self, index: Path | None = None, name: str = "hashes.jsonl"):
        self._cache: dict[tuple, str] = {}
        self._new: list[tuple] = []
        self.index, self.name = index, name
        self._loaded = index is None
        self._own: dict[str, tuple] = {}  # file -> its latest key in ``name``
        self._own_lines = 0

    def _load(self) -> None:
        self._loaded = True
        for path in sorted(self.index.glob("hashes*.jsonl")):
            own = path.name == self.name
            try:
                with open(path, "rb") as f:
                    for raw in f:
                        try:
                            record = json.loads(raw)
                            key = tuple(record["key"])
                            self._cache[key] = str(record["sha256"])
                        except (ValueError, KeyError, TypeError):
                            continue
                        if own:
                            self._own[key[0]] = key
                            self._own_lines += 1
            except OSError:
                continue  # an index is a cache: an unreadable one means hashing again

    def __call__(self, path: Path) -> str:
        if not self._loaded:
            self._load()
        if webdataset.is_member(path):  # a shard's member: keyed by the shard's stat and its place
            try:
                key = (os.path.abspath(path), *webdataset.member_stat(path)[1:])
            except NstbatchError as e:  # unreadable, as a missing file is
                raise FileNotFoundError(str(e)) from None
            digest = webdataset.sha256
        else:
            stat = path.stat()
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
            digest = sha256_of
        if key not in self._cache:
            self._cache[key] = digest(path)
            if self.index is not None:
                self._new.append(key)
        return self._cache[key]

    def save(self) -> None:
        """Append the digests computed since the last ``save`` to the index, in whole lines
        (or rewrite it, compacted: written beside it and moved into place)."""
        if not self._new:
            return
        self.index.mkdir(parents=True, exist_ok=True)
        for key in self._new:
            self._own[key[0]] = key
        self._own_lines += len(self._new)
        compact = self._own_lines >= self.COMPACT_AT and self._own_lines > 2 * len(self._own)
        keys = self._own.values() if compact else self._new
        data = "".join(json.dumps({"key": list(key), "sha256": self._cache[key]}) + "\n" for key in keys).encode()
        target = self.index / self.name
        if compact:
            temp = target.with_name(f".{self.name}.{os.getpid()}.tmp")
            temp.write_bytes(data)
            os.replace(temp, target)  # lines another run appends meanwhile are lost: a cache
            self._own_lines = len(self._own)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        self._new.clear()


def weights_identity(spec: str) -> str:
    """A cheap stand-in for ``Weights.id`` that needs no decoding: the spec, and for a file its
    content hash. Used in params hashes so checking done-ness never loads a network."""
    path, suffix = split_weights_spec(spec)
    return spec if path is None else f"file:{sha256_of(path)}:{suffix}"


# What a job through a trained network reads of its parameters: the output's size and form.
NETWORK_OUTPUT_FIELDS = ("size", "resize", "crop", "bit_depth", "jpeg_quality", "webp_quality")


def params_hash(job: Job, hashes: FileHashes, weights_id: str) -> str:
    """What decides whether an existing output is done: the resolved parameters, the content
    of every input file, and the weights. Paths, row numbers and snapshots do not count."""
    params = job.params.to_dict()
    params.pop("save_every")  # snapshots along the way do not change the output
    for name, before in LATER_FIELDS.items():
        if params[name] == before:
            del params[name]
    if not job.clip:  # a still image's output does not depend on them: changing them reruns no image
        for name in VIDEO_FIELDS + DELIVERY_FIELDS:
            params.pop(name, None)
    if job.network is not None:  # its output is the network's pass (and refinement): the network's bytes count
        if not job.refine_steps:  # ...and of the parameters, only the output's form
            kept = NETWORK_OUTPUT_FIELDS + (DELIVERY_FIELDS if job.clip else ())  # a clip's: how it is encoded
            params = {k: v for k, v in params.items() if k in kept}
        params["network"] = hashes(job.network) if job.network.is_file() else "missing"
    elif job.params.init_file:
        params["init"] = "file:" + hashes(Path(job.params.init_file))
    if job.clip and job.params.flow_file:  # RAFT's weights count by their bytes, not their path
        params["flow"] = f"{job.params.flow.partition(':')[0]}:file:" + hashes(Path(job.params.flow_file))
    data = {
        "params": params,
        "content": clip_digest(job.content, hashes) if job.clip else hashes(job.content),
        "styles": [[hashes(path), weight] for path, weight in job.styles],
        "weights": weights_id,
    }
    if job.regions is not None:  # which part each painting paints, and what is kept: by their bytes
        def mask(path: Path) -> str:  # a clip's masks may be a folder of one a frame
            return clip_digest(path, hashes) if job.clip and path.is_dir() else hashes(path)
        data["regions"] = {"masks": [mask(path) for path in job.regions.masks],
                           "keep": mask(job.regions.keep) if job.regions.keep is not None else None}
        if job.regions.style_masks:  # the part of each painting its region takes
            data["regions"]["style_masks"] = [hashes(path) for path in job.regions.style_masks]
        if job.regions.labels is not None:  # a label image by its bytes, and which value goes where
            data["regions"].update(labels=hashes(job.regions.labels), table=job.regions.table.to_json())
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class JobHasher:
    """``params_hash`` for many jobs: each file hashed once, each weights spec identified once."""

    def __init__(self, files: FileHashes | None = None):
        self.files = files or FileHashes()
        self._weights: dict[str, str] = {}

    def __call__(self, job: Job) -> str:
        spec = job.params.weights
        if spec not in self._weights:
            self._weights[spec] = weights_identity(spec)
        return params_hash(job, self.files, self._weights[spec])
