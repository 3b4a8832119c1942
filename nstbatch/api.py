"""The Python entry for one image: ``nstbatch.stylize(content, style, params)``, and for one
file: ``stylize_file`` (what ``nstbatch stylize`` does), with the provenance an output carries."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence, overload

import torch
from PIL import Image

from . import __version__, shards
from .config import StyleParams, resolve_params
from .devices import resolve_device
from .errors import InputError
from .images import check_output_path, fit_image, load_image, probe_image, save_image
from .optimize import Hooks, Progress, Result, optimize
from .pixels import to_pil, to_tensor
from .precompute import StyleTargetStore
from .vgg import VGGFeatures
from .weights import load_weights


@overload
def stylize(content: Image.Image, style: Image.Image, params: StyleParams | None = ..., **kw) -> Image.Image: ...
@overload
def stylize(content: torch.Tensor, style: torch.Tensor, params: StyleParams | None = ..., **kw) -> torch.Tensor: ...


def stylize(content, style, params: StyleParams | None = None, *, device: str = "auto",
            callback: Callable[[Progress], None] | None = None,
            features: VGGFeatures | None = None, store: StyleTargetStore | None = None):
    """Stylize one image. Pillow images are resized (and cropped) as ``params`` says (``size``,
    ``resize``, ``crop``) and an RGB Pillow image comes back: the picture ``nstbatch run`` makes
    of the same files. Tensors ``(1, 3, H, W)`` in [0, 1] are used at their own size and a
    tensor comes back. ``style`` may also be a blend: a list of ``(style, weight)``.
    ``params`` defaults to the default preset; ``callback`` hears each step's costs;
    ``store``: where style targets come from (default: ONNX Runtime with the cache, as ``run``)."""
    image, _ = stylize_with_history(content, style, params, device=device, features=features, store=store,
                                    hooks=Hooks(on_step=callback))
    return image


def init_image(params: StyleParams, height: int, width: int) -> torch.Tensor | None:
    """``params.init_file`` at the output's size (Lanczos), as ``optimize`` takes it as
    ``init``; None without one."""
    if not params.init_file:
        return None
    return to_tensor(load_image(params.init_file).resize((width, height), Image.Resampling.LANCZOS))


def load_content(path: Path, params: StyleParams) -> torch.Tensor:
    """The content file as the optimisation starts from it: ``(1, 3, H, W)`` at the output's size."""
    return to_tensor(fit_image(load_image(path), *params.geometry))


_STORES: dict[str, StyleTargetStore] = {}


def default_store(device: torch.device) -> StyleTargetStore:
    """The process's style targets on ``device`` as ``run`` computes them by default: ONNX
    Runtime, cached under ``NSTBATCH_CACHE``."""
    if str(device) not in _STORES:
        _STORES[str(device)] = StyleTargetStore(device=device)
    return _STORES[str(device)]


def stylize_with_history(content, style, params: StyleParams | None = None, *,
                         device: str = "auto", features=None, store: StyleTargetStore | None = None,
                         **optimize_options):
    """As ``stylize``, and also the ``Result`` with the cost history. Other keywords go to
    ``optimize`` (``hooks``, ``resume``, ``init``); without ``init``, ``params.init_file`` is
    read here."""
    params = params or resolve_params()
    as_pil = isinstance(content, Image.Image)
    blend = ([] if style is None else [(style, 1.0)] if isinstance(style, (Image.Image, torch.Tensor))
             else list(style))
    if as_pil:
        content = to_tensor(fit_image(content, *params.geometry))
    target = resolve_device(device) if features is None else next(features.parameters()).device
    store = store or default_store(target)
    style_targets, _ = store.for_images(blend, params, content, max(content.shape[-2:]))
    return _stylize(content.to(target), style_targets, params, features, optimize_options, as_pil)


def _stylize(content: torch.Tensor, style_targets, params: StyleParams, features, optimize_options,
             as_pil: bool = False):
    """The optimisation of one job as ``run`` does it, from its content at the output's size
    and its blended style targets (``StyleTargetStore``)."""
    if optimize_options.get("init") is None:
        optimize_options["init"] = init_image(params, *content.shape[-2:])
    result: Result = optimize(content, None, params, features=features, style_targets=style_targets,
                              **optimize_options)
    return (to_pil(result.image) if as_pil else result.image), result


StyleSpec = Sequence[tuple["str | os.PathLike", float]]


def _style_list(style) -> list[tuple[Path, float]]:
    """One style path, or a blend: a sequence of (path, weight)."""
    if isinstance(style, (str, os.PathLike)):
        return [(Path(style), 1.0)]
    return [(Path(path), float(weight)) for path, weight in style]


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
    return _stylize(pixels.to(target), style_targets, params, features, optimize_options)[1]


def stylize_file(content: str | os.PathLike, style: "str | os.PathLike | StyleSpec",
                 output: str | os.PathLike, params: StyleParams, *, device: str = "auto",
                 features: VGGFeatures | None = None, store: StyleTargetStore | None = None,
                 **optimize_options) -> Result:
    """Stylize ``content`` with ``style`` (a path, or a blend of (path, weight)) and write
    ``output`` atomically: on any failure, nothing is written. The job as ``run`` does it
    (``stylize_job``)."""
    content, output, styles = Path(content), Path(output), _style_list(style)
    check_job_files(content, styles, output)
    load_weights(params.weights)  # a weights problem shows before any decoding work
    result = stylize_job(content, styles, params, device=device, features=features, store=store,
                         **optimize_options)
    save_image(to_pil(result.image), output, provenance(params, result, content, styles),
               jpeg_quality=params.jpeg_quality, webp_quality=params.webp_quality)
    return result
