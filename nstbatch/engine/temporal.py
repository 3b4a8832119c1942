"""Frame-steady video: the temporal terms of Ruder, Dosovitskiy & Brox, "Artistic style transfer
for videos" (2016; manuelruder/artistic-videos), as pure functions of tensors.

A frame is pulled towards the previous *stylized* frame warped into it along the optical flow,
where the flow can be trusted: ``L_t = (1/D) Σ_k c_k (x_k − ω(x_prev)_k)²`` with D = 3·H·W and
c ∈ [0, 1] from a forward-backward consistency check. Flows are ``(N, 2, H, W)`` in pixels,
channel 0 horizontal (x), channel 1 vertical (y); the *backward* flow of frame t points from each
of its pixels to where that point was in frame t−1, so warping the previous frame along it
samples frame t−1 at ``x + w(x)``.

Departures from the paper: pixels are in [0, 1] here (theirs 0–255), so the temporal weight is in
these units; the consistency check's thresholds are the paper's, on flows in pixels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# The consistency check's thresholds (the paper's, for flows in pixels).
OCCLUSION_RELATIVE, OCCLUSION_ABSOLUTE = 0.01, 0.5
BOUNDARY_RELATIVE, BOUNDARY_ABSOLUTE = 0.01, 0.002
OCCLUDED_SOFT, SOFT_SIGMA = -0.75, 0.8  # artistic-videos' consistency checker (temporal_mask: soft)


def _grid(flow: Tensor) -> tuple[Tensor, Tensor]:
    """Where each pixel's flow lands, in pixels: ``(x + u, y + v)``, each ``(N, H, W)``."""
    n, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype, device=flow.device),
                            torch.arange(w, dtype=flow.dtype, device=flow.device), indexing="ij")
    return xs + flow[:, 0], ys + flow[:, 1]


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """``image`` ``(N, C, H, W)`` sampled at ``x + flow(x)`` (bilinear; outside: the nearest
    border pixel, which the consistency weights mark unreliable anyway)."""
    x, y = _grid(flow)
    h, w = image.shape[-2:]
    # grid_sample's align_corners=True maps -1 and 1 to the centres of the first and last pixels
    grid = torch.stack((2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1), dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def reliable(backward: Tensor, forward: Tensor, soft: bool = False) -> Tensor:
    """The paper's consistency weights ``(N, 1, H, W)`` for warping frame t−1 into frame t:
    ``backward`` is frame t's flow to t−1, ``forward`` frame t−1's flow to t. 0 where the two
    disagree (the point was occluded: ``|w + ŵ(x + w)|² > 0.01(|w|² + |ŵ|²) + 0.5``), at motion
    boundaries (``|∇u|² + |∇v|² > 0.01|w|² + 0.002``) and where ``x + w`` leaves the frame;
    1 elsewhere. ``soft``: as artistic-videos' consistency checker leaves them, an occluded
    point counted −0.75 so that a Gaussian blur (σ 0.8) grows each occlusion into its
    neighbours and smooths every edge of the mask, then clipped to [0, 1]."""
    x, y = _grid(backward)
    h, w = backward.shape[-2:]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    returned = warp(forward, backward)  # ŵ(x + w): the forward flow where the point came from
    square = (backward ** 2).sum(1)
    round_trip = ((backward + returned) ** 2).sum(1)
    occluded = round_trip > OCCLUSION_RELATIVE * (square + (returned ** 2).sum(1)) + OCCLUSION_ABSOLUTE
    boundary = _gradient_square(backward) > BOUNDARY_RELATIVE * square + BOUNDARY_ABSOLUTE
    trusted = (inside & ~occluded & ~boundary).to(backward.dtype)
    if not soft:
        return trusted.unsqueeze(1)
    grown = torch.where(occluded & inside & ~boundary, torch.full_like(trusted, OCCLUDED_SOFT), trusted)
    return gaussian(grown.unsqueeze(1), SOFT_SIGMA).clamp(0, 1)


def gaussian(image: Tensor, sigma: float) -> Tensor:
    """``image`` (N, 1, H, W) blurred by a Gaussian of ``sigma`` px (separable, edges repeated)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    across = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(across, kernel.view(1, 1, -1, 1))


def _gradient_square(flow: Tensor) -> Tensor:
    """``|∇u|² + |∇v|²`` by central differences (one-sided at the edges), ``(N, H, W)``."""
    dy, dx = torch.gradient(flow, dim=(2, 3))
    return (dx ** 2 + dy ** 2).sum(1)


def long_term_weights(weights: list[Tensor]) -> list[Tensor]:
    """The paper's long-term weights: ``weights[j]`` is the consistency of the (j+1)-th
    previous frame considered (closest first); each counts only where no closer one is reliable,
    ``max(c_j − Σ_{k<j} c_k, 0)``, so a pixel is tied to its nearest reliable past."""
    out, closer = [], torch.zeros_like(weights[0])
    for c in weights:
        out.append((c - closer).clamp_min(0))
        closer = closer + c
    return out


def temporal_cost(image: Tensor, warped: Tensor, weights: Tensor) -> Tensor:
    """``(1/D) Σ c (x − ω)²`` per image ``(N,)``, D = 3·H·W: the frame against a previous
    output warped into it, where ``weights`` trusts the flow."""
    diff = image.float() - warped.float()
    return (weights.float() * diff ** 2).sum(dim=(1, 2, 3)) / (3 * image.shape[-2] * image.shape[-1])


def warped_start(content: Tensor, warped: Tensor, weights: Tensor) -> Tensor:
    """The start of a frame after the first: the previous output warped into it, and the
    content itself where the warp cannot be trusted (pixels that just came into view)."""
    return weights * warped + (1 - weights) * content
