"""Running jobs: from files to a written output, with provenance."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from . import __version__
from .api import stylize_with_history
from .config import StyleParams
from .errors import InputError
from .images import check_output_path, load_image, probe_image, save_image
from .optimize import Progress, Result
from .vgg import VGGFeatures
from .weights import load_weights


def provenance(params: StyleParams, result: Result, content: Path, style: Path) -> dict:
    """What made an output, stored inside it (PNG text chunks)."""
    final = result.history[-1]
    return {
        "params": params.to_dict(),
        "weights": load_weights(params.weights).id,
        "content": content.name,
        "style": style.name,
        "final_cost": {"total": final.total, "content": final.content, "style": final.style,
                       "tv": final.tv},
        "version": {"nstbatch": __version__, "torch": torch.__version__},
    }


def check_job_files(content: Path, style: Path, output: Path) -> None:
    """Everything about the files that can be known without decoding or running anything."""
    probe_image(content)
    probe_image(style)
    check_output_path(output)
    for source in (content, style):
        if output.exists() and os.path.samefile(output, source) or output.resolve() == source.resolve():
            raise InputError(f"{output}: the output is also an input; it would be overwritten",
                             hint="choose another output path")


def stylize_file(content: str | os.PathLike, style: str | os.PathLike, output: str | os.PathLike,
                 params: StyleParams, *, device: str = "auto",
                 callback: Callable[[Progress], None] | None = None,
                 features: VGGFeatures | None = None) -> Result:
    """Stylize ``content`` with ``style`` and write ``output`` atomically (nothing on failure)."""
    content, style, output = Path(content), Path(style), Path(output)
    check_job_files(content, style, output)
    load_weights(params.weights)  # a weights problem shows before any decoding work
    image, result = stylize_with_history(load_image(content), load_image(style), params,
                                         device=device, callback=callback, features=features)
    save_image(image, output, provenance(params, result, content, style))
    return result
