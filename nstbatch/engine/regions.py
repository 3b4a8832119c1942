"""Spatial control (Gatys, Ecker, Bethge, Hertzmann & Shechtman 2017, "Controlling Perceptual
Factors in Neural Style Transfer", §4): a painting per part of the picture, and parts kept as
photographed.

Each region r has a guidance channel T_r in [0, 1] over the content (a mask: white where its
painting paints). At each style layer T_r is brought to the layer's resolution (area
averaging) and the layer's features are guided by it: the region's second moment is
``Σ_p T_r(p)² f(p) f(p)ᵀ / Σ_p T_r(p)²`` — the Gram matrix of ``F ∘ T_r`` per unit of the
mask's mass — and is matched to its own painting's per-position Gram (``StyleTarget``) by the
preset's style cost, as if the region filled the picture. Each region's cost is weighted by its
share of the picture, so that a pixel of a region is pulled towards its painting as hard as a
pixel of a whole picture stylized with that painting alone. The W2 cost takes the guided mean
and second moment the same way.

``keep`` (white: the photo kept) takes its pixels out of every region, weights the content cost
up there (``KEEP_CONTENT``), and at the end lays the photo back over the picture through a
softened edge (``keep_photo``: a Gaussian of ``KEEP_EDGE`` of the picture's long side). Pixels
no region covers are kept as photographed too: a mask set that leaves a part uncovered leaves
it to the photo.

Departures from the paper: the masks go down by area averaging at every layer (the paper also
tries eroding them to the region's inside); the region's share weights its cost (the paper sums
the regions' costs with hand-set weights).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import losses
from .targets import Moments, StyleTarget
from .temporal import gaussian

# Inside a keep mask the content cost weighs this many times more (Gatys et al. weight the
# content per pixel the same way), so the optimisation leaves the kept part as the photo.
KEEP_CONTENT = 10.0
# The keep mask's edge, softened over this share of the picture's long side before the photo
# is laid back (no seam where the photo meets the painting).
KEEP_EDGE = 0.01


@dataclass(frozen=True)
class Regions:
    """A job's regions: ``masks`` ``(N, R, H, W)`` in [0, 1] at the content's size (one channel
    per region, already with ``keep`` taken out), ``styles`` each region's painting's target
    (R of them), and ``keep`` ``(N, 1, H, W)``: where the photo is kept (None: nowhere)."""

    masks: Tensor
    styles: tuple[StyleTarget, ...]
    keep: Tensor | None = None

    @classmethod
    def of(cls, masks: Tensor, styles: Sequence[StyleTarget], keep: Tensor | None = None) -> "Regions":
        """Regions from masks as drawn (``(N, R, H, W)``, white: the region's painting paints
        there) and an optional keep mask: the kept pixels, and those no mask covers, are left
        to the photo."""
        if masks.shape[1] != len(styles):
            raise ValueError(f"{masks.shape[1]} mask(s) for {len(styles)} painting(s)")
        masks = masks.clamp(0, 1)
        uncovered = (1 - masks.sum(1, keepdim=True)).clamp(0, 1)
        kept = uncovered if keep is None else torch.maximum(keep.clamp(0, 1), uncovered)
        if float(kept.max()) <= 0:
            kept = None
        else:
            masks = masks * (1 - kept)
        return cls(masks, tuple(styles), kept)

    @classmethod
    def stack(cls, each: Sequence["Regions"]) -> "Regions":
        """Several images' regions as one batch's (as many regions each, at one size): the
        masks stacked, region r's targets stacked (``StyleTarget.stack``: each image towards
        its own painting), and the keep masks (nothing kept: zeros) where any image keeps."""
        if len({len(r.styles) for r in each}) > 1:
            raise ValueError("a batch's images need as many regions each")
        keep = None
        if any(r.keep is not None for r in each):
            keep = torch.cat([r.keep if r.keep is not None else torch.zeros_like(r.masks[:, :1]) for r in each])
        return cls(torch.cat([r.masks for r in each]),
                   tuple(StyleTarget.stack([r.styles[k] for r in each]) for k in range(len(each[0].styles))), keep)

    def to(self, device) -> "Regions":
        return Regions(self.masks.to(device), tuple(style.to(device) for style in self.styles),
                       None if self.keep is None else self.keep.to(device))

    def at(self, size: tuple[int, int]) -> Tensor:
        """The masks at a layer's (or a stage's) ``size``: area averages."""
        return _resized(self.masks, size)

    def keep_at(self, size: tuple[int, int]) -> Tensor | None:
        return None if self.keep is None else _resized(self.keep, size)


def _resized(mask: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    if mask.shape[-2] >= size[0] and mask.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(mask, size)
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)


def guided_moments(a: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The features ``a`` ``(N, C, h, w)`` guided by one region's ``mask`` ``(N, 1, h, w)``:
    the channel means ``(N, C)`` and second moment ``(N, C, C)`` weighted by the mask's square,
    and the region's share of the layer ``(N,)``."""
    n, c, h, w = a.shape
    weight = (mask.float() ** 2).reshape(n, 1, h * w)
    mass = weight.sum(-1).clamp_min(1e-8)  # (N, 1)
    unrolled = a.float().reshape(n, c, h * w)
    mean = (unrolled * weight).sum(-1) / mass
    second = (unrolled * weight) @ unrolled.transpose(1, 2) / mass[:, :, None]
    return mean, second, weight.sum(-1)[:, 0] / (h * w)


def guided_target(features, image: Tensor, mask: Tensor, style_layers: Sequence[str]) -> StyleTarget:
    """A painting's target over one part of it (region to region, the paper's Fig. 3): the
    moments of its features, and of its pixels, guided by ``mask`` ``(1, 1, h, w)`` over
    ``image`` ``(1, 3, h, w)`` as a region's are over the picture (``guided_moments``)."""
    with torch.no_grad():
        acts = features(image, tuple(style_layers))
        layers = {}
        for name in style_layers:
            mean, second, _ = guided_moments(acts[name], _resized(mask, tuple(acts[name].shape[-2:])))
            layers[name] = Moments(mean, second)
        mean, second, _ = guided_moments(image, _resized(mask, tuple(image.shape[-2:])))
    return StyleTarget(layers, Moments(mean, second))


def guided_style_cost(acts: Mapping[str, Tensor], regions: Regions, layer_weights: Mapping[str, float],
                      normalization: str, w2: Sequence[Mapping[str, tuple]] | None = None) -> Tensor:
    """``Σ_r share_r · style cost of region r`` per image ``(N,)``: each region's guided
    moments against its own painting's, at each layer (Gram, or with ``w2`` — one mapping of
    ``losses.w2_target`` per region — the W2 cost)."""
    total = None
    for layer, weight in layer_weights.items():
        a = acts[layer]
        masks = regions.at(tuple(a.shape[-2:]))
        for r, style in enumerate(regions.styles):
            mean, second, share = guided_moments(a, masks[:, r:r + 1])
            target = style.layers[layer]
            if w2 is not None:
                cost = losses.w2_moments_cost(mean, second, target.mean, target.second, w2[r][layer], normalization)
            else:
                positions = a.shape[-2] * a.shape[-1]  # as if the region filled the layer
                cost = losses.style_cost_of_grams({layer: target.second * positions}, {layer: second * positions},
                                                  {layer: tuple(a.shape[-2:])}, {layer: 1.0}, normalization)
            part = weight * share * cost
            total = part if total is None else total + part
    return total


def kept_content_weights(regions: Regions | None, size: tuple[int, int]) -> Tensor | None:
    """The content cost's weight per position at a layer of ``size``: 1, and ``1 +
    KEEP_CONTENT`` inside the keep mask (None: no keep mask)."""
    if regions is None or regions.keep is None:
        return None
    return 1 + KEEP_CONTENT * regions.keep_at(size)


def keep_photo(image: Tensor, photo: Tensor, regions: Regions | None) -> Tensor:
    """The picture with the photo laid back where it is kept, through the keep mask's softened
    edge; ``image`` and ``photo`` ``(N, 3, h, w)`` at any one size."""
    if regions is None or regions.keep is None:
        return image
    keep = regions.keep_at(tuple(image.shape[-2:])).to(image)
    sigma = KEEP_EDGE * max(image.shape[-2:])
    if sigma >= 0.5:
        keep = gaussian(keep, sigma)
    return keep * photo.to(image) + (1 - keep) * image

