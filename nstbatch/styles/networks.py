"""Transform networks as files (``engine/transform.py``): the ONNX model ``run`` serves through
ONNX Runtime, with dynamic batch, height and width, checked against PyTorch before it is
written; the session that applies it, and ``Networks``, the sessions a run holds.

A model has an input ``image`` ``(N, 3, H, W)`` in [0, 1] and an output ``stylized`` of the
same shape, clamped to [0, 1]; a pool network (more than one painting) also takes ``style``
``(N,)``, each image's painting by its index.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..engine.transform import TransformNet
from ..io.cards import NetworkCard
from .onnx_backend import export_checked, open_session

# (batch, height, width) the export is checked at: two batch sizes, a square and an odd,
# non-square size. A network's output is a picture: 1e-3 of its range is a quarter of a level.
NETWORK_PARITY = ((1, 64, 64), (4, 45, 71))
NETWORK_TOLERANCE = 1e-3


class _Delivered(nn.Module):
    """The network as a model file runs it: its picture clamped to [0, 1]."""

    def __init__(self, net: TransformNet):
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, style: Tensor | None = None) -> Tensor:
        return self.net(image, style).clamp(0, 1)


def _inputs(net: TransformNet, batch: int, height: int, width: int, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=generator)
    if net.shape.styles == 1:
        return (image,)
    return image, torch.randint(net.shape.styles, (batch,), generator=generator)


def network_parity(model_path: Path, net: TransformNet, cases=NETWORK_PARITY) -> float:
    """Worst absolute error of ONNX Runtime (CPU) against PyTorch over ``cases``."""
    session, _ = open_session(model_path, "cpu", what="the network")
    delivered, worst = _Delivered(net).eval(), 0.0
    for batch, height, width in cases:
        inputs = _inputs(net, batch, height, width, seed=batch)
        with torch.no_grad():
            expected = delivered(*inputs)
        got = session.run(None, dict(zip(("image", "style"), (x.numpy() for x in inputs))))[0]
        worst = max(worst, float((torch.from_numpy(got).double() - expected.double()).abs().max()))
    return worst


def export_network(net: TransformNet, path: str | os.PathLike) -> float:
    """Write ``net`` to ``path`` as an ONNX model with dynamic batch, height and width, after
    checking it against PyTorch (``NETWORK_PARITY``); returns the worst error. Atomic: a failed
    check or a crash leaves no model at ``path``."""
    path = Path(path)
    net = net.cpu().eval()
    pool = net.shape.styles > 1
    names = ["image", "style"] if pool else ["image"]
    dynamic = {"image": {0: "batch", 2: "height", 3: "width"}, "stylized": {0: "batch", 2: "height", 3: "width"}}
    if pool:
        dynamic["style"] = {0: "batch"}
    return export_checked(_Delivered(net), _inputs(net, 2, 64, 64), path, (names, ["stylized"], dynamic),
                          lambda tmp: network_parity(tmp, net), NETWORK_TOLERANCE,
                          "the exported network disagrees with PyTorch: error",
                          "report this; the network's PyTorch weights are kept in the state directory")


@dataclass
class NetworkSession:
    """An exported transform network in ONNX Runtime: ``session(images, styles)``."""

    session: object
    styles: int  # paintings it was trained on: 1, or a pool's
    provider: str  # the one actually running

    @classmethod
    def open(cls, model_path: Path, providers: str = "auto", *, allow_fallback: bool = False,
             notice: Callable[[str], None] | None = None, device="cpu") -> "NetworkSession":
        session, running = open_session(Path(model_path), providers, allow_fallback=allow_fallback, notice=notice,
                                        device=device, what="the network's images")
        styles = 2 if any(i.name == "style" for i in session.get_inputs()) else 1
        return cls(session, styles, running)

    def __call__(self, images: np.ndarray, styles: np.ndarray | None = None) -> np.ndarray:
        """``images`` ``(N, 3, H, W)`` float32 in [0, 1] → the stylized ``(N, 3, H, W)``;
        ``styles`` ``(N,)`` int64, each image's painting (a pool network's; else unused)."""
        feed = {"image": np.ascontiguousarray(images, dtype=np.float32)}
        if self.styles > 1:
            feed["style"] = (np.zeros(len(images), np.int64) if styles is None
                             else np.ascontiguousarray(styles, dtype=np.int64))
        return self.session.run(None, feed)[0]


class Networks:
    """Trained networks as a run and ``stylize --network`` use them: each opened once (its
    session and its card), each painting's row read once; images through a network as tensors."""

    def __init__(self, providers: str = "auto", *, allow_fallback: bool = False, device="cpu",
                 notice: Callable[[str], None] | None = None):
        self.providers, self.allow_fallback, self.device, self.notice = providers, allow_fallback, device, notice
        self._open: dict[Path, tuple[NetworkSession, NetworkCard]] = {}
        self._rows: dict[tuple[Path, Path | str], int] = {}

    def open(self, network: Path) -> tuple[NetworkSession, NetworkCard]:
        """The network's session and card; a network without its card is refused before a
        session is opened."""
        if network not in self._open:
            card = NetworkCard.of(network)
            self._open[network] = (NetworkSession.open(network, self.providers, allow_fallback=self.allow_fallback,
                                                       notice=self.notice, device=str(self.device)), card)
        return self._open[network]

    def row(self, network: Path, painting: Path | str | None) -> int:
        """Which of ``network``'s rows paints ``painting`` (``NetworkCard.row_of``)."""
        key = (network, painting if painting is not None else "")
        if key not in self._rows:
            self._rows[key] = self.open(network)[1].row_of(painting)
        return self._rows[key]

    def __call__(self, network: Path, images: Tensor, paintings: Sequence[Path | str | None]) -> Tensor:
        """``images`` ``(N, 3, H, W)`` in [0, 1], each painted with its own painting."""
        session, _ = self.open(network)
        rows = np.array([self.row(network, painting) for painting in paintings], np.int64)
        return torch.from_numpy(session(images.detach().cpu().numpy(), rows))
