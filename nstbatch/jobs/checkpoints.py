"""Checkpoints of interrupted jobs: ``optimize.Checkpoint`` as plain tensors, numbers and
dicts (``checkpoints/<job id>.pt``), loaded with ``weights_only`` (nothing to unpickle), and
valid only for the params hash they were saved with. The descent's state is stored as its
fields, flat beside the image (the file's format since FORMAT 1)."""
from __future__ import annotations

import io
from dataclasses import fields, replace

import torch

from ..fs import atomic_write
from ..io.manifest import Job
from ..engine.descent import DescentState
from ..engine.optimize import Checkpoint, Progress
from .ledger import StateDir

FORMAT = 1


def save_checkpoint(state: StateDir, job: Job, hash_: str, checkpoint: Checkpoint) -> None:
    history = torch.tensor([[p.step, p.content, p.style, p.tv, p.total] for p in checkpoint.history],
                           dtype=torch.float64).reshape(-1, 5)
    entry = {"format": FORMAT, "params_hash": hash_, "step": checkpoint.step, "image": checkpoint.image,
             "history": history, "recoveries": list(checkpoint.recoveries), **_by_name(checkpoint.descent)}
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    path = state.checkpoint_path(job.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def load_checkpoint(state: StateDir, job: Job, hash_: str) -> Checkpoint | None:
    """The job's checkpoint if it belongs to these exact params and inputs, else None (a stale
    or unreadable one is deleted)."""
    path = state.checkpoint_path(job.id)
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if entry.get("format") != FORMAT or entry["params_hash"] != hash_:
            raise ValueError("stale")
        steps = job.params.steps
        history = [Progress(int(row[0]), steps, *(float(v) for v in row[1:])) for row in entry["history"]]
        descent = DescentState(**{f.name: entry[f.name] for f in fields(DescentState) if f.name in entry})
        return Checkpoint(int(entry["step"]), entry["image"], history, descent,
                          [str(said) for said in entry.get("recoveries", [])])
    except Exception:  # noqa: BLE001 - a bad checkpoint only costs a restart of its job
        discard_checkpoint(state, job)
        return None


def discard_checkpoint(state: StateDir, job: Job) -> None:
    try:
        state.checkpoint_path(job.id).unlink()
    except FileNotFoundError:
        pass


def slice_checkpoint(checkpoint: Checkpoint, index: int, count: int) -> Checkpoint:
    """One image's share of a batch checkpoint: Adam's state is per pixel, so slicing it gives
    exactly the state that image would have alone."""
    def take(obj):
        if isinstance(obj, torch.Tensor) and obj.dim() > 0 and obj.shape[0] == count:
            return obj[index:index + 1].clone()
        if isinstance(obj, dict):
            return {k: take(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [take(v) for v in obj]
        return obj

    return replace(checkpoint, image=checkpoint.image[index:index + 1].clone(),
                   descent=DescentState(**{name: take(value) for name, value in _by_name(checkpoint.descent).items()}))


def _by_name(state: DescentState) -> dict:
    """The descent's fields by name, their values as they are (``asdict`` would copy tensors)."""
    return {f.name: getattr(state, f.name) for f in fields(state)}
