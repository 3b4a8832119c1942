"""A clip's frames as they are made: one PNG each in a folder (the state directory's, or a
``stylize`` call's), written atomically, with the clip's shots (``shots.json``, from the cut
pre-pass) and the claims of the shots being stylized (``shot-000001.lock``…) beside them. No
torch here: a helping run asks it which shots are free before it loads anything."""
from __future__ import annotations

import bisect
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..fs import read_json, write_json
from ..io.images import load_image, save_image
from .claims import CLAIM_STALE, live_holder_at


@dataclass(frozen=True)
class Shots:
    """A clip's shots: the first frame of each (the first is 0), and the clip's frame count."""

    starts: tuple[int, ...]
    frames: int

    def of(self, index: int) -> int:
        """The shot frame ``index`` is in."""
        return bisect.bisect_right(self.starts, index) - 1

    def span(self, shot: int) -> range:
        end = self.starts[shot + 1] if shot + 1 < len(self.starts) else self.frames
        return range(self.starts[shot], end)


class ShotState(str, Enum):
    """Where one shot of a clip stands, as ``FrameStore.shot_standing`` alone decides it
    (``SHOT_RULES``): the shots' counterpart of a job's ``JobState``."""

    DONE = "done"  # its frames are written
    RUNNING = "running"  # a live claim: a run or worker makes its frames now
    OPEN = "open"  # neither: the next taker's (a helper's, or its owner's again)

    def __str__(self) -> str:
        return self.value


class FrameStore:
    """Where a clip's finished frames are kept, one PNG each, written atomically:
    ``000001.png``… (1-based) in ``folder``; beside them the clip's shots (``shots.json``) and
    the claims of the shots being stylized (``shot-000001.lock``…)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, index: int) -> Path:
        return self.folder / f"{index + 1:06d}.png"

    def has(self, index: int) -> bool:
        return self.path(index).is_file()

    def save(self, index: int, rgb: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_image(Image.fromarray(rgb), self.path(index))

    def load(self, index: int) -> np.ndarray:
        return np.asarray(load_image(self.path(index)))

    def count(self) -> int:
        return len(list(self.folder.glob("[0-9]*.png"))) if self.folder.is_dir() else 0

    def shots(self) -> Shots | None:
        data = read_json(self.folder / "shots.json")
        try:
            return Shots(tuple(int(i) for i in data["starts"]), int(data["frames"])) if data else None
        except (KeyError, TypeError, ValueError):
            return None  # not one of ours: found again

    def save_shots(self, shots: Shots) -> Shots:
        write_json(self.folder / "shots.json", {"starts": list(shots.starts), "frames": shots.frames})
        return shots

    def claim_path(self, shot: int) -> Path:
        return self.folder / f"shot-{shot + 1:06d}.lock"

    def shot_standing(self, shots: Shots, shot: int, claim_stale: float = CLAIM_STALE) -> ShotState:
        """Where ``shot`` stands: the first of ``SHOT_RULES`` that holds."""
        return next(state for state, rule in SHOT_RULES if rule(self, shots, shot, claim_stale))

    def standings(self, shots: Shots, claim_stale: float = CLAIM_STALE) -> list[ShotState]:
        return [self.shot_standing(shots, k, claim_stale) for k in range(len(shots.starts))]

    def open_shots(self, claim_stale: float = CLAIM_STALE) -> list[int]:
        """The shots that stand OPEN: what a helper can take. Empty before the cut pre-pass
        has run (the first work of whoever takes the clip)."""
        shots = self.shots()
        if shots is None:
            return []
        return [k for k, state in enumerate(self.standings(shots, claim_stale)) if state == ShotState.OPEN]

    def discard(self) -> None:
        """Remove the frames (once the output holds them)."""
        shutil.rmtree(self.folder, ignore_errors=True)


# Where a shot stands, first match wins: (state, rule(store, shots, shot, claim_stale)). The one
# table that decides a shot's state; ``FrameStore.shot_standing`` applies it.
SHOT_RULES: tuple[tuple[ShotState, Callable[[FrameStore, Shots, int, float], bool]], ...] = (
    # its frames are written in order, so its last one says they all are
    (ShotState.DONE, lambda store, shots, k, stale: store.has(shots.span(k)[-1])),
    # a live claim: a fresh heartbeat, and on this host a living process
    (ShotState.RUNNING, lambda store, shots, k, stale: live_holder_at(store.claim_path(k), stale) is not None),
    (ShotState.OPEN, lambda store, shots, k, stale: True),
)
