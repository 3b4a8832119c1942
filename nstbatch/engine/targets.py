"""Style targets: the feature statistics of a style image, computed once and reused.

A ``StyleTarget`` holds, per style layer, the ``Moments`` of the *unscaled* activations: the
channel means ``E[f]`` ``(1, C)`` and the raw second moment ``E[f fᵀ] = G / (n_H·n_W)``
``(1, C, C)``, both float32; and the same two moments of the (prepared) style image's own
pixels, its palette (``init: palette``). Per position, so they do not depend on the style
image's size, and before ``feature_scale`` and blend weights, which ``blend_targets`` applies,
so one cached target serves every job that shares the style, size, layers, pooling and
weights. The Gram cost reads the second moments; the W2 cost both (its covariance is
``E[f fᵀ] − μ μᵀ``). Both blend linearly: a blend's are the statistics of the styles' features
pooled in the blend's proportions. A mixed-style batch stacks its images' targets (``stack``):
``(N, C)`` and ``(N, C, C)``, one per image.

On disk (the cache) and out of the ONNX model a target is flat: ``tensors()`` names the second
moments by their layer (``relu1_1``, ``pixels``) and the means ``relu1_1:mean``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Moments:
    """The first two moments of features (or pixels) per position: ``mean`` ``E[f]`` ``(N, C)``
    and ``second`` ``E[f fᵀ]`` ``(N, C, C)``, float32."""

    mean: Tensor
    second: Tensor

    def covariance(self) -> Tensor:
        return losses.covariance(self.mean, self.second)

    def to(self, device) -> "Moments":
        return Moments(self.mean.to(device), self.second.to(device))


@dataclass(frozen=True)
class StyleTarget:
    """What a style image pulls towards: ``layers``, per style layer (in the order of
    ``style_layers``) its features' ``Moments``, and ``pixels``, its own pixels' (None for a
    target without style layers)."""

    layers: dict[str, Moments]
    pixels: Moments | None = None

    def to(self, device) -> "StyleTarget":
        return StyleTarget({name: m.to(device) for name, m in self.layers.items()},
                           self.pixels.to(device) if self.pixels is not None else None)

    def palette(self) -> tuple[Tensor, Tensor] | None:
        """The colour mean ``(N, 3)`` and covariance ``(N, 3, 3)`` of the style's pixels, in
        [0, 1] units (None without them)."""
        return None if self.pixels is None else (self.pixels.mean, self.pixels.covariance())

    def tensors(self) -> dict[str, Tensor]:
        """The target flat, as the cache stores it and the ONNX model outputs it
        (``target_names``)."""
        parts = dict(self.layers, **({PIXELS: self.pixels} if self.pixels is not None else {}))
        return {**{name: m.second for name, m in parts.items()},
                **{name + MEAN_SUFFIX: m.mean for name, m in parts.items()}}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], style_layers: Sequence[str]) -> "StyleTarget":
        """The inverse of ``tensors``; a ``KeyError`` names what a flat target lacks, and a
        flat target with more than ``style_layers`` asks for is a ``ValueError`` (either way,
        not this version's target for those layers)."""
        if sorted(tensors) != sorted(target_names(style_layers)):
            missing = sorted(set(target_names(style_layers)) - set(tensors))
            if missing:
                raise KeyError(f"the target lacks {', '.join(missing)}")
            raise ValueError(f"the target holds more than {', '.join(style_layers)}")

        def moments(name: str) -> Moments:
            return Moments(tensors[name + MEAN_SUFFIX], tensors[name])

        return cls({name: moments(name) for name in style_layers}, moments(PIXELS))

    @classmethod
    def stack(cls, targets: Sequence["StyleTarget"]) -> "StyleTarget":
        """One target per image of a batch, in its order: ``(N, C)`` and ``(N, C, C)``."""
        def cat(parts: Sequence[Moments]) -> Moments:
            return Moments(torch.cat([m.mean for m in parts]), torch.cat([m.second for m in parts]))

        first = targets[0]
        return cls({name: cat([t.layers[name] for t in targets]) for name in first.layers},
                   cat([t.pixels for t in targets]) if first.pixels is not None else None)


def target_names(style_layers: Sequence[str]) -> list[str]:
    """A flat style target's names (``StyleTarget.tensors``), in the order ``TargetsGraph``
    outputs them."""
    layers = list(style_layers) + [PIXELS]
    return layers + [n + MEAN_SUFFIX for n in layers]


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


def torch_style_targets(features: VGGFeatures, image: Tensor, style_layers: Sequence[str]) -> StyleTarget:
    """The PyTorch way to a style target (also the reference for the ONNX one)."""
    with torch.no_grad():
        outputs = TargetsGraph(features, style_layers)(image)
    return StyleTarget.from_tensors(dict(zip(target_names(style_layers), outputs)), style_layers)


def blend_targets(targets: Sequence[tuple[StyleTarget, float]], feature_scale: float,
                  device: torch.device | str | None = None) -> StyleTarget:
    """Weight-normalised sum of several styles' targets, at ``feature_scale`` (the features'
    moments scale with it; the pixels' stay in [0, 1] units)."""
    total = sum(weight for _, weight in targets)
    if not targets or total <= 0 or any(weight < 0 for _, weight in targets):
        raise ValueError(f"style weights must be non-negative with a positive sum, got "
                         f"{[weight for _, weight in targets]}")
    parts = [(target.to(device), weight / total) for target, weight in targets if weight]

    def mix(pick, scale: float) -> Moments:
        """The parts' moments, weighted, of features times ``scale``."""
        chosen = [(pick(target), weight) for target, weight in parts]
        return Moments(sum(m.mean * (weight * scale) for m, weight in chosen),
                       sum(m.second * (weight * scale ** 2) for m, weight in chosen))

    first = parts[0][0]
    return StyleTarget({name: mix(lambda t, n=name: t.layers[n], feature_scale) for name in first.layers},
                       mix(lambda t: t.pixels, 1.0) if first.pixels is not None else None)


def target_key(image_sha256: str, size: int, weights_id: str, pooling: str,
               style_layers: Sequence[str], color: str = "") -> str:
    """Content address of a style target: everything that changes its numbers. ``color``:
    how the style was prepared (``luminance``, or ``histogram:<content sha256>``)."""
    data = {"format": TARGETS_FORMAT, "image": image_sha256, "size": size, "weights": weights_id,
            "pooling": pooling, "layers": list(style_layers)}
    if color:
        data["color"] = color
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
