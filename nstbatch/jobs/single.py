"""One job from its files, as ``run`` does it: the content at the output's size, the styles'
blended targets from the store, the loop. The executor runs batches of these, ``nstbatch
stylize`` and the Python API one, and ``benchmarks/quality.py`` measures them: one path, so one
job gives one picture whichever door it comes through."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..config import StyleParams
from ..engine.devices import resolve_device
from ..engine.optimize import Result, optimize
from ..engine.pixels import to_tensor
from ..engine.vgg import VGGFeatures
from ..engine.weights import load_weights
from ..errors import InputError
from ..io import shards
from ..io.images import check_output_path, fit_image, load_image, probe_image
from ..styles.store import StyleTargetStore, default_store
from ..version import __version__


def init_image(params: StyleParams, height: int, width: int) -> torch.Tensor | None:
    """``params.init_file`` at the output's size (Lanczos), as ``optimize`` takes it as
    ``init``; None without one."""
    if not params.init_file:
        return None
    return to_tensor(load_image(params.init_file).resize((width, height), Image.Resampling.LANCZOS))


def load_content(path: Path, params: StyleParams) -> torch.Tensor:
    """The content file as the optimisation starts from it: ``(1, 3, H, W)`` at the output's size."""
    return to_tensor(fit_image(load_image(path), *params.geometry))


def optimize_job(content: torch.Tensor, style_targets: dict[str, torch.Tensor], params: StyleParams, *,
                 features: VGGFeatures | None = None, **optimize_options) -> Result:
    """The loop for one job, from its content at the output's size and its blended style
    targets (``StyleTargetStore``); without ``init``, ``params.init_file`` is read here. Other
    keywords go to ``optimize`` (``hooks``, ``resume``)."""
    if optimize_options.get("init") is None:
        optimize_options["init"] = init_image(params, *content.shape[-2:])
    return optimize(content, None, params, features=features, style_targets=style_targets, **optimize_options)


def provenance(params: StyleParams, result: Result, content: Path,
               styles: Sequence[tuple[Path, float]], index: int = 0) -> dict:
    """What made an output (image ``index`` of the result), stored inside it (PNG text chunks)."""
    final = result.final(index)
    return {
        "params": params.to_dict(),
        "weights": load_weights(params.weights).id,
        "content": content.name,
        "style": [[path.name, weight] for path, weight in styles] if len(styles) > 1 else styles[0][0].name,
        "final_cost": {"total": final.total, "content": final.content, "style": final.style,
                       "tv": final.tv},
        "version": {"nstbatch": __version__, "torch": torch.__version__},
    }


def check_job_files(content: Path, styles: Sequence[tuple[Path, float]], output: Path) -> None:
    """Everything about the files that can be known without decoding or running anything."""
    probe_image(content)
    for style, _ in styles:
        probe_image(style)
    check_output_path(output)
    for source in [content] + [style for style, _ in styles]:
        if output.resolve() == source.resolve() or (output.exists() and not shards.is_member(source)
                                                    and os.path.samefile(output, source)):
            raise InputError(f"{output}: the output is also an input; it would be overwritten",
                             hint="choose another output path")


def stylize_job(content: Path, styles: Sequence[tuple[Path, float]], params: StyleParams, *,
                device: str = "auto", features: VGGFeatures | None = None,
                store: StyleTargetStore | None = None, **optimize_options) -> Result:
    """One job from its files, as ``run`` does it: the content at the output's size, the
    styles' blended targets from ``store``, the loop; nothing written."""
    target = resolve_device(device) if features is None else next(features.parameters()).device
    store = store or default_store(target)
    pixels = load_content(content, params)
    style_targets, _ = store.for_files(styles, params, content, max(pixels.shape[-2:]))
    return optimize_job(pixels.to(target), style_targets, params, features=features, **optimize_options)
