"""Clips in and out: a video file (decoded in-process by PyAV, whose wheel carries FFmpeg) or a
folder of frames (sorted by name); out, a video file (H.264, yuv420p, in mp4 by default, with the
input's timestamps and its audio stream copied unchanged) or a folder of PNG frames.

Frames are RGB ``uint8`` arrays ``(H, W, 3)``, turned upright by the stream's rotation. A file's
problems (no video stream, zero frames, a truncated stream, an unreadable frame) are
``InputError``s naming the clip; the rest of a batch goes on.
"""
from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..fs import atomic_path

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
# the containers we write, by suffix
VIDEO_OUTPUTS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


@dataclass(frozen=True)
class VideoCodec:
    encoder: str  # FFmpeg's, in PyAV's wheel
    pixel_format: str  # its usual one (``pixel_format: auto``)
    crf: int | None  # its near-transparent constant quality; None: it takes no crf or bitrate
    crf_max: int
    containers: tuple[str, ...]  # the container formats that hold it (tried: tests/test_video.py)


# The codecs a clip's video output can have (``codec``); ``auto`` is vp9 in .webm, h264 elsewhere.
CODECS = {"h264": VideoCodec("libx264", "yuv420p", 18, 51, ("mp4", "mov", "matroska")),
          "hevc": VideoCodec("libx265", "yuv420p", 20, 51, ("mp4", "mov", "matroska")),
          "prores": VideoCodec("prores_ks", "yuv422p10le", None, 0, ("mov", "matroska")),
          "ffv1": VideoCodec("ffv1", "yuv444p", None, 0, ("matroska",)),
          "vp9": VideoCodec("libvpx-vp9", "yuv420p", 31, 63, ("webm", "mp4", "matroska")),
          "av1": VideoCodec("libsvtav1", "yuv420p", 30, 63, ("webm", "mp4", "matroska"))}
UNSPECIFIED = 2  # FFmpeg's AVCOL_SPC/PRI/TRC_UNSPECIFIED
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
    audio: bool  # an audio or subtitle stream to copy
    folder: bool
    pixel_format: str = "rgb24"  # the video stream's (a folder's frames: rgb24)
    # the stream's colour tags as FFmpeg numbers them: matrix, range, primaries, transfer (0 or 2: unspecified)
    colour: tuple[int, int, int, int] = (0, 0, 0, 0)
    aspect: Fraction | None = None  # the sample (pixel) aspect ratio, where the stream gives one

    @property
    def deep(self) -> bool:
        """Whether the stream has more than 8 bits a sample (10-bit video)."""
        return any(tag in self.pixel_format for tag in ("10", "12", "16"))

    def colours(self) -> tuple[int, int, int, int]:
        """The colour (matrix, range, primaries, transfer) its frames are read and written in: the
        stream's tags where it has them, else what players assume (BT.709 from 720 lines up, BT.601
        below, limited range; a folder of frames: BT.709)."""
        matrix, rng, primaries, transfer = self.colour
        guess = 1 if self.folder or min(self.width, self.height) >= 720 else 6
        full = self.pixel_format.startswith("yuvj")
        return (matrix if matrix not in (0, UNSPECIFIED) else guess, rng or (2 if full else 1),
                primaries if primaries not in (0, UNSPECIFIED) else guess,
                transfer if transfer not in (0, UNSPECIFIED) else guess)

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
            audio = bool(_copied(container))
            rate = stream.average_rate or stream.guessed_rate
            context = stream.codec_context
            colour = (context.colorspace, context.color_range, context.color_primaries, context.color_trc)
            pixel_format, aspect = context.pix_fmt or "yuv420p", context.sample_aspect_ratio
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
    return ClipInfo(path, frames, width, height, Fraction(rate) if rate else None, rotation, audio, False,
                    pixel_format, tuple(int(c or 0) for c in colour), Fraction(aspect) if aspect else None)


def _copied(container) -> list:
    """The streams of an input that its output copies: every audio and subtitle stream."""
    return [stream for stream in container.streams if stream.type in ("audio", "subtitle")]


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


def frame_stamps(info: ClipInfo) -> list[int] | None:
    """Each frame's timestamp in display order, from the packets alone (nothing decoded), or
    None where they cannot say (a folder, a packet without one, a count that is not the clip's)."""
    if info.folder:
        return None
    import av

    try:
        with av.open(str(info.path)) as container:
            stamps = [packet.pts for packet in container.demux(container.streams.video[0]) if packet.size]
    except av.FFmpegError:
        return None
    if len(stamps) != info.frames or None in stamps or len(set(stamps)) != len(stamps):
        return None
    return sorted(stamps)


def read_frames(info: ClipInfo, start: int = 0) -> Iterator[DecodedFrame]:
    """The clip's frames from ``start`` on, in order: a video is sought to the keyframe before
    frame ``start`` where its packets' timestamps say which frame is which (``frame_stamps``),
    not decoded from its first frame."""
    if info.folder:
        from .images import load_image

        for index, file in enumerate(frame_files(info.path)[start:], start):
            image = load_image(file)
            if image.size != (info.width, info.height):
                raise InputError(f"{file}: frame {index + 1} is {image.width}x{image.height}, the clip's"
                                 f" first is {info.width}x{info.height}", hint="give every frame one size")
            yield DecodedFrame(index, np.asarray(image), None)
        return
    if start >= info.frames:
        return
    import av

    index, (matrix, rng, _, _) = -1, info.colours()
    stamps = frame_stamps(info) if start > 0 else None
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if stamps is not None:
                container.seek(stamps[start], stream=stream, backward=True)
                where = {stamp: position for position, stamp in enumerate(stamps)}
            for frame in container.decode(stream):
                index = where.get(frame.pts, -1) if stamps is not None else index + 1
                if index < start:
                    continue
                rgb = frame.to_ndarray(format="rgb24", src_colorspace=_matrix(matrix), src_color_range=rng)
                if info.rotation:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k=info.rotation // 90))
                yield DecodedFrame(index, rgb, frame.pts)
    except av.FFmpegError as e:
        raise InputError(f"{info.path}: frame {index + 2} cannot be decoded ({e.strerror or e})",
                         hint="the file may be truncated; re-encode or cut it") from None
    if index + 1 < info.frames:
        raise InputError(f"{info.path}: {index + 1} frame(s) decoded of {info.frames}",
                         hint="the file may be truncated; re-encode or cut it")


def _matrix(matrix: int) -> int:
    """The YUV matrix swscale converts with, for a stream's tag (SMPTE 170M is BT.601's)."""
    return {6: 5, 10: 9}.get(matrix, matrix)


def _rate(fps: float) -> Fraction:
    """A folder's frame rate as a fraction: 29.97, 23.976 and 59.94 are NTSC's N/1.001."""
    ntsc = round(fps * 1.001)
    return Fraction(ntsc * 1000, 1001) if abs(fps * 1.001 - ntsc) < 1e-3 and ntsc % 6 == 0 else Fraction(fps)


@dataclass(frozen=True)
class Encoding:
    """How a clip's video output is written: what its ``codec``, ``crf``, ``bitrate``,
    ``pixel_format`` and ``audio`` say, checked (``encoding``)."""

    container: str
    codec: str  # a ``CODECS`` name
    pixel_format: str
    options: tuple[tuple[str, str], ...]  # the encoder's
    bit_rate: int  # bits a second (0: constant quality)
    copy: bool  # the input's audio and subtitle streams copied

    @property
    def encoder(self) -> str:
        return CODECS[self.codec].encoder


def encoding(output: str | os.PathLike, params=None, source: ClipInfo | None = None) -> Encoding:
    """The encoding of the video ``output`` that ``params`` (a job's ``StyleParams``; None: the
    defaults) ask for, checked before any work: ``InputError`` naming the setting and the fix."""
    import av

    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_OUTPUTS:
        raise InputError(f"{path}: cannot write video as {suffix or 'no extension'}",
                         hint=f"use {', '.join(VIDEO_OUTPUTS)}, or a folder for PNG frames")
    container = VIDEO_OUTPUTS[suffix]
    chosen = getattr(params, "codec", "auto")
    name = chosen if chosen != "auto" else "vp9" if container == "webm" else "h264"
    codec = CODECS[name]
    if container not in codec.containers:
        fits = [other for other, fmt in VIDEO_OUTPUTS.items() if fmt in codec.containers]
        raise InputError(f"{path}: a {suffix} file cannot hold {name} video",
                         hint=f"write {' or '.join(fits)}, or choose another codec")
    crf, bitrate = getattr(params, "crf", -1), getattr(params, "bitrate", 0)
    if codec.crf is None and (crf != -1 or bitrate):
        raise InputError(f"{path}: {name} takes no crf or bitrate (its quality is the pixel format's)",
                         hint="leave crf and bitrate out, or choose h264, hevc, vp9 or av1")
    if crf > codec.crf_max:
        raise InputError(f"{path}: crf {crf} is beyond {name}'s 0-{codec.crf_max}", hint=f"a crf of 0-{codec.crf_max}")
    from ..config import PIXEL_FORMATS

    formats = {fmt.name for fmt in av.codec.Codec(codec.encoder, "w").video_formats}
    takes = [f for f in PIXEL_FORMATS[1:] if f in formats]
    pixel_format = getattr(params, "pixel_format", "auto")
    if pixel_format == "auto":
        pixel_format = codec.pixel_format
        deeper = pixel_format if pixel_format.endswith("10le") else pixel_format + "10le"
        if source is not None and source.deep and deeper in takes:
            pixel_format = deeper  # a 10-bit clip stays 10-bit where the codec can
    elif pixel_format not in takes:
        raise InputError(f"{path}: {name} does not take pixel_format {pixel_format}", hint=f"use {', '.join(takes)}")
    return Encoding(container, name, pixel_format, _options(name, pixel_format, crf, codec), bitrate * 1000,
                    getattr(params, "audio", "copy") == "copy")


def _options(name: str, pixel_format: str, crf: int, codec: VideoCodec) -> tuple[tuple[str, str], ...]:
    quality = str(crf if crf >= 0 else codec.crf)
    # x265's B-frames with the input's time base made the mp4/mov muxer refuse about one close in
    # three ("not yet implemented", found by the codec table test): hevc goes without B-frames
    # until that is understood
    return {"h264": (("crf", quality),), "hevc": (("crf", quality), ("x265-params", "log-level=error:bframes=0")),
            "vp9": (("crf", quality), ("b", "0"), ("row-mt", "1")), "av1": (("crf", quality),),
            "prores": (("profile", "4" if "444" in pixel_format else "3"),), "ffv1": (("level", "3"),)}[name]


class ClipWriter:
    """Encodes frames into a video file atomically: a temp file beside the output, moved into
    place by ``close`` (a reader never sees half a video). Timestamps are the input's, and its
    colour tags and pixel aspect; every audio and subtitle stream of the input is copied packet
    by packet, unchanged (``audio: copy``). ``params``: the job's (``encoding``)."""

    def __init__(self, path: str | os.PathLike, source: ClipInfo, width: int, height: int, params=None, *,
                 like: str | os.PathLike | None = None, copy: bool = True):
        import av

        self.path = Path(path)
        self.encoding = encoding(like or self.path, params, source)  # ``like``: a segment of that output
        if not copy:
            self.encoding = dataclasses.replace(self.encoding, copy=False)
        chroma = self.encoding.pixel_format  # 4:2:0 halves both sides' colour, 4:2:2 the width's
        if (("420" in chroma or "422" in chroma) and width % 2) or ("420" in chroma and height % 2):
            raise InputError(f"{self.path}: {width}x{height} frames cannot be {self.encoding.pixel_format} (odd side)",
                             hint="an even size, pixel_format yuv444p, or a folder output")
        self.source, self._colour = source, source.colours()
        self._fps = getattr(params, "fps", 25.0)
        self._input = av.open(str(source.path)) if not source.folder else None
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._output = None
        try:
            self._output = av.open(str(self._tmp), "w", format=self.encoding.container)
            self._open_streams(width, height)
        except BaseException as error:  # a writer that cannot start leaves no temp file behind
            self.abort(error)
            raise
        self._count = 0

    def _open_streams(self, width: int, height: int) -> None:
        source, chosen = self.source, self.encoding
        rate = source.rate or _rate(self._fps)
        self._video = self._output.add_stream(chosen.encoder, rate=rate)
        self._video.width, self._video.height, self._video.pix_fmt = width, height, chosen.pixel_format
        self._video.options = dict(chosen.options)
        context = self._video.codec_context
        if chosen.bit_rate:
            context.bit_rate = chosen.bit_rate
        if chosen.codec == "hevc" and chosen.container in ("mp4", "mov"):
            self._video.codec_tag = "hvc1"  # what QuickTime and editors read
        context.colorspace, context.color_range, context.color_primaries, context.color_trc = self._colour
        if source.aspect:
            context.sample_aspect_ratio = source.aspect
        # the input's time base, so that each frame keeps its timestamp (variable rates too)
        self._time_base = self._input.streams.video[0].time_base if self._input is not None else Fraction(1, 1) / rate
        self._video.time_base = context.time_base = self._time_base
        self._copies = _add_copies(self._input, self._output) if self._input is not None and chosen.copy else {}

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        import av

        matrix, rng, primaries, transfer = self._colour
        # the matrix and range only: given the primaries and transfer too, swscale would convert
        # the pixels' gamut and curve (the frames are the input's own signal, to be tagged as it
        # was). The colour planes averaged over each 2x2 (area), not sampled bilinearly, which
        # smears a saturated edge into its neighbours
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
            format=self.encoding.pixel_format, dst_colorspace=_matrix(matrix), dst_color_range=rng,
            interpolation="AREA")
        frame.colorspace, frame.color_primaries, frame.color_trc = matrix, primaries, transfer
        frame.pts, frame.time_base = (pts if pts is not None else self._count), self._time_base
        for packet in self._video.encode(frame):
            self._output.mux(packet)
        self._count += 1

    def close(self) -> None:
        """Flush the encoder, copy the audio and subtitles, and move the file into place."""
        try:
            for packet in self._video.encode():
                self._output.mux(packet)
            _copy_packets(self._input, self._copies, self._output)
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
                pts: list[int | None], params=None) -> None:
    """A video ``output`` of RGB ``frames`` (each ``size``: height, width) with the input
    clip's timestamps ``pts``, colour tags and streams, moved into place whole (``ClipWriter``)."""
    import av

    height, width = size
    try:
        writer = ClipWriter(output, info, width, height, params)
        try:
            for rgb, stamp in zip(frames, pts):
                writer.write(rgb, stamp)
        except BaseException as error:
            writer.abort(error)
            raise
        writer.close()
    except (av.FFmpegError, ValueError, OSError) as e:  # the encoder or the disk: nothing left in place
        raise InputError(f"{output}: the video could not be written ({e})",
                         hint="check the disk's free space; the frames made are kept: running it again"
                         " writes the video from them") from None


def _add_copies(source, output) -> dict:
    """The output's copy of each audio and subtitle stream of ``source`` (``_copied``), by the
    source stream's index, with its language and title."""
    copies = {}
    for stream in _copied(source):
        copies[stream.index] = copy = output.add_stream_from_template(stream)
        copy.metadata.update({k: v for k, v in stream.metadata.items() if k in ("language", "title")})
    return copies


def _copy_packets(source, copies: dict, output) -> None:
    """Every packet of ``source``'s copied streams into ``output``, unchanged."""
    if not copies:
        return
    for packet in source.demux(*[source.streams[index] for index in copies]):
        if packet.dts is None:  # the demuxer's flush packet
            continue
        packet.stream = copies[packet.stream.index]
        output.mux(packet)


def encode_segment(info: ClipInfo, frames: Iterable[tuple[np.ndarray, int]], path: Path, output: Path,
                   size: tuple[int, int], params=None) -> None:
    """A run of a clip's frames (RGB, and each one's timestamp: the input's, or for a folder its
    index) encoded as the video ``output`` will hold them, into ``path`` (in ``output``'s
    container, video only), moved into place whole: ``join_segments`` joins such runs into the
    output without encoding them again."""
    height, width = size
    writer = ClipWriter(path, info, width, height, params, like=output, copy=False)
    try:
        for rgb, stamp in frames:
            writer.write(rgb, stamp)
    except BaseException as error:
        writer.abort(error)
        raise
    writer.close()


def join_segments(info: ClipInfo, segments: Sequence[Path], output: Path, params=None, frames: int | None = None,
                  on_joined: Callable[[Path], None] | None = None) -> None:
    """The video ``output`` from its encoded runs of frames (``encode_segment``, in order), their
    packets copied, not encoded again, then the input's audio and subtitle streams (as
    ``ClipWriter`` copies them); moved into place whole. ``on_joined`` hears of each segment once
    its packets are in the output (to free its disk as the output grows); ``frames``: how many
    the output must hold (else ``InputError``, nothing in place)."""
    import av

    chosen = encoding(output, params, info)
    try:
        with atomic_path(output) as tmp, av.open(str(tmp), "w", format=chosen.container) as joined:
            with av.open(str(segments[0])) as first:
                template = first.streams.video[0]
                video = joined.add_stream_from_template(template)
                video.time_base = template.time_base
            if chosen.codec == "hevc" and chosen.container in ("mp4", "mov"):
                video.codec_tag = "hvc1"
            source = av.open(str(info.path)) if not info.folder and chosen.copy else None
            try:
                copies = _add_copies(source, joined) if source is not None else {}
                count = _join_video(segments, video, joined, on_joined)
                if frames is not None and count != frames:
                    raise InputError(f"{output}: {count} frame(s) in the encoded segments of {frames}",
                                     hint="run it again: the missing frames are made anew")
                _copy_packets(source, copies, joined)
            finally:
                if source is not None:
                    source.close()
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"{output}: the video could not be written ({e})",
                         hint="check the disk's free space; run it again to write it") from None


def _join_video(segments: Sequence[Path], video, joined, on_joined) -> int:
    """Each segment's video packets into ``video`` of ``joined``, in order; how many. A
    segment's first packets may be decoded before the previous one's last are shown (B-frames):
    a decoding time that would not move forward moves one tick past the last."""
    import av

    count, last = 0, None
    for segment in segments:
        with av.open(str(segment)) as part:
            for packet in part.demux(part.streams.video[0]):
                if packet.dts is None:
                    continue
                if last is not None and packet.dts <= last:
                    packet.dts = last + 1
                last = packet.dts
                packet.stream = video
                joined.mux(packet)
                count += 1
        if on_joined is not None:
            on_joined(segment)
    return count


def clip_output_format(path: str | os.PathLike) -> str | None:
    """A clip output's container format (``VIDEO_OUTPUTS``), or None for a folder of frames (a
    name without an extension); ``InputError`` for anything else. Reads nothing."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix and suffix not in VIDEO_OUTPUTS:
        raise InputError(f"{path}: a clip's output is a video ({', '.join(VIDEO_OUTPUTS)}) or a folder,"
                         f" not {suffix}", hint="name it .mp4, or give a folder without an extension")
    return VIDEO_OUTPUTS[suffix] if suffix else None


def check_clip_streams(info: ClipInfo, output: str | os.PathLike, params=None) -> None:
    """Before any frame is made: the video ``output`` can hold each audio and subtitle stream of
    the clip as it is copied (AAC does not go into .webm, PCM not into .mp4, mov_text not into
    .mkv). Tried for real: the output's container, in memory, with the stream, its header
    written. ``InputError`` naming the stream, the containers that take it, and ``audio: drop``."""
    suffix = Path(output).suffix.lower()
    if not info.audio or info.folder or suffix not in VIDEO_OUTPUTS or getattr(params, "audio", "copy") == "drop":
        return
    import av

    with av.open(str(info.path)) as source:
        for stream in _copied(source):
            if _holds(VIDEO_OUTPUTS[suffix], stream):
                continue
            fits = [other for other, fmt in VIDEO_OUTPUTS.items() if other != suffix and _holds(fmt, stream)]
            raise InputError(f"{output}: a {suffix} file cannot hold the {stream.codec_context.name} {stream.type}"
                             f" of {info.path.name} (stream {stream.index})",
                             hint=f"write {' or '.join(fits) or 'a folder of frames'} instead, or set audio: drop")


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


def check_clip_output(path: str | os.PathLike, params=None) -> Path:
    """Before a clip runs: its output is a video file we can write as ``params`` say
    (``encoding``) or a folder for PNG frames, in a place that can be made and written."""
    from .images import check_output_path

    path = Path(path)
    if clip_output_format(path) is None:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: is a file; a clip's frames go into a folder", hint="give a folder")
        # the folder can be made and written, made only when its frames are (not empty before)
        check_output_path(path / "000001.png" if path.is_dir() else path.with_suffix(".png"))
    elif path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the video output")
    elif params is not None and params.bit_depth == 16:
        raise InputError(f"{path}: bit_depth 16 is for a folder of PNG frames; a video's depth is its pixel_format",
                         hint="give a folder as the output, or a 10-bit pixel_format (yuv422p10le) and bit_depth 8")
    else:
        encoding(path, params)
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
