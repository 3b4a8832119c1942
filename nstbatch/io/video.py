"""Clips in and out: a video file (decoded in-process by PyAV, whose wheel carries FFmpeg) or a
folder of frames (sorted by name); out, a video file (H.264, yuv420p, in mp4 by default, with the
input's timestamps and its audio stream copied unchanged) or a folder of PNG frames.

Frames are RGB ``uint8`` arrays ``(H, W, 3)``, turned upright by the stream's rotation. A file's
problems (no video stream, zero frames, a truncated stream, an unreadable frame) are
``InputError``s naming the clip; the rest of a batch goes on.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import InputError
from ..fs import atomic_path

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
# what we write, by suffix: (container format, video codec, pixel format)
VIDEO_OUTPUTS = {".mp4": ("mp4", "libx264", "yuv420p"), ".m4v": ("mp4", "libx264", "yuv420p"),
                 ".mov": ("mov", "libx264", "yuv420p"), ".mkv": ("matroska", "libx264", "yuv420p"),
                 ".webm": ("webm", "libvpx-vp9", "yuv420p")}
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
# a frame's long side beyond this is refused before decoding (8K is 7680)
MAX_FRAME_SIDE = 8192


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    frames: int
    width: int  # upright (after the rotation)
    height: int
    rate: Fraction | None  # frames a second (average); None for a folder
    rotation: int  # degrees the frames are turned to stand upright (0, 90, 180, 270)
    audio: bool
    folder: bool

    def __str__(self) -> str:
        rate = f" at {float(self.rate):.3g} fps" if self.rate else ""
        return f"{self.path.name}: {self.frames} frame(s) of {self.width}x{self.height}{rate}" + (
            ", with audio" if self.audio else "")


def frame_files(folder: Path) -> list[Path]:
    """A folder clip's frames: its image files, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES
                  and not p.name.startswith("."))


def probe_clip(path: str | os.PathLike) -> ClipInfo:
    """What a clip holds, from its headers and packets (no frame decoded); ``InputError`` with
    the fix for anything that cannot be a clip."""
    path = Path(path)
    if path.is_dir():
        return _probe_folder(path)
    if not path.exists():
        raise InputError(f"{path}: no such clip", hint="check the path: a manifest's relative paths start at its folder")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream", hint="give a video file, or a folder of frames")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = sum(1 for packet in container.demux(stream) if packet.size)
            rotation = _rotation(container, stream)
            audio = bool(container.streams.audio)
            rate = stream.average_rate or stream.guessed_rate
    except av.FFmpegError as e:
        raise InputError(f"{path}: not a readable video ({e.strerror or e})",
                         hint="re-encode it, e.g. with ffmpeg -i IN -c:v libx264 OUT.mp4") from None
    if frames == 0 or not width or not height:
        raise InputError(f"{path}: the video stream has no frames", hint="check that the file is whole")
    if max(width, height) > MAX_FRAME_SIDE:
        raise InputError(f"{path}: frames of {width}x{height} are larger than {MAX_FRAME_SIDE} px",
                         hint="scale the clip down first; size sets the output's side")
    if rotation in (90, 270):
        width, height = height, width
    return ClipInfo(path, frames, width, height, Fraction(rate) if rate else None, rotation, audio, False)


def _probe_folder(path: Path) -> ClipInfo:
    from .images import probe_image

    files = frame_files(path)
    if not files:
        raise InputError(f"{path}: a folder without frames",
                         hint=f"put the frames in it as image files ({', '.join(FRAME_SUFFIXES)}), sorted by name")
    first = probe_image(files[0])
    return ClipInfo(path, len(files), first.width, first.height, None, 0, False, True)


def _rotation(container, stream) -> int:
    """The degrees (counter-clockwise, 0/90/180/270) that turn the frames upright, from the
    stream's display matrix as decoded frames carry it (phones record portrait video as
    landscape frames with a rotation)."""
    container.seek(0)
    try:
        first = next(container.decode(stream), None)
    except Exception:  # a broken first frame is read_frames' error to report, with its index
        return 0
    return int(round(getattr(first, "rotation", 0) or 0)) % 360


@dataclass(frozen=True)
class DecodedFrame:
    """A frame of an input clip as decoded (a video's, or a folder's image)."""

    index: int  # 0-based position in the clip
    rgb: np.ndarray  # (H, W, 3) uint8, upright
    pts: int | None  # the input's timestamp, in its stream's time base (None: a folder's frame)


def read_frames(info: ClipInfo, start: int = 0) -> Iterator[DecodedFrame]:
    """The clip's frames from ``start`` on, in order."""
    if info.folder:
        from .images import load_image

        for index, file in enumerate(frame_files(info.path)[start:], start):
            image = load_image(file)
            if image.size != (info.width, info.height):
                raise InputError(f"{file}: frame {index + 1} is {image.width}x{image.height}, the clip's"
                                 f" first is {info.width}x{info.height}", hint="give every frame one size")
            yield DecodedFrame(index, np.asarray(image), None)
        return
    import av

    index = -1
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                index += 1
                if index < start:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                if info.rotation:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k=info.rotation // 90))
                yield DecodedFrame(index, rgb, frame.pts)
    except av.FFmpegError as e:
        raise InputError(f"{info.path}: frame {index + 2} cannot be decoded ({e.strerror or e})",
                         hint="the file may be truncated; re-encode or cut it") from None
    if index + 1 < info.frames:
        raise InputError(f"{info.path}: {index + 1} frame(s) decoded of {info.frames}",
                         hint="the file may be truncated; re-encode or cut it")


class ClipWriter:
    """Encodes frames into a video file atomically: a temp file beside the output, moved into
    place by ``close`` (a reader never sees half a video). Timestamps are the input's; the
    input's audio stream, if any, is copied packet by packet, unchanged."""

    def __init__(self, path: str | os.PathLike, source: ClipInfo, width: int, height: int, crf: int = 18):
        import av

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_OUTPUTS:
            raise InputError(f"{self.path}: cannot write video as {suffix or 'no extension'}",
                             hint=f"use {', '.join(VIDEO_OUTPUTS)}, or a folder for PNG frames")
        if width % 2 or height % 2:
            raise InputError(f"{self.path}: {width}x{height} frames cannot be yuv420p (odd side)",
                             hint="an even size, or a folder output")
        container_format, codec, pixel_format = VIDEO_OUTPUTS[suffix]
        self.source = source
        self._input = av.open(str(source.path)) if not source.folder else None
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._output = None
        try:
            self._output = av.open(str(self._tmp), "w", format=container_format)
            self._open_streams(codec, pixel_format, width, height, crf)
        except BaseException as error:  # a writer that cannot start leaves no temp file behind
            self.abort(error)
            raise
        self._count = 0

    def _open_streams(self, codec: str, pixel_format: str, width: int, height: int, crf: int) -> None:
        source = self.source
        rate = source.rate or Fraction(25)
        self._video = self._output.add_stream(codec, rate=rate)
        self._video.width, self._video.height, self._video.pix_fmt = width, height, pixel_format
        self._video.options = {"crf": str(crf)} if codec == "libx264" else {}
        # the input's time base, so that each frame keeps its timestamp (variable rates too)
        self._time_base = self._input.streams.video[0].time_base if self._input is not None else Fraction(1, 1) / rate
        self._video.time_base = self._video.codec_context.time_base = self._time_base
        self._audio = (self._output.add_stream_from_template(self._input.streams.audio[0])
                       if self._input is not None and self._input.streams.audio else None)

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = (pts if pts is not None else self._count), self._time_base
        for packet in self._video.encode(frame):
            self._output.mux(packet)
        self._count += 1

    def close(self) -> None:
        """Flush the encoder, copy the audio, and move the file into place."""
        try:
            for packet in self._video.encode():
                self._output.mux(packet)
            if self._audio is not None:
                source = self._input.streams.audio[0]
                for packet in self._input.demux(source):
                    if packet.dts is None:  # the demuxer's flush packet
                        continue
                    packet.stream = self._audio
                    self._output.mux(packet)
            self._output.close()
        except BaseException as e:
            self.abort(e)
            raise
        if self._input is not None:
            self._input.close()
        self._atomic.__exit__(None, None, None)

    def abort(self, error: BaseException | None = None) -> None:
        """Leave nothing behind: close and remove the temp file."""
        for thing in (self._output, self._input):
            try:
                if thing is not None:
                    thing.close()
            except Exception:
                pass
        error = error or RuntimeError("aborted")
        try:
            self._atomic.__exit__(type(error), error, None)
        except BaseException:
            pass


def encode_clip(info: ClipInfo, frames: Iterable[np.ndarray], output: Path, size: tuple[int, int],
                pts: list[int | None]) -> None:
    """A video ``output`` of RGB ``frames`` (each ``size``: height, width) with the input
    clip's timestamps ``pts`` and audio, moved into place whole (``ClipWriter``)."""
    height, width = size
    writer = ClipWriter(output, info, width, height)
    try:
        for rgb, stamp in zip(frames, pts):
            writer.write(rgb, stamp)
    except BaseException as error:
        writer.abort(error)
        raise
    writer.close()


def clip_output_format(path: str | os.PathLike) -> str | None:
    """A clip output's container format (``VIDEO_OUTPUTS``), or None for a folder of frames (a
    name without an extension); ``InputError`` for anything else. Reads nothing."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix and suffix not in VIDEO_OUTPUTS:
        raise InputError(f"{path}: a clip's output is a video ({', '.join(VIDEO_OUTPUTS)}) or a folder,"
                         f" not {suffix}", hint="name it .mp4, or give a folder without an extension")
    return VIDEO_OUTPUTS[suffix][0] if suffix else None


def check_clip_audio(info: ClipInfo, output: str | os.PathLike) -> None:
    """Before any frame is made: the video ``output`` can hold the clip's audio stream as it is
    copied (AAC does not go into .webm, PCM not into .mp4). Tried for real: the output's
    container, in memory, with the stream, its header written. ``InputError`` naming the
    stream and the containers that take it."""
    suffix = Path(output).suffix.lower()
    if not info.audio or info.folder or suffix not in VIDEO_OUTPUTS:
        return
    import av

    with av.open(str(info.path)) as source:
        stream = source.streams.audio[0]
        if _holds(VIDEO_OUTPUTS[suffix][0], stream):
            return
        fits = [other for other, (fmt, _, _) in VIDEO_OUTPUTS.items() if other != suffix and _holds(fmt, stream)]
        raise InputError(f"{output}: a {suffix} file cannot hold the {stream.codec_context.name} audio of"
                         f" {info.path.name}", hint=f"write {' or '.join(fits) or 'a folder of frames'} instead")


def _holds(container_format: str, stream) -> bool:
    """Whether ``container_format`` takes ``stream`` copied as it is (its header written)."""
    import av

    try:
        with av.open(io.BytesIO(), "w", format=container_format) as trial:
            trial.add_stream_from_template(stream)
            trial.start_encoding()
        return True
    except (ValueError, av.FFmpegError):
        return False


def check_clip_output(path: str | os.PathLike) -> Path:
    """Before a clip runs: its output is a video file we can write or a folder for PNG frames
    (``clip_output_format``), in a place that can be made and written."""
    from .images import check_output_path

    path = Path(path)
    if clip_output_format(path) is None:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: is a file; a clip's frames go into a folder", hint="give a folder")
        check_output_path(path / "000001.png")  # the folder can be made and written
    elif path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the video output")
    else:
        check_output_path(path.with_suffix(".png"))  # its folder can be made and written
    return path


def clip_digest(path: Path, digest) -> str:
    """A clip's content digest for done records: a file's (``digest(path)``), or for a folder
    of frames one over each frame's name and digest, so that a changed, added or removed frame
    reruns the clip."""
    if not path.is_dir():
        return digest(path)
    import hashlib
    import json

    frames = [[file.name, digest(file)] for file in frame_files(path)]
    return hashlib.sha256(json.dumps(frames).encode()).hexdigest()


def still(path: str | os.PathLike):
    """A picture of what ``path`` holds, for thumbnails and contact sheets: an image itself, or
    a clip's first frame (a video file's, or a folder of frames')."""
    from PIL import Image

    from .images import load_image

    path = Path(path)
    if path.is_dir() or is_video_file(path):
        return Image.fromarray(next(read_frames(probe_clip(path))).rgb)
    return load_image(path)
