"""Prints at any size: one step over an image too large for memory, taken tile by tile.

The style costs see the image only through sums over positions (each layer's Gram matrix
``Σ f fᵀ`` and channel sums ``Σ f``); the content and TV costs are sums of local terms. So a
tiled step (``tiled_gradient``, the alternative gradient of a ``criterion.Criterion``) first gathers each style layer's sums over the whole
image, tile by tile and without gradients (``read``); takes the style cost of those sums and
its gradient with respect to them; then runs each tile again with gradients and back-propagates
``⟨∂J/∂G, G_tile⟩ + ⟨∂J/∂Σf, Σf_tile⟩`` plus the tile's own content terms
(``backpropagate``). The sums are linear in the tiles' parts, so the gradients that reach the
pixels add up to the whole image's, and the image's gradient is exact up to float rounding.

Each tile is read with a margin of at least the deepest layer's receptive field
(``layers.receptive_radius``), so the features at its core are the whole image's; only the
core's positions count. Tile edges lie on multiples of the network's largest stride, so every
pooling window falls as it does on the whole image. Memory is bounded by one tile and its
margin, not by the image; a step takes longer by the gathering pass and the margins (measured:
1.44× an untiled step at 2048 px in 1024 px tiles, benchmarks/RESULTS.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from . import losses
from ..layers import pools_before, receptive_radius

# features_of(crop, layers) -> {layer: (N, C, h, w)} float32 activations, as the costs see them
FeaturesOf = Callable[[Tensor, Sequence[str]], dict[str, Tensor]]


@dataclass(frozen=True)
class Tile:
    """A tile's ``core`` (the pixels it answers for) and ``crop`` (the core with its margin,
    what the network reads), each ``(top, bottom, left, right)`` in pixels."""

    core: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]

    def pixels(self, image: Tensor) -> Tensor:
        top, bottom, left, right = self.crop
        return image[..., top:bottom, left:right]

    def core_of(self, features: Tensor, layer: str) -> Tensor:
        """The core's positions of a layer's output on the crop."""
        stride = 2 ** pools_before(layer)
        top, bottom, left, right = self.core
        crop_top, _, crop_left, _ = self.crop
        return features[..., (top - crop_top) // stride:(bottom - crop_top) // stride,
                        (left - crop_left) // stride:(right - crop_left) // stride]


    def core_in_image(self, features: Tensor, layer: str) -> Tensor:
        """The core's positions of a layer's output on the whole image (a target's)."""
        stride = 2 ** pools_before(layer)
        top, bottom, left, right = self.core
        return features[..., top // stride:bottom // stride, left // stride:right // stride]


def plan_tiles(height: int, width: int, side: int, layers: Sequence[str]) -> list[Tile]:
    """Tiles of about ``side`` px covering a ``height`` × ``width`` image, row by row, for a
    network read at ``layers``: their edges on multiples of the largest stride among the
    layers, each read with a margin of at least the deepest one's receptive field (both
    rounded up to that stride). One tile if ``side`` covers the image."""
    align = 2 ** max(pools_before(layer) for layer in layers)
    margin = math.ceil(max(receptive_radius(layer) for layer in layers) / align) * align
    side = max(align, side // align * align)

    def cuts(length: int) -> list[tuple[int, int]]:
        edges = list(range(0, length, side)) + [length]
        if len(edges) > 2 and edges[-1] - edges[-2] < align:  # a sliver joins its neighbour
            del edges[-2]
        return list(zip(edges, edges[1:]))

    return [Tile((top, bottom, left, right), (max(0, top - margin), min(height, bottom + margin),
                                               max(0, left - margin), min(width, right + margin)))
            for top, bottom in cuts(height) for left, right in cuts(width)]


@dataclass
class Sums:
    """A layer's sums over the image's positions: ``first`` ``Σ f`` ``(N, C)``, ``second``
    ``Σ f fᵀ`` (the Gram matrix) ``(N, C, C)``, and the layer's size ``(n_H, n_W)``."""

    first: Tensor
    second: Tensor
    size: tuple[int, int]

    @property
    def count(self) -> int:
        return self.size[0] * self.size[1]


def _core_sums(core: Tensor) -> tuple[Tensor, Tensor]:
    n, c = core.shape[:2]
    unrolled = core.reshape(n, c, -1)
    return unrolled.sum(-1), unrolled @ unrolled.transpose(1, 2)


def read(features_of: FeaturesOf, image: Tensor, tiles: Sequence[Tile], whole: Sequence[str] = (),
         summed: Mapping[str, tuple[int, int]] | None = None) -> tuple[dict[str, Tensor], dict[str, Sums]]:
    """One pass over the tiles without gradients: the whole image's activations at the layers
    ``whole`` (a print's content target: small at the deep layers it is taken at), and each
    layer of ``summed`` (layer -> its size on the whole image) summed over the image."""
    summed = summed or {}
    layers = tuple(dict.fromkeys([*whole, *summed]))
    rows: dict[str, list[list[Tensor]]] = {layer: [] for layer in whole}
    sums: dict[str, list[Tensor]] = {}
    with torch.no_grad():
        top = None
        for tile in tiles:
            acts = features_of(tile.pixels(image), layers)
            for layer in whole:
                if tile.core[0] != top:
                    rows[layer].append([])
                rows[layer][-1].append(tile.core_of(acts[layer], layer))
            top = tile.core[0]
            for layer in summed:
                first, second = _core_sums(tile.core_of(acts[layer], layer))
                if layer in sums:
                    sums[layer][0] += first
                    sums[layer][1] += second
                else:
                    sums[layer] = [first, second]
    maps = {layer: torch.cat([torch.cat(row, dim=-1) for row in parts], dim=-2) for layer, parts in rows.items()}
    return maps, {layer: Sums(first, second, summed[layer]) for layer, (first, second) in sums.items()}


def backpropagate(features_of: FeaturesOf, image: Tensor, tiles: Sequence[Tile], layers: Sequence[str],
                  sum_gradients: Mapping[str, tuple[Tensor | None, Tensor | None]],
                  local: Callable[[Tile, dict[str, Tensor]], Tensor]) -> None:
    """Accumulate into ``image.grad`` the gradient of a cost whose style part depends on the
    image through each layer's sums (``sum_gradients``: its gradient with respect to ``Σ f``
    and ``Σ f fᵀ``, either None where it does not depend on it) and whose other part is a sum
    over tiles of ``local(tile, its activations)`` (a scalar: the tile's content terms)."""
    for tile in tiles:
        acts = features_of(tile.pixels(image), layers)
        surrogate = local(tile, acts)
        for layer, (d_first, d_second) in sum_gradients.items():
            first, second = _core_sums(tile.core_of(acts[layer], layer))
            if d_first is not None:
                surrogate = surrogate + (d_first * first).sum()
            if d_second is not None:
                surrogate = surrogate + (d_second * second).sum()
        if surrogate.requires_grad:
            surrogate.backward()


def tiled_gradient(criterion, image: Tensor, tiles: Sequence[Tile],
                   scale_loss: Callable[[Tensor], Tensor] | None = None) -> tuple:
    """``criterion(image)``'s costs ``(total, content, style, tv)`` of an image too large to
    step at once, read tile by tile; with ``scale_loss`` also the gradient of
    ``scale_loss(total.sum())``, accumulated into ``image.grad`` as its backward would. The
    costs come back detached. ``criterion``: a ``criterion.Criterion`` (its targets, params,
    ``features_of``, ``beta``, ``style_sizes``, ``style_cost_of_sums`` and ``pixel_costs``)."""
    targets, params = criterion.targets, criterion.params
    zero = image.new_zeros(image.shape[0], dtype=torch.float32)
    beta = criterion.beta
    j_style, sum_gradients = (_tiled_style(criterion, image, tiles, beta, scale_loss)
                              if params.style_layers else (zero, {}))
    j_content = [zero]
    divisors = {name: losses.content_divisor(targets.content[name], params.content_norm)
                for name in params.content_layers}

    def content(tile: Tile, acts: dict[str, Tensor]) -> Tensor:
        """The tile's content terms: its core's squared errors over the whole target's divisor."""
        part = zero
        for name in params.content_layers:
            generated = tile.core_of(acts[name], name)
            target = tile.core_in_image(targets.content[name], name)
            part = part + ((target - generated) ** 2).sum(dim=(1, 2, 3)) / divisors[name]
        j_content[0] = j_content[0] + part.detach()
        return scale_loss(params.content_weight * part.sum()) if scale_loss is not None else part.sum()

    if params.content_layers or sum_gradients:
        with torch.enable_grad() if scale_loss is not None else torch.no_grad():
            backpropagate(criterion.features_of, image, tiles,
                          params.feature_layers if sum_gradients else params.content_layers, sum_gradients, content)
    with torch.enable_grad() if scale_loss is not None else torch.no_grad():  # on the whole image: no tiles
        j_tv, j_ties = criterion.pixel_costs(image, zero)
        if scale_loss is not None and (params.tv_weight or targets.temporal):
            scale_loss(params.tv_weight * j_tv.sum() + j_ties.sum()).backward()
    j_tv, j_ties = j_tv.detach(), j_ties.detach()
    total = losses.total_cost(j_content[0], j_style, params.content_weight, beta, j_tv, params.tv_weight)
    return (total + j_ties if targets.temporal else total).detach(), j_content[0], j_style, j_tv


def _tiled_style(criterion, image: Tensor, tiles: Sequence[Tile], beta, scale_loss) -> tuple[Tensor, dict]:
    """The style cost ``(N,)`` from each layer's sums over the image, gathered tile by tile;
    with ``scale_loss`` also the gradient of ``scale_loss((beta · cost).sum())`` with respect
    to each layer's sums, which the tiles' backward passes carry on to the pixels."""
    _, sums = read(criterion.features_of, image.detach(), tiles, summed=criterion.style_sizes(image))
    wanted = scale_loss is not None
    for part in sums.values():
        part.first.requires_grad_(wanted)
        part.second.requires_grad_(wanted)
    with torch.enable_grad() if wanted else torch.no_grad():
        j_style = criterion.style_cost_of_sums(sums)
    sum_gradients = {}
    if wanted:
        leaves = [t for part in sums.values() for t in (part.first, part.second)]
        grads = torch.autograd.grad(scale_loss((beta * j_style).sum()), leaves, allow_unused=True)
        sum_gradients = {name: (grads[2 * i], grads[2 * i + 1]) for i, name in enumerate(sums)}
    return j_style.detach(), sum_gradients
