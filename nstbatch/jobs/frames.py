"""A clip's frames as they are made: one PNG each in a folder (the state directory's, or a
``stylize`` call's), written atomically, with the clip's shots (``shots.json``, from the cut
pre-pass) and the claims of the shots being stylized (``shot-000001.lock``…) beside them. No
torch here: a helping run asks it which shots are free before it loads anything.

Bounded disk: for a video output, the frames are encoded as they are made, ``SEGMENT_FRAMES``
at a time (frames 1–40 in ``segment-000001.seg``, 41–80 in the next…, each in the output's
codec and container, ``io.video.encode_segment``), and their PNGs deleted, so a clip holds the
disk of its output plus a few dozen frames however long it is; the end joins the segments into
the output without encoding them again (``io.video.join_segments``). A segment is encoded only
once every frame up to ``reach`` past its end is written: the frames a later frame is tied to
(``temporal_frames``), and so the frames a resume starts from, are always PNGs. Each PNG keeps
its frame's input timestamp, so a segment encoded after a resume has them all."""
from __future__ import annotations

import bisect
import dataclasses
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from ..fs import read_json, write_json
from ..io.images import load_image, read_provenance, save_image
from .claims import CLAIM_STALE, live_holder_at

# Frames a segment holds: a keyframe every 40 frames (the cost of bounded disk in the output's
# size, benchmarks/RESULTS.md), and never more than this plus ``reach`` frames kept as PNGs.
SEGMENT_FRAMES = 40
JOINING = "joining"  # the marker of a join under way (``FrameStore.joining``)


@dataclass(frozen=True)
class Shots:
    """A clip's shots: the first frame of each (the first is 0), and the clip's frame count;
    ``bridges``: the frames after a flash (or a glitch of a frame or two) that are no cut, each
    with how far back the last frame of the take before the flash is, which it is tied to
    instead of the flashed frame."""

    starts: tuple[int, ...]
    frames: int
    bridges: dict[int, int] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def beyond(self) -> int:
        """How much farther back than ``temporal_frames`` a bridged frame's ties reach."""
        return max(self.bridges.values(), default=1) - 1

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


@dataclass(frozen=True)
class Sealing:
    """How a clip's frames are encoded as they are made (``FrameStore.seal``): the clip
    (``io.video.ClipInfo``), its video output (what the segments are encoded as), the frames'
    (height, width), the job's params, and ``reach``: how far back a frame's ties look."""

    info: Any
    output: Path
    size: tuple[int, int]
    params: Any
    reach: int


class FrameStore:
    """Where a clip's finished frames are kept, one PNG each, written atomically:
    ``000001.png``… (1-based) in ``folder``; beside them the clip's shots (``shots.json``), the
    claims of the shots being stylized (``shot-000001.lock``…), and, with ``sealing`` (a video
    output), the segments already encoded (``segment-000001.seg``…), whose PNGs are gone."""

    def __init__(self, folder: Path, sealing: Sealing | None = None):
        self.folder = Path(folder)
        self.sealing = sealing
        self._beyond: int | None = None  # ``Shots.beyond``, read once the cuts are kept (``seal``)

    def sealed_as(self, sealing: Sealing | None) -> "FrameStore":
        """This store, its frames encoded as ``sealing`` says as they are made."""
        return FrameStore(self.folder, sealing)

    def path(self, index: int) -> Path:
        return self.folder / f"{index + 1:06d}.png"

    def segment_path(self, segment: int) -> Path:
        return self.folder / f"segment-{segment + 1:06d}.seg"

    def has(self, index: int) -> bool:
        """Whether frame ``index`` is written: as a PNG, or encoded in its segment."""
        return self.path(index).is_file() or self.segment_path(index // SEGMENT_FRAMES).is_file()

    def kept(self, index: int) -> bool:
        """Whether frame ``index`` is a PNG still (``load`` reads it)."""
        return self.path(index).is_file()

    def deep_path(self, index: int) -> Path:
        """Frame ``index`` at 16 bits a channel, for a folder output with ``bit_depth: 16``."""
        return self.folder / "16-bit" / self.path(index).name

    def save(self, index: int, rgb: np.ndarray, pts: int | None = None, deep: np.ndarray | None = None) -> None:
        """Frame ``index``, with its input timestamp ``pts`` (None: a folder's frame); ``deep``:
        its 16-bit pixels too, written first (``has`` reads the 8-bit frame, which ties read)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if deep is not None:
            self.deep_path(index).parent.mkdir(exist_ok=True)
            save_image(deep, self.deep_path(index))
        save_image(Image.fromarray(rgb), self.path(index), {"pts": pts} if pts is not None else None)

    def load(self, index: int) -> np.ndarray:
        return np.asarray(load_image(self.path(index)))

    def stamp(self, index: int) -> int | None:
        """Frame ``index``'s input timestamp as saved with it, None for a folder's frame."""
        pts = read_provenance(self.path(index)).get("pts")
        return int(pts) if pts is not None else None

    def pts(self, index: int) -> int:
        """Frame ``index``'s input timestamp as saved with it; a folder's frame: its index."""
        pts = self.stamp(index)
        return pts if pts is not None else index

    def drop(self, span: range) -> None:
        """Delete the PNGs of the frames in ``span`` (a multi-pass shot's pictures of a pass it
        no longer needs)."""
        for index in span:
            self.path(index).unlink(missing_ok=True)

    def pass_store(self, number: int) -> "FrameStore":
        """Where the pictures of pass ``number`` of a multi-pass clip are kept until the next
        pass is made (``passes``); the last pass's are this store's own. ``pass_store(0)``: the
        clip's content frames, as fitted, for the passes after the first to read back."""
        return FrameStore(self.folder / (f"pass-{number:02d}" if number else "content"))

    def passes_done(self, shot: int) -> int:
        """The passes of ``shot`` whose frames are all made (a multi-pass clip's)."""
        data = read_json(self.folder / f"passes-{shot + 1:06d}.json")
        return int(data.get("done", 0)) if isinstance(data, dict) else 0

    def save_passes_done(self, shot: int, done: int) -> None:
        write_json(self.folder / f"passes-{shot + 1:06d}.json", {"done": done})

    def count(self) -> int:
        """The frames written: PNGs, and those encoded in segments."""
        if not self.folder.is_dir():
            return 0
        shots, sealed = self.shots(), 0
        for path in self.folder.glob("segment-*.seg"):
            start = (int(path.stem.split("-")[1]) - 1) * SEGMENT_FRAMES
            sealed += min(SEGMENT_FRAMES, shots.frames - start) if shots is not None else SEGMENT_FRAMES
        return len(list(self.folder.glob("[0-9]*.png"))) + sealed

    def made(self, passes: int = 1) -> int:
        """The frames made, a frame counted once a pass (``passes``): the last pass's (``count``),
        the pictures of earlier passes still kept, and those of passes whose pictures are freed."""
        if passes == 1:
            return self.count()
        shots = self.shots()
        if shots is None:
            return 0
        freed = sum(max(self.passes_done(k) - 1, 0) * len(shots.span(k)) for k in range(len(shots.starts)))
        kept = sum(len(list(self.pass_store(n).folder.glob("[0-9]*.png"))) for n in range(1, passes))
        return freed + kept + self.count()

    def seal(self, frames: int) -> None:
        """Encode each segment of the clip (``frames`` long) whose frames, and ``reach`` past
        them, are written, and delete its PNGs (``Sealing``; nothing without it)."""
        sealing = self.sealing
        if sealing is None:
            return
        from ..io.video import encode_segment

        pending = sorted({int(path.stem) - 1 for path in self.folder.glob("[0-9]*.png")})
        if self._beyond is None and (shots := self.shots()) is not None:
            self._beyond = shots.beyond  # read once: the cuts do not change under a clip
        reach = sealing.reach + ((self._beyond or 0) if sealing.reach else 0)  # past a flash
        for segment in sorted({index // SEGMENT_FRAMES for index in pending}):
            span = range(segment * SEGMENT_FRAMES, min((segment + 1) * SEGMENT_FRAMES, frames))
            after = range(span.stop, min(span.stop + reach, frames))
            if self.segment_path(segment).is_file() or not all(self.has(index) for index in (*span, *after)):
                continue
            try:
                encode_segment(sealing.info, ((self.load(index), self.pts(index)) for index in span),
                               self.segment_path(segment), sealing.output, sealing.size, sealing.params)
            except Exception:
                if not self.segment_path(segment).is_file():
                    raise
                continue  # another run sharing the clip sealed it meanwhile (and took its PNGs)
            for index in span:
                self.path(index).unlink(missing_ok=True)

    @contextmanager
    def joining(self, frames: int) -> Iterator[None]:
        """Around the join of a clip ``frames`` long that frees each segment as the output takes
        it in: marked while it runs (``start_over_if_torn``). If it fails, the frames are kept
        while every segment is (a full disk at the start: running it again writes the video),
        and discarded once one was freed (no output holds it)."""
        marker = self.folder / JOINING
        marker.touch()
        try:
            yield
        except BaseException:
            self._after_join(frames)
            raise
        marker.unlink(missing_ok=True)

    def start_over_if_torn(self, frames: int) -> None:
        """A join killed half way (of a clip ``frames`` long) may have freed segments whose
        frames no output holds: then the clip's owner starts the clip again (a join takes
        seconds; a kill that lands in one after it freed a segment costs the clip)."""
        if (self.folder / JOINING).exists():
            self._after_join(frames)

    def _after_join(self, frames: int) -> None:
        if all(path.is_file() for path in self.segments(frames)):
            (self.folder / JOINING).unlink(missing_ok=True)  # nothing freed: the frames stand
        else:
            self.discard()

    def segments(self, frames: int) -> list[Path]:
        """Every segment of a clip ``frames`` long, in order, once all its frames are sealed."""
        return [self.segment_path(segment) for segment in range(-(-frames // SEGMENT_FRAMES))]

    def shots(self) -> Shots | None:
        data = read_json(self.folder / "shots.json")
        try:
            return Shots(tuple(int(i) for i in data["starts"]), int(data["frames"]),
                         {int(k): int(v) for k, v in data.get("bridges", {}).items()}) if data else None
        except (KeyError, TypeError, ValueError):
            return None  # not one of ours: found again

    def save_shots(self, shots: Shots) -> Shots:
        write_json(self.folder / "shots.json", {"starts": list(shots.starts), "frames": shots.frames,
                                                "bridges": {str(k): v for k, v in shots.bridges.items()}})
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
