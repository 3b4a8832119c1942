"""A trained network's card (``nets/NAME.json``, written beside ``nets/NAME.onnx`` by its
training, ``jobs/train.py``): what the network paints, each painting by its digest and row, and
how it was trained. A network is never used without its card: nothing else says what it paints.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..fs import sha256_of


@dataclass(frozen=True)
class NetworkCard:
    """What a network was trained on (``nets/NAME.json``, written by its training): its
    paintings, each with its digest and row, and everything else the card says (``data``)."""

    path: Path
    paintings: tuple[tuple[str, str], ...]  # (path as trained, sha256), in row order
    data: dict

    @classmethod
    def of(cls, network: str | os.PathLike) -> "NetworkCard":
        """The card beside ``network`` (same name, .json); a network without one is refused:
        nothing would say what it paints."""
        network = Path(network)
        if not network.is_file():
            raise InputError(f"{network}: no such network", hint="train it first: nstbatch train")
        path = network.with_suffix(".json")
        try:
            data = json.loads(path.read_text())
            styles = sorted(data["styles"], key=lambda style: style["row"])
            paintings = tuple((str(style["path"]), str(style["sha256"])) for style in styles)
        except FileNotFoundError:
            raise InputError(f"{path}: the network's card is missing (it says what the network paints)",
                             hint="keep the .json its training wrote beside the .onnx, or train it again:"
                             " nstbatch train") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path}: not a network card ({e})",
                             hint="train the network again: nstbatch train") from None
        return cls(path, paintings, data)

    def names(self) -> list[str]:
        return [Path(painting).stem for painting, _ in self.paintings]

    def row_of(self, painting: str | os.PathLike | None) -> int:
        """The row that paints ``painting``: a file (matched by its contents) or a name (the
        stem of a painting it was trained on); None: the only one."""
        if painting is None:
            if len(self.paintings) == 1:
                return 0
            raise InputError(f"{self.path}: the network paints {len(self.paintings)} paintings; say which",
                             hint=f"give one of: {', '.join(self.names())}")
        if Path(painting).is_file():
            digest = sha256_of(Path(painting))
            for row, (_, known) in enumerate(self.paintings):
                if known == digest:
                    return row
            raise InputError(f"{painting}: the network {self.path.stem} was not trained on this painting",
                             hint=f"it paints: {', '.join(self.names())}; or train one for it: nstbatch train")
        names = self.names()
        if str(painting) in names:
            return names.index(str(painting))
        raise InputError(f"{painting}: neither a file nor a painting of the network {self.path.stem}",
                         hint=f"it paints: {', '.join(names)}")
