"""Style targets: the feature statistics of a style image, computed once and reused.

A style target is a dict: per style layer, under the layer's name, ``G / (n_H·n_W)`` of the
*unscaled* activations (the raw second moment ``E[f fᵀ]``), ``(1, C, C)``, and under
``mean_key(layer)`` the channel means ``E[f]``, ``(1, C)``; both float32. Per position, so
they do not depend on the style image's size, and before ``feature_scale`` and blend weights,
which ``blend_targets`` applies, so one cached target serves every job that shares the style,
size, layers, pooling and weights. The Gram cost reads the second moments; the W2 cost both
(its covariance is ``E[f fᵀ] − μ μᵀ``). Both blend linearly: a blend's are the statistics of
the styles' features pooled in the blend's proportions. Under ``PIXELS`` the same two moments
of the (prepared) style image's own pixels, its palette, for ``init: palette``.
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from . import losses
from .vgg import VGGFeatures

# Bump when what a target holds changes: old cache entries and exported models stop matching.
# 2: channel means beside the second moments (the W2 style cost).
TARGETS_FORMAT = 2
MEAN_SUFFIX = ":mean"
PIXELS = "pixels"  # the style image's own colour moments, kept like a layer's (init: palette)


def mean_key(layer: str) -> str:
    """Where a style target keeps ``layer``'s channel means."""
    return layer + MEAN_SUFFIX


def target_names(style_layers: Sequence[str]) -> list[str]:
    """A style target's keys, in the order ``TargetsGraph`` outputs them."""
    layers = list(style_layers) + [PIXELS]
    return layers + [mean_key(n) for n in layers]


def second_moments(target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The per-layer ``E[f fᵀ]`` of a style target (what the Gram cost reads)."""
    return {name: t for name, t in target.items() if not name.endswith(MEAN_SUFFIX) and name != PIXELS}


def palette(target: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The colour mean ``(N, 3)`` and covariance ``(N, 3, 3)`` of a (blended) style target's
    pixels, in [0, 1] units."""
    mean, second = target[mean_key(PIXELS)], target[PIXELS]
    return mean, losses.covariance(mean, second)


class TargetsGraph(nn.Module):
    """Image ``(1, 3, H, W)`` in [0, 1] → per style layer ``G/(n_H·n_W)`` ``(1, C, C)`` and the
    image's own pixels' ``(1, 3, 3)``, then the channel means of each ``(1, C)`` (``PIXELS``
    last in both), in float32, then the raw activations at the content layers. This is the module exported to ONNX (dynamic H and W), and the PyTorch
    reference it is checked against."""

    def __init__(self, features: VGGFeatures, style_layers: Sequence[str],
                 content_layers: Sequence[str] = ()):
        super().__init__()
        self.features = features
        self.style_layers = tuple(style_layers)
        self.content_layers = tuple(content_layers)

    @property
    def output_names(self) -> list[str]:
        layers = self.style_layers + (PIXELS,)
        return ([f"gram_{n}" for n in layers] + [f"mean_{n}" for n in layers]
                + [f"act_{n}" for n in self.content_layers])

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        acts = self.features(image, tuple(dict.fromkeys(self.style_layers + self.content_layers)))
        grams, means = [], []
        for a in [acts[name] for name in self.style_layers] + [image]:
            mean, second = losses.feature_moments(a)  # Gram sums overflow in fp16: float32 always
            grams.append(second)
            means.append(mean)
        return tuple(grams) + tuple(means) + tuple(acts[name] for name in self.content_layers)


def torch_style_targets(features: VGGFeatures, image: Tensor, style_layers: Sequence[str]) -> dict[str, Tensor]:
    """The PyTorch way to a style target (also the reference for the ONNX one)."""
    with torch.no_grad():
        outputs = TargetsGraph(features, style_layers)(image)
    return dict(zip(target_names(style_layers), outputs))


def blend_targets(targets: Sequence[tuple[Mapping[str, Tensor], float]], feature_scale: float,
                  device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Weight-normalised sum of several styles' targets, at ``feature_scale`` (second moments
    scale with its square, means with it)."""
    total = sum(weight for _, weight in targets)
    if not targets or total <= 0 or any(weight < 0 for _, weight in targets):
        raise ValueError(f"style weights must be non-negative with a positive sum, got "
                         f"{[weight for _, weight in targets]}")
    blended: dict[str, Tensor] = {}
    for target, weight in targets:
        if weight == 0:
            continue
        for name, moment in target.items():
            # pixels stay in [0, 1] units; means scale with the features, second moments squared
            power = 0 if name in (PIXELS, mean_key(PIXELS)) else 1 if name.endswith(MEAN_SUFFIX) else 2
            part = moment.to(device) * (weight / total * feature_scale ** power)
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
