"""Image geometry: the sizes a resize or crop gives, from widths and heights alone (no pixels,
no files), so that planning, validation and the engine share one rule."""
from __future__ import annotations


def long_side_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled so the long side is ``side``, keeping the aspect ratio: the one
    rule for every resize (Pillow images, tensors, and sizes known from headers alone)."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fitted(width: int, height: int, size: int, resize: str = "long",
           crop: str = "none") -> tuple[tuple[int, int], tuple[int, int, int, int] | None]:
    """How a content image of ``width`` x ``height`` becomes the output: its (width, height)
    once scaled, and the box of the centre crop in the scaled image (None: no crop).
    ``resize``: which side ``size`` sets, ``long`` or ``short``. ``crop: center`` keeps the
    central ``size`` x ``size`` square, so it scales the short side to ``size`` whatever
    ``resize`` says (Stylized-ImageNet's 224 px crops). Headers suffice: no decoding."""
    if crop == "center" or resize == "short":
        scale = size / min(width, height)
        scaled = max(1, round(width * scale)), max(1, round(height * scale))
    else:
        scaled = long_side_size(width, height, size)
    if crop != "center":
        return scaled, None
    side = min(size, *scaled)
    left, top = (scaled[0] - side) // 2, (scaled[1] - side) // 2
    return scaled, (left, top, left + side, top + side)


def output_size(width: int, height: int, size: int, resize: str = "long",
                crop: str = "none") -> tuple[int, int]:
    """The output's (width, height) for a content of ``width`` x ``height`` (see ``fitted``)."""
    scaled, box = fitted(width, height, size, resize, crop)
    return (box[2] - box[0], box[3] - box[1]) if box else scaled
