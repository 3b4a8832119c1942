"""Feed-forward transform networks: a style learned once, applied in one forward pass (Johnson,
Alahi & Fei-Fei 2016), trained with the engine's own criterion (``criterion.Criterion``: the
preset's costs, layers and weights) instead of an optimisation per image.

The network is Johnson's: a 9×9 convolution to ``width`` channels, two stride-2 convolutions
to 4 × ``width``, five residual blocks, two nearest-neighbour upsamplings each followed by a
convolution (no transposed convolutions: no checkerboard artefacts, Odena et al. 2016), a 9×9
convolution to RGB; every convolution reflection-padded. Normalisation is instance norm
(Ulyanov et al. 2017), conditional (Dumoulin, Shlens & Kudlur 2017): one row of scale and shift
per painting, so one network serves a pool of paintings, chosen per image by its index.

Departures from the papers: the input is an image in [0, 1], not 0–255; each upsampling goes
back to the exact size its downsampling came from, so any height and width work (Johnson's
network needs multiples of 4) and an ONNX export keeps both dynamic; the output is the image the
costs see, clamped to [0, 1] only where it is delivered (``stylize``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import StyleParams
from .criterion import Criterion, job_targets
from .pixels import resize_tensor
from .targets import StyleTarget
from .temporal import reliable, warp
from .vgg import VGGFeatures


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose scale and shift are one row per style, picked per image."""

    def __init__(self, channels: int, styles: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.scale = nn.Parameter(torch.ones(styles, channels))
        self.shift = nn.Parameter(torch.zeros(styles, channels))

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        """``x`` (N, C, H, W); ``style`` (N,) int64, each image's row."""
        return self.norm(x) * self.scale[style][:, :, None, None] + self.shift[style][:, :, None, None]


class ConvLayer(nn.Module):
    """Reflection padding, then a convolution: the border is a continuation of the picture."""

    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int = 1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(inputs, outputs, kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, styles: int):
        super().__init__()
        self.conv1, self.norm1 = ConvLayer(channels, channels, 3), ConditionalInstanceNorm(channels, styles)
        self.conv2, self.norm2 = ConvLayer(channels, channels, 3), ConditionalInstanceNorm(channels, styles)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x), style))
        return x + self.norm2(self.conv2(y), style)


@dataclass(frozen=True)
class Shape:
    """A transform network's architecture: what a file must say to be loaded again."""

    styles: int = 1  # rows of conditional instance norm: one per painting of a pool
    width: int = 32  # channels after the first convolution (Johnson: 32); 4 × width at the bottom
    blocks: int = 5  # residual blocks


class TransformNet(nn.Module):
    """``net(image, style)``: the stylized image ``(N, 3, H, W)`` of ``image`` ``(N, 3, H, W)``
    in [0, 1], each image in the painting ``style`` ``(N,)`` (int64; None: the first)."""

    def __init__(self, shape: Shape = Shape()):
        super().__init__()
        self.shape = shape
        w, styles = shape.width, shape.styles
        self.down = nn.ModuleList([ConvLayer(3, w, 9), ConvLayer(w, 2 * w, 3, 2), ConvLayer(2 * w, 4 * w, 3, 2)])
        self.down_norms = nn.ModuleList([ConditionalInstanceNorm(c, styles) for c in (w, 2 * w, 4 * w)])
        self.blocks = nn.ModuleList([ResidualBlock(4 * w, styles) for _ in range(shape.blocks)])
        self.up = nn.ModuleList([ConvLayer(4 * w, 2 * w, 3), ConvLayer(2 * w, w, 3)])
        self.up_norms = nn.ModuleList([ConditionalInstanceNorm(c, styles) for c in (2 * w, w)])
        self.to_rgb = ConvLayer(w, 3, 9)

    def rows(self) -> list[nn.Parameter]:
        """Every conditional norm's scale and shift: what training a new painting's row alone
        updates (Dumoulin et al. 2017: ~3 k parameters a painting, the rest shared and kept)."""
        return [p for module in self.modules() if isinstance(module, ConditionalInstanceNorm)
                for p in (module.scale, module.shift)]

    def forward(self, image: Tensor, style: Tensor | None = None) -> Tensor:
        if style is None:
            style = torch.zeros(image.shape[0], dtype=torch.long, device=image.device)
        x, sizes = image, []
        for conv, norm in zip(self.down, self.down_norms):
            sizes.append(x.shape[-2:])
            x = F.relu(norm(conv(x), style))
        for block in self.blocks:
            x = block(x, style)
        for conv, norm, size in zip(self.up, self.up_norms, reversed(sizes[1:])):
            x = F.interpolate(x, size=size, mode="nearest")  # back to the size this level came from
            x = F.relu(norm(conv(x), style))
        return self.to_rgb(x)  # (N, 3, H, W)


@torch.no_grad()
def stylize(net: TransformNet, image: Tensor, style: Tensor | None = None) -> Tensor:
    """The network's picture as delivered: clamped to [0, 1]."""
    return net(image, style).clamp(0, 1)


@dataclass(frozen=True)
class TrainingCosts:
    """The batch's mean costs at one training step (before its update)."""

    total: float
    content: float
    style: float
    tv: float


def training_step(net: TransformNet, optimizer: torch.optim.Optimizer, features: VGGFeatures, params: StyleParams,
                  content: Tensor, style_targets: StyleTarget, style: Tensor | None = None,
                  dtype: torch.dtype | None = None, moves: Tensor | None = None) -> TrainingCosts:
    """One update of the network's weights: the criterion of ``params`` against each content
    image's own activations and its painting's target (``style_targets``: one target, or one
    per image of the batch, ``StyleTarget.stack``), taken on the network's output and
    back-propagated into its weights (Johnson et al. 2016: the output is the image the costs
    see). ``content`` ``(N, 3, h, w)`` in [0, 1]; ``style`` each image's row (None: the first).

    ``moves`` ``(N/2, 2)``: the batch is pairs of frames (``twin_crops``: the second half the
    first half seen again, moved by ``(dx, dy)`` px), and each second frame is tied to its
    first's output warped into it, by the criterion's temporal cost (``temporal_weight``, the
    engine's warp and consistency weights) — Huang et al. 2017's temporal cost at training time,
    which makes the network steady on video with no flow at inference."""
    targets = job_targets(features, content, style_targets, params, dtype)
    optimizer.zero_grad(set_to_none=True)
    image = net(content, style)
    if moves is not None:
        targets = replace(targets, temporal=(_tie_twins(image, moves),))
    total, j_content, j_style, j_tv = Criterion(features, targets, params, dtype).gradient(
        image, lambda loss: loss / content.shape[0])  # the batch's mean
    optimizer.step()
    return TrainingCosts(*(float(part.detach().mean()) for part in (total, j_content, j_style, j_tv)))


def _tie_twins(image: Tensor, moves: Tensor) -> tuple[Tensor, Tensor]:
    """The criterion's tie for a batch of pairs: each second frame's first output warped into
    it along the pair's flow (constant: the move), trusted where the warp stays inside the
    frame (``reliable``); the first frames tied to nothing (weight 0). Both outputs keep their
    gradient: the pair is pulled together, as Huang et al. train."""
    half, (h, w) = moves.shape[0], image.shape[-2:]
    flow = moves.to(image)[:, :, None, None].expand(half, 2, h, w)
    warped, weights = warp(image[:half], flow), reliable(flow, -flow)
    return (torch.cat([torch.zeros_like(warped), warped]),
            torch.cat([torch.zeros_like(weights), weights]))


def random_crops(photos: Sequence[Tensor], count: int, size: int, generator: torch.Generator) -> Tensor:
    """``count`` random ``size`` × ``size`` crops ``(count, 3, size, size)``, each of a photo
    drawn from ``photos`` (each ``(1, 3, H, W)``), all drawn from ``generator``; a photo whose
    short side is under ``size`` is first scaled up to it (Johnson et al. crop COCO so)."""
    crops = []
    for index in torch.randint(len(photos), (count,), generator=generator).tolist():
        photo = photos[index]
        height, width = photo.shape[-2:]
        if min(height, width) < size:
            scale = size / min(height, width)
            height, width = max(size, round(height * scale)), max(size, round(width * scale))
            photo = resize_tensor(photo, (height, width), "bicubic")
        top = int(torch.randint(height - size + 1, (1,), generator=generator))
        left = int(torch.randint(width - size + 1, (1,), generator=generator))
        crops.append(photo[..., top:top + size, left:left + size])
    return torch.cat(crops)


# A twin crop is its crop seen again by a camera that moved up to this share of the crop's side
# and whose sensor adds Gaussian noise of this deviation (pixels in [0, 1]): the two changes
# between neighbouring frames that make a network trained on stills flicker (Gupta et al. 2017).
TWIN_MOVE, TWIN_NOISE = 1 / 16, 0.01


def twin_crops(photos: Sequence[Tensor], count: int, size: int,
               generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` random crops, then each crop's twin (``(2·count, 3, size, size)``), and each
    twin's move ``(count, 2)`` (dx, dy) in px: the twin's pixel (x, y) is its crop's
    (x + dx, y + dy). All drawn from ``generator``."""
    margin = max(1, round(size * TWIN_MOVE))
    wide = random_crops(photos, count, size + 2 * margin, generator)
    moves = torch.randint(-margin, margin + 1, (count, 2), generator=generator)
    firsts, seconds = [], []
    for crop, (dx, dy) in zip(wide, moves.tolist()):
        firsts.append(crop[:, margin:margin + size, margin:margin + size])
        seconds.append(crop[:, margin + dy:margin + dy + size, margin + dx:margin + dx + size])
    seconds = torch.stack(seconds)
    noise = torch.randn(seconds.shape, generator=generator) * TWIN_NOISE
    return torch.cat([torch.stack(firsts), (seconds + noise.to(seconds)).clamp(0, 1)]), moves


class Training:
    """A transform network's training, step by step, on ``photos`` (each ``(1, 3, H, W)`` in
    [0, 1]) towards ``style_targets`` (one per painting: each crop is given a painting at
    random, its row of the network): ``batch`` random ``size`` px crops a step, Adam at ``lr``;
    under a temporal weight (``params.temporal_weight``) half of them and their twins
    (``twin_crops``), each twin tied to its crop's output. Every draw comes from one seeded generator, so ``state_dict`` at any step and
    ``load_state_dict`` in a new process go on to the same weights as an unbroken run."""

    def __init__(self, net: TransformNet, features: VGGFeatures, params: StyleParams,
                 style_targets: Sequence[StyleTarget], *, size: int = 256, batch: int = 4, lr: float = 1e-3,
                 seed: int = 0, dtype: torch.dtype | None = None):
        if len(style_targets) != net.shape.styles:
            raise ValueError(f"{len(style_targets)} painting(s) for a network of {net.shape.styles} row(s)")
        self.net, self.features, self.params, self.dtype = net, features, params, dtype
        self.style_targets, self.size, self.batch = list(style_targets), size, batch
        self.optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0  # updates done

    def __call__(self, photos: Sequence[Tensor]) -> TrainingCosts:
        """One update on a batch of crops of ``photos``."""
        device = next(self.net.parameters()).device
        moves = None
        if self.params.temporal_weight:  # pairs of frames, each second tied to its first
            content, moves = twin_crops(photos, (self.batch + 1) // 2, self.size, self.generator)
            rows = torch.randint(len(self.style_targets), (len(moves),), generator=self.generator).repeat(2)
            moves = moves.to(device)
        else:
            content = random_crops(photos, self.batch, self.size, self.generator)
            rows = torch.randint(len(self.style_targets), (self.batch,), generator=self.generator)
        content = content.to(device)
        targets = (self.style_targets[0] if len(self.style_targets) == 1
                   else StyleTarget.stack([self.style_targets[row] for row in rows.tolist()]))
        costs = training_step(self.net, self.optimizer, self.features, self.params, content, targets.to(device),
                              rows.to(device), self.dtype, moves)
        self.step += 1
        return costs

    def state_dict(self) -> dict:
        """The step, the network's weights, Adam's moments and the generator: plain tensors."""
        return {"step": self.step, "net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
