"""Pixels between Pillow and PyTorch: ``(N, 3, H, W)`` float tensors in [0, 1].

Kept apart from ``io.images`` (files in and out) so that reading, probing and writing images,
and so validating and planning a manifest, never import torch; and the engine reads no files.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image



def resize_tensor(image: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """``(N, 3, H, W)`` to ``size`` (height, width), antialiased unless bicubic (used to
    upsample), clipped to [0, 1]; unchanged when already that size."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return torch.nn.functional.interpolate(image, size=tuple(size), mode=mode, antialias=mode != "bicubic",
                                           align_corners=False).clamp(0, 1)


def to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB Pillow image → float32 ``(1, 3, H, W)`` in [0, 1]. Other modes are refused: how
    they become RGB is ``io.images.to_rgb``'s rule, applied where images are read."""
    if im.mode != "RGB":
        raise ValueError(f"to_tensor takes an RGB image, got mode {im.mode}: convert it with"
                         " nstbatch.io.images.to_rgb first")
    array = np.asarray(im, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_pil(image: torch.Tensor) -> Image.Image:
    """``(1, 3, H, W)`` or ``(3, H, W)`` in [0, 1] → 8-bit RGB Pillow image (rounded)."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy(), "RGB")


def to_uint16(image: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` or ``(3, H, W)`` in [0, 1] → ``uint16`` ``(H, W, 3)`` (rounded): the
    pixels of a 16-bit output."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    array = (image.detach().double().clamp(0, 1) * 65535).round().to(torch.int32)
    return array.permute(1, 2, 0).cpu().numpy().astype(np.uint16)
