"""The costs of Gatys-style transfer, as pure functions of ``(N, C, H, W)`` tensors.

Each cost returns one value per image, shape ``(N,)``, so a batch of images can share one
forward pass. Targets may have a batch of 1 and broadcast against the generated batch.
The formulas are the seed's, made exact (docs/method.md); the normalisation of each
is defined once, here, and chosen by name: ``seed`` (the seed's formulas) or ``balanced``.

Why ``balanced``: the seed's layer cost is a quarter of the per-position Gram MSE, and on Caffe
VGG-19 that MSE differs by 10⁴–10⁵ between layers (relu4_1 ≈ 10², relu1_1 ≈ 10⁻³), so with
equal layer weights relu4_1 alone drives the style and colour (relu1_1) is never transferred.
``balanced`` divides each layer's cost by the mean square of its own target — a relative
error, 0 at the target and about 1 for an unrelated image on every layer — so layer weights
mean what they say and α/β weigh two terms of one scale. The unit comes from the target
alone (for a blend, from the blended target), so it travels with cached targets untouched.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor


def _at_least_float32(a: Tensor) -> Tensor:
    # Gram entries are sums over H*W products: in fp16/bf16 they overflow or lose most digits,
    # so they are always formed in float32 (float64 inputs stay float64).
    return a.to(torch.promote_types(a.dtype, torch.float32))


def gram_matrix(a: Tensor) -> Tensor:
    """``G = A Aᵀ`` over the unrolled activations: ``(N, C, H, W) -> (N, C, C)``."""
    n, c, h, w = a.shape
    unrolled = _at_least_float32(a).reshape(n, c, h * w)  # (N, C, H*W)
    return unrolled @ unrolled.transpose(1, 2)  # (N, C, C)


def gram_style_cost(gram_S: Tensor, gram_G: Tensor, n_H: int, n_W: int) -> Tensor:
    """``Σ(G_S − G_G)² / (2·n_H·n_W·n_C)²`` per image, from Gram matrices ``(N, C, C)``."""
    n_C = gram_G.shape[-1]
    return ((gram_S - gram_G) ** 2).sum(dim=(-2, -1)) / (2.0 * n_H * n_W * n_C) ** 2


def _relative(squared_error: Tensor, target: Tensor, dims: tuple[int, ...]) -> Tensor:
    # The guard only keeps an all-zero target (a layer that is dead for this image) from 0/0.
    return squared_error / (target ** 2).sum(dim=dims).clamp_min(1e-30)


def balanced_gram_cost(gram_S: Tensor, gram_G: Tensor) -> Tensor:
    """``Σ(G_S − G_G)² / Σ G_S²`` per image: the layer's relative error. Any common factor of
    the two Grams cancels (per position or not, ``feature_scale`` or not)."""
    gram_S, gram_G = _at_least_float32(gram_S), _at_least_float32(gram_G)
    return _relative(((gram_S - gram_G) ** 2).sum(dim=(-2, -1)), gram_S, (-2, -1))


def style_cost(gram_targets: Mapping[str, Tensor], activations: Mapping[str, Tensor],
               layer_weights: Mapping[str, float], normalization: str = "seed") -> Tensor:
    """``Σ_l λ_l · layer cost``, with the style targets given as Gram matrices per layer
    (``G_S`` at the generated image's size for ``seed``; any common scale for ``balanced``)."""
    return style_cost_of_grams(gram_targets, {layer: gram_matrix(activations[layer]) for layer in layer_weights},
                               {layer: tuple(activations[layer].shape[-2:]) for layer in layer_weights},
                               layer_weights, normalization)


def style_cost_of_grams(gram_targets: Mapping[str, Tensor], grams: Mapping[str, Tensor],
                        sizes: Mapping[str, tuple[int, int]], layer_weights: Mapping[str, float],
                        normalization: str = "seed") -> Tensor:
    """``style_cost`` from the generated image's Gram matrices ``G_G`` ``(N, C, C)`` and each
    layer's ``(n_H, n_W)``: what a tiled step gathers tile by tile (``tiles``)."""
    if normalization not in ("seed", "balanced"):
        raise ValueError(f"unknown style normalization {normalization!r} (seed, balanced)")
    total = None
    for layer, weight in layer_weights.items():
        if normalization == "balanced":
            cost = weight * balanced_gram_cost(gram_targets[layer], grams[layer])
        else:
            cost = weight * gram_style_cost(gram_targets[layer], grams[layer], *sizes[layer])
        total = cost if total is None else total + cost
    if total is None:
        raise ValueError("style_cost needs at least one layer")
    return total


# --- the Wasserstein-2 style cost (crowsonkb/style-transfer-pytorch), beside the Gram one -----
# Each layer's features are fitted by a Gaussian (channel means, covariance) and the cost is the
# squared W2 distance between the image's fit and the style's, per channel. Matching mean and
# covariance matches the per-position Gram too (G/HW = Σ + μμᵀ), so the Gram yardstick stays
# fair. Targets are (mean, raw second moment) pairs, which blend linearly: the statistics of
# the pooled features of several styles.

def feature_moments(a: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, over positions: the channel means ``(N, C)`` and the raw second moment
    ``E[f fᵀ]`` ``(N, C, C)`` of ``(N, C, H, W)`` activations, in float32 at least."""
    n, c, h, w = a.shape
    unrolled = _at_least_float32(a).reshape(n, c, h * w)  # (N, C, H*W)
    return unrolled.mean(-1), unrolled @ unrolled.transpose(1, 2) / (h * w)


def covariance(mean: Tensor, second: Tensor, eps: float | Tensor = 0.0) -> Tensor:
    """``E[f fᵀ] − μ μᵀ + eps·I``: ``(N, C, C)``. ``eps`` (a number, or ``(N, 1, 1)``) keeps a
    rank-deficient covariance (fewer positions than channels, a flat painting) away from a
    singular matrix."""
    cov = second - mean.unsqueeze(-1) * mean.unsqueeze(-2)
    return cov + eps * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)


def _symmetric_eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    return torch.linalg.eigh((a + a.transpose(-2, -1)) / 2)


def sqrtm_psd(a: Tensor) -> Tensor:
    """The symmetric square root of symmetric positive semi-definite matrices ``(…, C, C)``,
    by an eigendecomposition (eigenvalues below 0, rounding's, taken as 0). For targets,
    made once per style: no gradient is needed through it."""
    values, vectors = _symmetric_eigh(a)
    return (vectors * values.clamp_min(0).sqrt().unsqueeze(-2)) @ vectors.transpose(-2, -1)


def trace_sqrtm_psd(a: Tensor, floor: float = 1e-10) -> Tensor:
    """``tr(A^½)`` of symmetric PSD matrices ``(…, C, C)`` -> ``(…)``, and its gradient
    ``½ A^-½``. Only the eigenvalues are needed (their gradient ``q qᵀ`` is stable even when
    they repeat, unlike an eigenvector's); eigenvalues under ``floor`` times the largest
    count as that, with no gradient, since d√λ = dλ / 2√λ is unbounded at 0 (relative, so
    that it means the same at every scale of the features)."""
    values = torch.linalg.eigvalsh((a + a.transpose(-2, -1)) / 2)
    least = floor * values.detach().amax(-1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)
    return torch.maximum(values, least).sqrt().sum(-1)


def w2_style_cost(mean_G: Tensor, cov_G: Tensor, mean_S: Tensor, cov_S: Tensor,
                  cov_S_sqrt: Tensor | None = None) -> Tensor:
    """``(‖μ_G − μ_S‖² + tr(Σ_G + Σ_S − 2(Σ_S^½ Σ_G Σ_S^½)^½)) / C`` per image: the squared
    Wasserstein-2 distance between the Gaussian fits, per channel. ``cov_S_sqrt``: Σ_S^½ if
    known already (a target's, computed once)."""
    channels = mean_G.shape[-1]
    root = sqrtm_psd(cov_S) if cov_S_sqrt is None else cov_S_sqrt
    cross = root @ cov_G @ root  # (N, C, C)
    traces = torch.diagonal(cov_G, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(cov_S, dim1=-2, dim2=-1).sum(-1)
    distance = ((mean_G - mean_S) ** 2).sum(-1) + traces - 2 * trace_sqrtm_psd(cross)
    return distance.clamp_min(0) / channels  # (rounding can dip below the true 0 at the target)


W2_EPS = 1e-4  # covariances get W2_EPS times the target's mean channel power on the diagonal


def w2_target(mean_S: Tensor, second_S: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """What the W2 cost needs of a style target, made once per job: the covariance
    ``(N, C, C)`` regularised by ``eps·I``, its square root, and ``eps`` ``(N, 1, 1)``, which
    is ``W2_EPS`` times the target's mean channel power ``tr(E[f fᵀ]) / C``: relative, so it
    means the same at any ``feature_scale`` and keeps a rank-deficient covariance (fewer
    positions than channels, a flat painting) off a singular matrix."""
    power = torch.diagonal(second_S, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)
    eps = (W2_EPS * power).reshape(-1, 1, 1)
    cov_S = covariance(mean_S, second_S, eps)
    return cov_S, sqrtm_psd(cov_S), eps


def w2_layer_cost(a_G: Tensor, mean_S: Tensor, second_S: Tensor, w2: tuple[Tensor, Tensor, Tensor],
                  normalization: str = "seed") -> Tensor:
    """One layer's W2 style cost per image, ``(N,)``, of activations ``(N, C, H, W)`` against
    a style target's moments and its ``w2_target``: ``seed`` is W2² per channel (crowsonkb's),
    ``balanced`` W2² divided by the target's ``E‖f‖²`` (0 at the target, 1 for an image whose
    features are all 0 here), so layers share one scale as with the balanced Gram cost."""
    return w2_moments_cost(*feature_moments(a_G), mean_S, second_S, w2, normalization)


def w2_moments_cost(mean_G: Tensor, second_G: Tensor, mean_S: Tensor, second_S: Tensor,
                    w2: tuple[Tensor, Tensor, Tensor], normalization: str = "seed") -> Tensor:
    """``w2_layer_cost`` from the generated image's moments ``E[f]`` ``(N, C)`` and ``E[f fᵀ]``
    ``(N, C, C)``: what a tiled step gathers tile by tile (``tiles``)."""
    cov_S, root_S, eps = w2
    cost = w2_style_cost(mean_G, covariance(mean_G, second_G, eps), mean_S, cov_S, root_S)
    if normalization == "balanced":
        channels = mean_G.shape[-1]
        return cost * channels / torch.diagonal(second_S, dim1=-2, dim2=-1).sum(-1).clamp_min(1e-30)
    return cost


def content_cost(a_C: Tensor, a_G: Tensor, normalization: str = "seed", weights: Tensor | None = None) -> Tensor:
    """``Σ(a_C − a_G)² / (4·n_H·n_W·n_C)`` per image (``seed``), ``Σ(a_C − a_G)² / 2``
    (``half_sum``, the paper's) or ``Σ(a_C − a_G)² / Σ a_C²`` (``balanced``, the relative
    error). The source's listing subtracted a_G from itself; not here. ``weights`` ``(N, 1,
    n_H, n_W)``: each position's squared error weighted (a region kept as photographed)."""
    a_C = _at_least_float32(a_C)
    squared = (a_C - _at_least_float32(a_G)) ** 2
    if weights is not None:
        squared = squared * weights
    return squared.sum(dim=(1, 2, 3)) / content_divisor(a_C, normalization)


def content_divisor(a_C: Tensor, normalization: str = "seed") -> Tensor | float:
    """What ``content_cost`` divides the summed squared error by, from the whole content target
    ``(N, C, H, W)``: a tiled step divides each tile's part by it (``tiles``)."""
    _, n_C, n_H, n_W = a_C.shape
    if normalization == "seed":
        return 4.0 * n_H * n_W * n_C
    if normalization == "half_sum":
        return 2.0
    if normalization == "balanced":
        # The guard only keeps an all-zero target (a layer that is dead for this image) from 0/0.
        return (_at_least_float32(a_C) ** 2).sum(dim=(1, 2, 3)).clamp_min(1e-30)
    raise ValueError(f"unknown content normalization {normalization!r} (seed, half_sum, balanced)")


def content_cost_layers(targets: Mapping[str, Tensor], activations: Mapping[str, Tensor],
                        layers: Sequence[str], normalization: str = "seed",
                        weights: Callable[[tuple[int, int]], Tensor | None] | None = None) -> Tensor:
    """Content cost summed over several layers (one layer is the usual case); ``weights``:
    each position's weight at a layer of that size (None: alike)."""
    costs = [content_cost(targets[layer], activations[layer], normalization,
                          weights(tuple(targets[layer].shape[-2:])) if weights is not None else None)
             for layer in layers]
    return torch.stack(costs).sum(dim=0)


def tv_cost(x: Tensor) -> Tensor:
    """Total variation: mean squared difference of neighbours, vertical plus horizontal.

    A 0/1 checkerboard has exactly 2; a constant image 0.
    """
    x = _at_least_float32(x)
    vertical = ((x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2).mean(dim=(1, 2, 3))
    horizontal = ((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2).mean(dim=(1, 2, 3))
    return vertical + horizontal


def style_cap_factor(start: Tensor, cap: float) -> Tensor:
    """The share of β each image gets under a style cap: 1 while its starting style cost
    (``start``, per image: the content image's own cost) is at most ``cap``, else
    ``cap / start``, so that no image's style term starts above ``β·cap``."""
    return cap / start.clamp_min(cap)


def total_cost(J_content: Tensor, J_style: Tensor, alpha: float, beta: float,
               J_tv: Tensor | None = None, tv_weight: float = 0.0) -> Tensor:
    """``α·J_content + β·J_style`` (``+ tv_weight·J_tv`` where enabled)."""
    total = alpha * J_content + beta * J_style
    if J_tv is not None and tv_weight:
        total = total + tv_weight * J_tv
    return total
