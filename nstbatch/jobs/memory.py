"""How much memory a job needs, known before it starts, from its parameters and image size.

The optimisation's peak is at the full-size stage: VGG-19's activations up to the deepest layer
the costs read (kept for the backward pass; conv and ReLU outputs separately, ReLUs are not in
place), the gradients of the layer being differentiated, and the pixels with Adam's two moments:
what a job adds to a worker that holds the network already. Activation checkpointing keeps
only each block's input and the layers the costs read, and recomputes one block at a time.

``ACTIVATION_FACTOR`` and ``FIXED_BYTES`` are fitted to measured peaks (the increase of the
peak resident memory of a worker over what it holds before its first job), at three sizes on
the CPU: ``benchmarks/memory_estimate.py``, figures in ``benchmarks/RESULTS.md``.

No torch here: ``validate`` and ``plan`` use it to warn, before any GPU time is spent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import LBFGS_HISTORY, StyleParams
from ..environment import cpu_has_bf16
from ..layers import LAYER_INDEX, LAYER_NAMES, channels, pools_before, receptive_radius

# Fitted (see the module docstring): how many bytes each stored activation element costs in
# all, per byte of its dtype, and what a job costs whatever its size (buffers, allocator slack).
ACTIVATION_FACTOR = 1.15
CHECKPOINTED_FACTOR = 0.9  # with activation checkpointing: fewer tensors wait for the backward pass
FP32_ELEMENT_BYTES = 2.4  # not 4: without autocast fewer copies of each activation are kept
FIXED_BYTES = 100 * 2**20
# Computing a style target (a forward pass, no gradients, fp32) peaks at about two and a half
# of the widest activations (relu1_1's 64 channels) of the style image at its size: measured
# 8.2 GiB for a 3142x4000 style on the CPU. It comes before the optimisation, so the job's peak
# is the larger of the two.
TARGET_BYTES_PER_PIXEL = 2.6 * 64 * 4
# A job is planned into this share of what the device offers: the estimate is within about
# ±20 % of measured peaks, and what is free now may shrink while the job runs.
HEADROOM = 0.8
# tile: auto tries these sides, largest first (a larger tile wastes less on its margins)
TILE_SIDES = (2048, 1536, 1024, 768, 512, 384, 256)



def _layer_shapes(depth: int, height: int, width: int) -> list[tuple[str, int, int]]:
    """(name, channels, pixels) of every module output up to ``depth``."""
    shapes, h, w = [], height, width
    for index in range(depth):
        name = LAYER_NAMES[index]
        if name.startswith("pool"):
            h, w = h // 2, w // 2
        shapes.append((name, channels(name) if not name.startswith("pool") else channels(LAYER_NAMES[index - 1]),
                       h * w))
    return shapes


def _bytes_per_element(params: StyleParams, device: str) -> float:
    """The network's activation dtype: bf16/fp16 under autocast, else fp32 (``auto`` is bf16
    on GPUs and on CPUs with bf16 units, as ``devices.autocast_dtype`` decides)."""
    if params.precision == "auto":
        return 2 if device.startswith("cuda") or cpu_has_bf16() else FP32_ELEMENT_BYTES
    return FP32_ELEMENT_BYTES if params.precision == "fp32" else 2


@dataclass(frozen=True)
class Estimate:
    bytes: int
    checkpointing: bool  # the estimate assumes activation checkpointing
    stage: tuple[int, int]  # the (height, width) of the stage that peaks
    tile: int | None = None  # stages larger than this side are stepped tile by tile (engine/tiles.py)

    def __str__(self) -> str:
        return (f"{self.bytes / 2**30:.2f} GiB" + (" with activation checkpointing" if self.checkpointing else "")
                + (f" in tiles of {self.tile} px" if self.tile else ""))


def estimate(params: StyleParams, height: int, width: int, batch: int = 1, *,
             checkpointing: bool = False, device: str = "cpu", style_pixels: int = 0,
             tile: int | None = None) -> Estimate:
    """Peak memory of one job (``batch`` jobs together) whose output is ``height`` × ``width``;
    ``style_pixels``: the largest style image at its size, when its target is to be computed;
    ``tile``: stages larger than that side are stepped tile by tile, so the network holds one
    tile and its margin while the pixels (and Adam's moments) are the whole image's."""
    layers = params.feature_layers
    depth = max(LAYER_INDEX[n] for n in layers) + 1
    element = _bytes_per_element(params, device)
    worst, stage = 0, (height, width)
    crop = tile + 2 * tile_margin(params) if tile else None
    for scale, share in zip(params.scales, params.scale_steps):
        h, w = max(1, round(height * scale)), max(1, round(width * scale))
        tiled = crop is not None and max(h, w) > tile
        shapes = _layer_shapes(depth, min(h, crop), min(w, crop)) if tiled else _layer_shapes(depth, h, w)
        if checkpointing:
            # kept: each block's output and the requested layers; recomputed: one block at once
            kept = sum(c * p for name, c, p in shapes if name.startswith("pool") or name in layers)
            blocks: dict[str, int] = {}
            for name, c, p in shapes:
                blocks[name[4]] = blocks.get(name[4], 0) + c * p
            stored = kept + max(blocks.values())
        else:
            stored = sum(c * p for _, c, p in shapes)
        requested = sum(c * p for name, c, p in shapes if name in layers)  # fp32 copies for the costs
        pixels = 3 * h * w * 4 * _image_sized(params, share)
        factor = CHECKPOINTED_FACTOR if checkpointing else ACTIVATION_FACTOR
        need = batch * (factor * (stored * element + requested * 4) + pixels)
        if need > worst:
            worst, stage = need, (h, w)
    worst = max(worst, TARGET_BYTES_PER_PIXEL * style_pixels)
    return Estimate(int(worst + FIXED_BYTES), checkpointing, stage, tile)


def _image_sized(params: StyleParams, share: float) -> int:
    """How many image-sized float32 tensors a stage holds beside the network: the image, its
    gradient, the init and content copies, and the optimizer's state: Adam's two moments, or
    L-BFGS's history (two per iteration kept, up to ``LBFGS_HISTORY``) and four work vectors."""
    if params.optimizer == "lbfgs":
        return 4 + 2 * min(LBFGS_HISTORY, math.ceil(params.steps * share)) + 4
    return 6


def tile_margin(params: StyleParams) -> int:
    """The margin each tile is read with (``engine.tiles.plan_tiles``'s rule)."""
    align = 2 ** max(pools_before(n) for n in params.feature_layers)
    return math.ceil(max(receptive_radius(n) for n in params.feature_layers) / align) * align


def plan_memory(params: StyleParams, height: int, width: int, limit: int | None, batch: int = 1,
                device: str = "cpu", style_pixels: int = 0) -> Estimate | None:
    """The estimate to run with when ``limit`` bytes are free: plain if it fits in ``HEADROOM``
    of them, else with activation checkpointing (recomputing costs time, so only where needed)
    if that fits, else (``tile: auto``) in the largest tile that fits; None when nothing does.
    No limit known: plain. A ``tile`` side the user gave is always used."""
    if params.tile not in ("auto", "off"):  # a side the user chose
        tiled = estimate(params, height, width, batch, device=device, style_pixels=style_pixels, tile=int(params.tile))
        return tiled if limit is None or tiled.bytes <= HEADROOM * limit else None
    plain = estimate(params, height, width, batch, device=device, style_pixels=style_pixels)
    if limit is None or plain.bytes <= HEADROOM * limit:
        return plain
    lean = estimate(params, height, width, batch, checkpointing=True, device=device, style_pixels=style_pixels)
    if lean.bytes <= HEADROOM * limit:
        return lean
    if params.tile == "auto":  # a print: the largest tile that fits
        for side in TILE_SIDES:
            if side < max(height, width):
                tiled = estimate(params, height, width, batch, device=device, style_pixels=style_pixels, tile=side)
                if tiled.bytes <= HEADROOM * limit:
                    return tiled
    return None
