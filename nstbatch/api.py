"""The Python entry for one image: ``nstbatch.stylize(content, style, params)``."""
from __future__ import annotations

from typing import Callable, overload

import torch
from PIL import Image

from .config import StyleParams, resolve_params
from .devices import resolve_device
from .images import resize_long_side
from .pixels import to_pil, to_tensor
from .optimize import Progress, Result, optimize
from .vgg import VGGFeatures


@overload
def stylize(content: Image.Image, style: Image.Image, params: StyleParams | None = ..., **kw) -> Image.Image: ...
@overload
def stylize(content: torch.Tensor, style: torch.Tensor, params: StyleParams | None = ..., **kw) -> torch.Tensor: ...


def stylize(content, style, params: StyleParams | None = None, *, device: str = "auto",
            callback: Callable[[Progress], None] | None = None,
            features: VGGFeatures | None = None):
    """Stylize one image. Pillow images are resized so their long side is ``params.size`` and
    an RGB Pillow image comes back; tensors ``(1, 3, H, W)`` in [0, 1] are used at their own
    size and a tensor comes back. ``style`` may also be a blend: a list of ``(style, weight)``.
    ``params`` defaults to the default preset."""
    image, _ = stylize_with_history(content, style, params, device=device, callback=callback,
                                    features=features)
    return image


def stylize_with_history(content, style, params: StyleParams | None = None, *,
                         device: str = "auto", callback=None, features=None, style_targets=None,
                         **optimize_options):
    """As ``stylize``, and also the ``Result`` with the cost history. ``style_targets``
    (precomputed, blended and scaled) replaces the style images, which may then be None;
    other keywords (resume, should_stop, checkpoint_every, on_checkpoint) go to ``optimize``."""
    params = params or resolve_params()
    as_pil = isinstance(content, Image.Image)
    blend = ([] if style is None else [(style, 1.0)] if isinstance(style, (Image.Image, torch.Tensor))
             else list(style))
    if as_pil:
        content = to_tensor(resize_long_side(content, params.size))
        side = params.style_side()
        blend = [(to_tensor(resize_long_side(image, side)), weight) for image, weight in blend]
    target = resolve_device(device) if features is None else next(features.parameters()).device
    result: Result = optimize(content.to(target), [(image.to(target), w) for image, w in blend],
                              params, features=features, callback=callback, style_targets=style_targets,
                              **optimize_options)
    return (to_pil(result.image) if as_pil else result.image), result
