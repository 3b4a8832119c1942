"""The cache directory and the style-target cache in it.

``NSTBATCH_CACHE`` (or ``--cache-dir``; default ``$XDG_CACHE_HOME/nstbatch`` or
``~/.cache/nstbatch``) holds exported ONNX models, TensorRT engines and style targets. It may
be shared between the processes of a cluster run: every entry is written to a temp file in
its own folder and moved into place, so two writers of the same entry never corrupt it, and
a reader never sees half of one.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch
from torch import Tensor

from ..fs import atomic_write

ENTRY_FORMAT = 1


def _digest(layers: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(layers):
        tensor = layers[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


class TargetCache:
    """Style targets by content address (``targets.target_key``), one file per entry.

    Entries are loaded with ``torch.load(weights_only=True)``: tensors, strings and dicts
    only, never arbitrary objects. Each carries a sha256 of its tensors; an entry that fails to
    load or to verify is deleted and reported as missing, so it is computed again.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root) / "targets"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def load(self, key: str) -> dict[str, Tensor] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            layers = entry["layers"]
            if entry.get("format") != ENTRY_FORMAT or entry.get("key") != key:
                raise ValueError("another format or key")
            if _digest(layers) != entry["digest"]:
                raise ValueError("checksum mismatch")
            return layers
        except Exception:  # noqa: BLE001 - any unreadable entry is recomputed, never trusted
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            return None

    def save(self, key: str, layers: dict[str, Tensor], meta: str = "") -> Path:
        layers = {name: t.detach().cpu().contiguous() for name, t in layers.items()}
        entry = {"format": ENTRY_FORMAT, "key": key, "meta": meta, "layers": layers,
                 "digest": _digest(layers)}
        buffer = io.BytesIO()
        torch.save(entry, buffer)
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
        return path

    def entries(self) -> list[Path]:
        return sorted(self.root.glob("*/*.pt")) if self.root.is_dir() else []
