"""The plan as a file: every resolved job of a manifest written as a CSV manifest (``nstbatch
plan --export``), so a dataset's exact jobs (styles drawn, seeds, outputs) can be kept,
diffed, handed to someone else and run again.

Running the CSV with the run's ``--state-dir`` finds every finished job done: the ids are
written out, and the parameters resolve to the same values (each column holds a value that
differs from the job's preset, written exactly). Paths are relative to the CSV's folder, so
the CSV travels with the tree it sits in.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..config import FIELDS, PRESETS, StyleParams, split_weights_spec
from ..fs import atomic_write
from .manifest import Job

# Fields that reset a partner when given alone (config.resolve_params): written together.
PARTNERS = {"scales": "scale_steps", "style_layers": "style_layer_weights"}


def _text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def changed_fields(params: StyleParams) -> dict[str, object]:
    """The fields whose values differ from ``params.preset``'s (with their partners)."""
    preset = PRESETS[params.preset]
    names = {name for name in FIELDS if name != "preset" and getattr(params, name) != getattr(preset, name)}
    names |= {PARTNERS[name] for name in names if name in PARTNERS}
    return {name: getattr(params, name) for name in FIELDS if name in names}


def export_plan(jobs: list[Job], path: str | os.PathLike) -> int:
    """Write ``jobs`` as a CSV manifest at ``path`` (atomically); the number of rows."""
    path = Path(path)
    folder = path.resolve().parent

    def rel(p) -> str:
        return Path(os.path.relpath(os.path.abspath(p), folder)).as_posix()

    changed = [changed_fields(job.params) for job in jobs]
    columns = ["seed"] + [name for name in FIELDS if name not in ("preset", "seed")
                          and any(name in c for c in changed)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "content", "style", "style_weights", "output", "preset"] + columns)
    for job, values in zip(jobs, changed):
        values = {**values, "seed": job.params.seed}
        if "init" in values and job.params.init_file:
            values["init"] = rel(job.params.init_file)
        if "flow" in values and job.params.flow_file:
            values["flow"] = f"{job.params.flow.partition(':')[0]}:{rel(job.params.flow_file)}"
        if "weights" in values:
            weights_path, suffix = split_weights_spec(job.params.weights)
            if weights_path is not None:
                values["weights"] = rel(weights_path) + (f"@{suffix}" if suffix else "")
        writer.writerow([job.id, rel(job.content), "|".join(rel(p) for p, _ in job.styles),
                         "|".join(_text(float(w)) for _, w in job.styles), rel(job.output), job.params.preset]
                        + [_text(values[name]) if name in values else "" for name in columns])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(out.getvalue().encode()))
    return len(jobs)
