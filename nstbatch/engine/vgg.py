"""VGG-19 features by layer name, in torchvision's ``vgg19().features`` layout."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from ..config import StyleParams
from ..errors import UsageError
from ..layers import LAYER_INDEX, LAYER_NAMES, check_layer, min_image_side
from .devices import run_precision
from .weights import Preprocessing, Weights, expected_shapes, load_weights


class Preprocess(nn.Module):
    """RGB in [0, 1] → the input the weights were trained on (part of the graph, so exports
    and every caller get the same normalisation)."""

    def __init__(self, preprocessing: Preprocessing):
        super().__init__()
        self.scale = preprocessing.scale
        self.bgr = preprocessing.bgr
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.scale
        if self.bgr:
            x = x.flip(1)  # RGB -> BGR
        return (x - self.mean) / self.std


def vgg19_layers(depth: int = len(LAYER_NAMES), pooling: str = "max") -> nn.Sequential:
    """The first ``depth`` modules of torchvision's ``vgg19().features`` (its config "E", the
    same indices and state-dict keys), built here: importing ``torchvision.models`` costs
    every process about 1.5 s. ReLUs do not work in place (torchvision's do, which would
    overwrite the conv outputs handed back as activations); ``pooling`` avg swaps the pools."""
    shapes, modules = expected_shapes(), []
    for index, name in enumerate(LAYER_NAMES[:depth]):
        if name.startswith("conv"):
            out_channels, in_channels = shapes[f"{index}.weight"][:2]
            modules.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        elif name.startswith("relu"):
            modules.append(nn.ReLU(inplace=False))
        else:
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2) if pooling == "max"
                           else nn.AvgPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*modules)


def check_layers(layers: Iterable[str]) -> tuple[str, ...]:
    try:
        return tuple(check_layer(name) for name in layers)
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_image_size(height: int, width: int, layers: Sequence[str], what: str = "image") -> None:
    """Refuse, before any forward pass, an image that some requested layer would shrink to nothing."""
    need = min_image_side(layers)
    if min(height, width) < need:
        deepest = max(layers, key=LAYER_INDEX.__getitem__)
        raise UsageError(f"{what} is {width}x{height} px, too small for layer {deepest}: "
                         f"each side needs at least {need} px",
                         hint="use a larger size or shallower layers")


class VGGFeatures(nn.Module):
    """Named activations of VGG-19, truncated after the deepest layer it may be asked for.

    ``forward(image, layers)`` takes RGB in [0, 1], ``(N, 3, H, W)``, and returns
    ``{name: activation}``; it stops at the deepest requested layer. With ``checkpointing``
    (and a gradient to take) the activations are recomputed in the backward pass instead of
    stored (``_forward_checkpointed``).
    """

    def __init__(self, weights: Weights, layers: Iterable[str] = LAYER_NAMES, pooling: str = "max",
                 memory_format: torch.memory_format = torch.contiguous_format):
        super().__init__()
        layers = check_layers(layers)
        if pooling not in ("max", "avg"):
            raise UsageError(f"pooling must be max or avg, got {pooling!r}")
        self.depth = max(LAYER_INDEX[n] for n in layers) + 1 if layers else 0
        features = vgg19_layers(self.depth, pooling)
        features.load_state_dict(
            {k: v for k, v in weights.state_dict.items() if int(k.split(".")[0]) < self.depth})
        self.features = features.to(memory_format=memory_format)
        self.preprocess = Preprocess(weights.preprocessing)
        self.pooling = pooling
        self.weights, self.weights_id = weights, weights.id
        self.memory_format = memory_format  # of the convolutions' weights: see laid_out
        self._trunk = self._trunk_eager  # or its torch.compile'd version: see compile_trunk
        self._twins: dict[torch.memory_format, VGGFeatures] = {}
        self.requires_grad_(False)
        self.eval()

    def laid_out(self, memory_format: torch.memory_format) -> "VGGFeatures":
        """This network with its weights in ``memory_format``: itself where they are, else a
        twin made once and kept beside it (eager, on the same device). A network is never
        changed by a run: one serves every job of a worker, whatever their precision."""
        if memory_format == self.memory_format:
            return self
        if memory_format not in self._twins:
            device = next(self.parameters()).device
            self._twins[memory_format] = VGGFeatures(self.weights, LAYER_NAMES[:self.depth], self.pooling,
                                                     memory_format).to(device)
        return self._twins[memory_format]

    def forward(self, image: Tensor, layers: Sequence[str], checkpointing: bool = False) -> dict[str, Tensor]:
        layers = check_layers(layers)
        last = max(LAYER_INDEX[n] for n in layers)
        if last >= self.depth:
            raise UsageError(f"layer {LAYER_NAMES[last]} is deeper than this extractor was built for")
        check_image_size(image.shape[-2], image.shape[-1], layers)
        wanted = set(layers)
        x = self.preprocess(image)
        if checkpointing and torch.is_grad_enabled() and x.requires_grad:
            return self._forward_checkpointed(x, wanted, last)
        return self._trunk(x, tuple(sorted(wanted)), last)

    def _trunk_eager(self, x: Tensor, wanted: tuple[str, ...], last: int) -> dict[str, Tensor]:
        out = {}
        for index in range(last + 1):
            x = self.features[index](x)
            if LAYER_NAMES[index] in wanted:
                out[LAYER_NAMES[index]] = x
        return out

    def compile_trunk(self, mode: str | None = None) -> "VGGFeatures":
        """Run the network through ``torch.compile`` (checks and the checkpointed path stay
        eager). Each new image size, batch or layer set compiles once, tens of seconds on a GPU;
        it pays on long runs of one size (benchmarks/RESULTS.md), not on a CPU."""
        self._trunk = torch.compile(self._trunk_eager, mode=mode, dynamic=False)
        return self

    def _forward_checkpointed(self, x: Tensor, wanted: set[str], last: int) -> dict[str, Tensor]:
        """Activation checkpointing, one VGG block at a time: only block inputs and the
        requested activations are kept; the rest is recomputed in the backward pass. For very
        large images (a 4000 px side), where stored activations would not fit in memory."""
        from torch.utils.checkpoint import checkpoint

        out: dict[str, Tensor] = {}
        start = 0
        while start <= last:
            end = start
            while end < last and not LAYER_NAMES[end].startswith("pool"):
                end += 1
            names = [LAYER_NAMES[i] for i in range(start, end + 1) if LAYER_NAMES[i] in wanted]

            def block(inp, start=start, end=end, names=tuple(names)):
                kept = []
                for index in range(start, end + 1):
                    inp = self.features[index](inp)
                    if LAYER_NAMES[index] in names:
                        kept.append(inp)
                return (inp, *kept)

            x, *kept = checkpoint(block, x, use_reentrant=False)
            out.update(zip(names, kept))
            start = end + 1
        return out


def build_features(params: StyleParams, device: torch.device | str = "cpu") -> VGGFeatures:
    """The VGG-19 that ``params`` asks for, truncated after its deepest layer, on ``device``,
    laid out as a run of ``params`` there takes it (``devices.run_precision``)."""
    device = torch.device(device)
    return VGGFeatures(load_weights(params.weights), params.feature_layers, params.pooling,
                       run_precision(params, device)[1]).to(device)
