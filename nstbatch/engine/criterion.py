"""The criterion: a stage's costs bound to their targets — content, style (Gram or W2), TV and a
video frame's temporal ties — as one object, ``loss = criterion(image)`` with its parts, whose
``gradient`` back-propagates them whole or, for a print, tile by tile (``tiles.tiled_gradient``,
an alternative gradient of the same criterion). The loop over pixels descends it
(``descent.py``); any other user (a network trainer) calls the same object on any batch of
images. Also what a job is pulled towards (``job_targets``, ``stage_targets``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from . import losses, temporal
from .regions import Regions, guided_style_cost, kept_content_weights
from ..config import StyleParams
from .pixels import resize_tensor
from .targets import StyleTarget
from .tiles import Tile, read, tiled_gradient
from ..layers import pools_before
from .vgg import VGGFeatures, check_image_size


@dataclass(frozen=True)
class Targets:
    """What the generated image is pulled towards, computed once per job."""

    content: dict[str, Tensor]  # layer -> activation of the content image, (N, C, H, W)
    # the blended style target (targets.py): per layer the style image(s)' channel means and
    # Gram matrix per position, G_S / (n_H·n_W), (1, ...) or one per image (N, ...)
    style: StyleTarget
    # (N,): each image's share of beta under params.style_cap (None: no cap, the full beta)
    style_factor: Tensor | None = None
    # style_loss w2: layer -> losses.w2_target of the style (covariance, its root, eps)
    w2: dict[str, tuple[Tensor, Tensor, Tensor]] | None = None
    # a video frame's ties to earlier outputs: (that output warped into this frame (N, 3, H, W),
    # where the warp is trusted (N, 1, H, W)), weighted by params.temporal_weight (temporal.py)
    temporal: tuple[tuple[Tensor, Tensor], ...] = ()
    # a painting per part of the picture and parts kept as photographed (regions.py): each
    # region's style cost on its guided moments, the content cost weighted up where kept
    regions: Regions | None = None
    region_w2: tuple[dict[str, tuple[Tensor, Tensor, Tensor]], ...] | None = None  # style_loss w2: per region


# gradient(image, scale_loss): the costs (total, content, style, tv), each (N,), and the gradient
# of scale_loss(total.sum()) accumulated into image.grad (scale_loss None: the costs alone)
Gradient = Callable[[Tensor, "Callable[[Tensor], Tensor] | None"], tuple]


class Criterion:
    """A stage's costs against ``targets``: ``criterion(image)`` is ``(total, content, style,
    tv)``, each ``(N,)``, with no gradient; ``gradient(image, scale_loss)`` gives the same and
    accumulates the gradient of ``scale_loss(total.sum())`` into ``image.grad`` (the
    ``Gradient`` a descent takes), the whole image at once or, with ``tiles``, tile by tile
    (memory bounded by a tile and its margin, the gradient the whole image's to float
    rounding). ``dtype``: the network's autocast precision (costs stay fp32);
    ``checkpointing``: the network recomputes its activations in the backward pass."""

    def __init__(self, features: VGGFeatures, targets: Targets, params: StyleParams,
                 dtype: torch.dtype | None = None, tiles: Sequence[Tile] | None = None,
                 checkpointing: bool = False):
        self.features, self.targets, self.params, self.dtype, self.tiles = features, targets, params, dtype, tiles
        self.checkpointing = checkpointing

    def __call__(self, image: Tensor) -> tuple:
        return self.gradient(image, None)

    def gradient(self, image: Tensor, scale_loss: Callable[[Tensor], Tensor] | None) -> tuple:
        if self.tiles is not None:
            return tiled_gradient(self, image, self.tiles, scale_loss)
        if scale_loss is None:
            with torch.no_grad():
                return costs(self.features, image, self.targets, self.params, self.dtype)
        parts = costs(self.features, image, self.targets, self.params, self.dtype, self.checkpointing)
        scale_loss(parts[0].sum()).backward()
        return parts

    # What the tiled gradient (``tiles.tiled_gradient``) reads of the criterion: the same
    # terms, taken from activations of crops and from each style layer's sums over the image.

    def features_of(self, crop: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        return _scaled(self.features, crop, layers, self.params.feature_scale, self.dtype, self.checkpointing)

    @property
    def beta(self):
        return _beta(self.targets, self.params)

    def style_sizes(self, image: Tensor) -> dict[str, tuple[int, int]]:
        return _style_sizes(image, self.params)

    def style_cost_of_sums(self, sums) -> Tensor:
        return _style_cost_of_sums(sums, self.targets.style, self.params, self.targets.w2)

    def pixel_costs(self, image: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
        return _pixel_costs(image, self.targets, self.params, zero)


def job_targets(features: VGGFeatures, content: Tensor, style_targets: StyleTarget, params: StyleParams,
                dtype: torch.dtype | None = None, tiles: Sequence[Tile] | None = None,
                regions: Regions | None = None) -> Targets:
    """What a job is pulled towards, once per job at its full size: the content's activations,
    the blended style target (``targets.blend_targets``) on the content's device, its W2
    targets (``style_loss: w2``), and under ``style_cap`` each image's share of beta, from the
    content image's own style cost. ``regions``: a painting per part of the picture (each
    region's own target, ``regions.py``) instead of the one style target."""
    check_image_size(*content.shape[-2:], params.feature_layers, "content image")
    style = style_targets.to(content.device)
    w2 = _w2_targets(style, params) if params.style_loss == "w2" else None
    if regions is not None:
        if tiles is not None:
            raise ValueError("regions (masks, keep) are not stepped in tiles yet: give the job tile: off"
                             " or a smaller size")
        return _region_targets(features, content, style, params, dtype, regions.to(content.device))
    capped = bool(params.style_cap and params.style_layers)
    if tiles is not None:  # a print: the content's activations and own style cost, in one pass of tiles
        acts, sums = read(_features_of(features, params, dtype), content, tiles, params.content_layers,
                          _style_sizes(content, params) if capped else None)
        factor = losses.style_cap_factor(_style_cost_of_sums(sums, style, params, w2), params.style_cap) if capped else None
        return Targets(acts, style, factor, w2)
    layers = params.feature_layers if capped else params.content_layers
    with torch.no_grad():
        acts = _scaled(features, content, layers, params.feature_scale, dtype) if layers else {}
        factor = (losses.style_cap_factor(_style_cost(acts, Targets({}, style, w2=w2), params), params.style_cap)
                  if capped else None)
    return Targets({name: acts[name] for name in params.content_layers}, style, factor, w2)


def _w2_targets(style: StyleTarget, params: StyleParams) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    return {name: losses.w2_target(style.layers[name].mean, style.layers[name].second) for name in params.style_layers}


def _region_targets(features: VGGFeatures, content: Tensor, style: StyleTarget, params: StyleParams,
                    dtype: torch.dtype | None, regions: Regions) -> Targets:
    """``job_targets`` for a job with regions: under ``style_cap``, the content's own guided
    style cost caps beta as the whole picture's does."""
    w2 = tuple(_w2_targets(target, params) for target in regions.styles) if params.style_loss == "w2" else None
    capped = bool(params.style_cap and params.style_layers)
    layers = params.feature_layers if capped else params.content_layers
    targets = Targets({}, style, regions=regions, region_w2=w2)
    with torch.no_grad():
        acts = _scaled(features, content, layers, params.feature_scale, dtype) if layers else {}
        factor = losses.style_cap_factor(_style_cost(acts, targets, params), params.style_cap) if capped else None
    return dataclasses.replace(targets, content={name: acts[name] for name in params.content_layers},
                               style_factor=factor)


def stage_targets(features: VGGFeatures, content: Tensor, job: Targets, params: StyleParams,
                  dtype: torch.dtype | None = None, tiles: Sequence[Tile] | None = None) -> Targets:
    """A stage's targets: the content's activations at the stage's size; the job's style
    target, style_cap factors and W2 targets serve every stage (Grams are per position)."""
    size = tuple(content.shape[-2:])
    ties = tuple((resize_tensor(warped, size, "bilinear"), resize_tensor(weights, size, "bilinear"))
                 for warped, weights in job.temporal)
    if tiles is not None:
        acts, _ = read(_features_of(features, params, dtype), content, tiles, params.content_layers)
        return dataclasses.replace(job, content=acts, temporal=ties)
    with torch.no_grad():
        acts = (_scaled(features, content, params.content_layers, params.feature_scale, dtype)
                if params.content_layers else {})
    return dataclasses.replace(job, content=acts, temporal=ties)


def costs(features: VGGFeatures, image: Tensor, targets: Targets, params: StyleParams,
          dtype: torch.dtype | None = None, checkpointing: bool = False):
    """``(total, content, style, tv)``, each of shape ``(N,)``."""
    acts = _scaled(features, image, params.feature_layers, params.feature_scale, dtype, checkpointing)
    zero = image.new_zeros(image.shape[0], dtype=torch.float32)
    kept = (lambda size: kept_content_weights(targets.regions, size)) if targets.regions is not None else None
    j_content = (losses.content_cost_layers(targets.content, acts, params.content_layers,
                                            params.content_norm, kept)
                 if params.content_layers else zero)
    j_style = _style_cost(acts, targets, params) if params.style_layers else zero
    j_tv, j_ties = _pixel_costs(image, targets, params, zero)
    total = losses.total_cost(j_content, j_style, params.content_weight, _beta(targets, params), j_tv, params.tv_weight)
    return (total + j_ties if targets.temporal else total), j_content, j_style, j_tv


def _beta(targets: Targets, params: StyleParams):
    """The style weight: ``style_weight``, times each image's share under ``style_cap``."""
    return params.style_weight if targets.style_factor is None else params.style_weight * targets.style_factor


def _pixel_costs(image: Tensor, targets: Targets, params: StyleParams, zero: Tensor) -> tuple[Tensor, Tensor]:
    """The costs taken on the pixels, not the network's features, each ``(N,)``: TV, and a
    video frame's ties to earlier outputs, already weighted (``temporal_weight``, summed over
    its ties; ``zero`` without ties)."""
    j_tv = losses.tv_cost(image) if params.tv_weight else zero
    j_ties = (params.temporal_weight * sum(temporal.temporal_cost(image, warped, weights)
                                           for warped, weights in targets.temporal)) if targets.temporal else zero
    return j_tv, j_ties


def _features_of(features: VGGFeatures, params: StyleParams, dtype: torch.dtype | None,
                 checkpointing: bool = False):
    return lambda crop, layers: _scaled(features, crop, layers, params.feature_scale, dtype, checkpointing)


def _style_sizes(image: Tensor, params: StyleParams) -> dict[str, tuple[int, int]]:
    """Each style layer's (n_H, n_W) on the whole image."""
    height, width = image.shape[-2:]
    return {name: (height >> pools_before(name), width >> pools_before(name)) for name in params.style_layers}


def _style_cost_of_sums(sums, style: StyleTarget, params: StyleParams,
                        w2: dict[str, tuple[Tensor, Tensor, Tensor]] | None = None) -> Tensor:
    """``_style_cost`` from each layer's sums over the image (``tiles.Sums``)."""
    weights = dict(zip(params.style_layers, params.style_layer_weights))
    if w2 is not None:
        return sum(weight * losses.w2_moments_cost(sums[name].first / sums[name].count,
                                                   sums[name].second / sums[name].count,
                                                   style.layers[name].mean, style.layers[name].second, w2[name],
                                                   params.style_norm)
                   for name, weight in weights.items())
    at_size = {name: style.layers[name].second * sums[name].count for name in weights}  # G_S at this size
    return losses.style_cost_of_grams(at_size, {name: sums[name].second for name in weights},
                                      {name: sums[name].size for name in weights}, weights, params.style_norm)


def _style_cost(acts: dict[str, Tensor], targets: Targets, params: StyleParams) -> Tensor:
    """The style cost (N,) of activations against the style target: its per-position Grams, or
    under ``style_loss: w2`` its moments; with regions, each region's guided moments against
    its own painting's (``regions.guided_style_cost``)."""
    weights = dict(zip(params.style_layers, params.style_layer_weights))
    if targets.regions is not None:
        return guided_style_cost(acts, targets.regions, weights, params.style_norm, targets.region_w2)
    style, w2 = targets.style, targets.w2
    if w2 is not None:
        return sum(weight * losses.w2_layer_cost(acts[name], style.layers[name].mean, style.layers[name].second,
                                                 w2[name], params.style_norm)
                   for name, weight in weights.items())
    at_size = {name: moments.second * (acts[name].shape[-2] * acts[name].shape[-1])
               for name, moments in style.layers.items()}  # back to G_S at this size
    return losses.style_cost(at_size, acts, weights, params.style_norm)


def _scaled(features: VGGFeatures, image: Tensor, layers, scale: float,
            dtype: torch.dtype | None = None, checkpointing: bool = False) -> dict[str, Tensor]:
    """Activations at ``layers`` times ``scale``, in float32 (float64 from a float64 network).
    With ``dtype`` the network runs under autocast; its outputs are cast back so Gram matrices
    and costs are float32."""
    with torch.autocast(image.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        acts = features(image, layers, checkpointing)
    return {name: a.to(torch.promote_types(a.dtype, torch.float32)) * scale for name, a in acts.items()}
