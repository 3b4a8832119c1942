"""The names of VGG-19's layers, in forward order, and checks of user-given names.

Pure data, no torch: the manifest validator checks layer names for thousands of rows
without loading a network.
"""
from __future__ import annotations

import difflib
import functools

# torchvision's vgg19().features layout (config "E"): the index of a name here is its index
# in that nn.Sequential.
_BLOCK_CONVS = (2, 2, 4, 4, 4)
BLOCK_CHANNELS = (64, 128, 256, 512, 512)  # each block's output channels


def channels(layer: str) -> int:
    """How many channels layer ``layer`` (``conv3_2``, ``relu3_2``, ``pool3``: block 3) gives;
    ``input``: the image's 3."""
    return 3 if layer == "input" else BLOCK_CHANNELS[int(layer[4]) - 1]


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, convs in enumerate(_BLOCK_CONVS, start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return tuple(names)


LAYER_NAMES: tuple[str, ...] = _layer_names()
LAYER_INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYER_NAMES)}
CONV_INDICES: tuple[int, ...] = tuple(i for i, n in enumerate(LAYER_NAMES) if n.startswith("conv"))


def suggest(name: str, valid) -> str:
    """A 'did you mean' clause for an unknown name, or an empty string."""
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def check_layer(name: str) -> str:
    """Return ``name`` if it is a VGG-19 layer, else raise ValueError with the nearest names."""
    if name not in LAYER_INDEX:
        raise ValueError(
            f"unknown VGG-19 layer {name!r}{suggest(name, LAYER_NAMES)}"
            f" (valid: conv1_1 … relu5_4, pool1 … pool5)"
        )
    return name


def pools_before(name: str) -> int:
    """How many 2×2 poolings an image passes through to reach the output of ``name``."""
    return sum(1 for n in LAYER_NAMES[: LAYER_INDEX[name] + 1] if n.startswith("pool"))


def receptive_radius(name: str) -> int:
    """How far (in input pixels) beyond a position of ``name``'s output its receptive field
    reaches: each 3×3 convolution widens it by one step of its input's grid, each 2×2 pooling
    by one, and doubles the grid."""
    radius, step = 0, 1
    for layer in LAYER_NAMES[: LAYER_INDEX[name] + 1]:
        if layer.startswith(("conv", "pool")):
            radius += step
        if layer.startswith("pool"):
            step *= 2
    return radius


def min_image_side(layers) -> int:
    """The smallest image side that still leaves at least one pixel at every layer given."""
    return _min_image_side(tuple(layers))


@functools.lru_cache(maxsize=256)
def _min_image_side(layers: tuple[str, ...]) -> int:
    return 2 ** max((pools_before(n) for n in layers), default=0)
