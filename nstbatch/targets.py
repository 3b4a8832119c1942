"""Style targets: the Gram matrices of a style image, computed once and reused.

A style target is, per style layer, ``G / (n_H·n_W)`` of the *unscaled* activations, in
float32, shape ``(1, C, C)``: per position, so it does not depend on the style image's size,
and before ``feature_scale`` and blend weights, which ``blend_targets`` applies, so one cached
target serves every job that shares the style, size, layers, pooling and weights.
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from . import losses
from .vgg import VGGFeatures

TARGETS_FORMAT = 1  # bump when what a target holds changes: old cache entries stop matching


class TargetsGraph(nn.Module):
    """Image ``(1, 3, H, W)`` in [0, 1] → per style layer ``G/(n_H·n_W)`` ``(1, C, C)`` in
    float32, then the raw activations at the content layers. This is the module exported to
    ONNX (dynamic H and W), and the PyTorch reference it is checked against."""

    def __init__(self, features: VGGFeatures, style_layers: Sequence[str],
                 content_layers: Sequence[str] = ()):
        super().__init__()
        self.features = features
        self.style_layers = tuple(style_layers)
        self.content_layers = tuple(content_layers)

    @property
    def output_names(self) -> list[str]:
        return [f"gram_{n}" for n in self.style_layers] + [f"act_{n}" for n in self.content_layers]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        acts = self.features(image, tuple(dict.fromkeys(self.style_layers + self.content_layers)))
        grams = []
        for name in self.style_layers:
            a = acts[name].float()  # Gram sums overflow in fp16: always float32
            grams.append(losses.gram_matrix(a) / (a.shape[-2] * a.shape[-1]))
        return tuple(grams) + tuple(acts[name] for name in self.content_layers)


def torch_style_targets(features: VGGFeatures, image: Tensor, style_layers: Sequence[str]) -> dict[str, Tensor]:
    """The PyTorch way to a style target (also the reference for the ONNX one)."""
    with torch.no_grad():
        outputs = TargetsGraph(features, style_layers)(image)
    return dict(zip(style_layers, outputs))


def blend_targets(targets: Sequence[tuple[Mapping[str, Tensor], float]], feature_scale: float,
                  device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Weight-normalised sum of several styles' targets, at ``feature_scale`` (Grams scale with
    its square)."""
    total = sum(weight for _, weight in targets)
    if not targets or total <= 0 or any(weight < 0 for _, weight in targets):
        raise ValueError(f"style weights must be non-negative with a positive sum, got "
                         f"{[weight for _, weight in targets]}")
    blended: dict[str, Tensor] = {}
    for grams, weight in targets:
        if weight == 0:
            continue
        for name, gram in grams.items():
            part = gram.to(device) * (weight / total * feature_scale ** 2)
            blended[name] = part if name not in blended else blended[name] + part
    return blended


def target_key(image_sha256: str, size: int, weights_id: str, pooling: str,
               style_layers: Sequence[str], color: str = "") -> str:
    """Content address of a style target: everything that changes its numbers. ``color``:
    how the style was prepared (``luminance``, or ``histogram:<content sha256>``)."""
    data = {"format": TARGETS_FORMAT, "image": image_sha256, "size": size, "weights": weights_id,
            "pooling": pooling, "layers": list(style_layers)}
    if color:
        data["color"] = color
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
