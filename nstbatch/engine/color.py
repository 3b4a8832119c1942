"""Colour preservation (Gatys, Bethge, Hertzmann & Shechtman, "Preserving Color in Neural
Artistic Style Transfer", 2016), and the colour moments behind ``init: palette``.

- ``luminance``: style and content are reduced to their luminance (Y of YIQ, as gray RGB), the
  optimisation transfers luminance only, and the output gets the content's chroma (I, Q) back.
- ``histogram``: before optimising, the style image is recoloured so that its colour mean and
  covariance match the content's (``x' = A (x - mu_s) + mu_c``, ``A = C_c^1/2 C_s^-1/2``).

The other way round, ``init: palette`` starts the optimisation from the content recoloured to
the painting's colour mean and covariance (``recolor``), which a style target carries
(the moments of its pixels, ``targets.PIXELS``).

Tensors are ``(N, 3, H, W)`` RGB in [0, 1].
"""
from __future__ import annotations

import torch
from torch import Tensor

# RGB -> YIQ (NTSC 1953); its exact inverse is computed, so a round trip is lossless.
_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                     [0.595716, -0.274453, -0.321263],
                     [0.211456, -0.522591, 0.311135]], dtype=torch.float64)
_RGB = torch.linalg.inv(_YIQ)


def to_yiq(image: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", _YIQ.to(image), image)


def from_yiq(yiq: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", _RGB.to(yiq), yiq)


def luminance(image: Tensor) -> Tensor:
    """The luminance as a gray RGB image (R = G = B = Y)."""
    return to_yiq(image)[:, :1].expand(-1, 3, -1, -1).contiguous()


def with_chroma(image: Tensor, chroma_from: Tensor) -> Tensor:
    """``image``'s luminance with ``chroma_from``'s I and Q. The luminance is clamped, pixel by
    pixel, to the range that keeps the result inside [0, 1] with that chroma, so the chroma is
    kept exactly (``chroma_from`` must lie in [0, 1], which makes that range non-empty)."""
    y = to_yiq(image)[:, :1]
    chroma = to_yiq(chroma_from)
    chroma[:, :1] = 0
    offset = from_yiq(chroma)  # what I and Q add to each channel
    gain = _RGB[:, 0].to(image).view(1, 3, 1, 1)  # what Y adds to each channel (about 1)
    low = ((0 - offset) / gain).amax(1, keepdim=True)
    high = ((1 - offset) / gain).amin(1, keepdim=True)
    y = torch.maximum(torch.minimum(y, high), low)
    return (gain * y + offset).clamp(0, 1)


def _stats(image: Tensor) -> tuple[Tensor, Tensor]:
    pixels = image.transpose(0, 1).reshape(3, -1).double()  # every image of a batch pooled
    mean = pixels.mean(1, keepdim=True)
    centred = pixels - mean
    return mean, centred @ centred.T / pixels.shape[1]


def _sqrt_psd(matrix: Tensor, inverse: bool = False) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix + 1e-5 * torch.eye(3, dtype=matrix.dtype, device=matrix.device))
    values = values.clamp_min(1e-8)
    return vectors @ torch.diag(values ** (-0.5 if inverse else 0.5)) @ vectors.T


def recolor(image: Tensor, mean_t: Tensor, cov_t: Tensor, rounds: int = 5) -> Tensor:
    """``image`` (1, 3, h, w) recoloured to the colour mean ``(3, 1)`` and covariance ``(3, 3)``
    given (``x' = A (x - mu) + mu_t``, ``A = C_t^1/2 C^-1/2``). Clipping to [0, 1] moves the
    mean, so the shift is corrected a few times after clipping."""
    mean_s, cov_s = _stats(image)
    mean_t, cov_t = mean_t.double().reshape(3, 1), cov_t.double()
    transform = _sqrt_psd(cov_t) @ _sqrt_psd(cov_s, inverse=True)
    pixels = image.transpose(0, 1).reshape(3, -1).double()
    out = (transform @ (pixels - mean_s) + mean_t).clamp(0, 1)
    for _ in range(rounds):
        out = (out + (mean_t - out.mean(1, keepdim=True))).clamp(0, 1)
    n, _, h, w = image.shape
    return out.reshape(3, n, h, w).transpose(0, 1).to(image.dtype).contiguous()


def match_histogram(style: Tensor, content: Tensor, rounds: int = 5) -> Tensor:
    """``style`` (1, 3, h, w) recoloured to ``content``'s colour mean and covariance."""
    return recolor(style, *_stats(content), rounds)


def prepare_style(style: Tensor, params, content: Tensor | None = None) -> Tensor:
    """The style image as the style targets see it: recoloured or reduced to luminance as
    ``params.preserve_color`` says (``histogram`` needs the content)."""
    if params.preserve_color == "luminance":
        return luminance(style)
    if params.preserve_color == "histogram":
        if content is None:
            raise ValueError("preserve_color histogram needs the content image")
        return match_histogram(style, content)
    return style
