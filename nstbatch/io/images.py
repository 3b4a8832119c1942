"""Images in and out: decoding to RGB by one documented rule, resizing, atomic writes.

Conversion rule (``to_rgb``), applied after the EXIF orientation:
- 8-bit RGB as is; grayscale (``L``) repeated into three channels;
- 16-bit and 32-bit integer grayscale (``I;16``, ``I``) scaled by their range (65535) to 8 bits;
- palette (``P``) expanded, with its transparency if any;
- anything with alpha (``RGBA``, ``LA``, ``PA``) composited over white, the usual page colour;
- ``CMYK`` and ``YCbCr`` converted by Pillow's own colour conversion; float (``F``) clipped to [0, 1];
- an animated image contributes its first frame.

Outputs: PNG, JPEG, WebP and TIFF, 8 bits a channel, or 16 (PNG and TIFF: ``bit_depth 16``,
written from the float result, so smooth gradients keep their levels); an input's ICC profile
(``icc_profile``) goes into the output made from it, so its colours mean what the content's did.
"""
from __future__ import annotations

import difflib
import io
import itertools
import json
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from . import webdataset
from ..environment import max_pixels
from ..geometry import fitted, long_side_size
from ..errors import InputError
from ..fs import atomic_write

# Formats we write, by extension, and Pillow's name for each.
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
DEEP_FORMATS = ("PNG", "TIFF")  # the ones that hold 16 bits a channel


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    mode: str


def _pillow_refuses(path: Path, error: Exception) -> InputError:
    """Pillow's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``), which the
    ``nstbatch`` command lifts in favour of ours and a library caller's process keeps."""
    return InputError(f"{path}: Pillow refuses to open it ({error})",
                      hint="if the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS in your program"
                           " (the nstbatch command leaves the decision to NSTBATCH_MAX_PIXELS)")


def _source(path: Path, member: bool):
    """What Pillow opens: the file, or a shard member's bytes (``webdataset``)."""
    return webdataset.open_member(path) if member else path


NEAR_NAMES_SCANNED = 5000  # a missing file's folder is searched for near names up to this many entries


def _near_names(path: Path) -> str:
    """'did you mean …?' for a missing file whose folder holds a name close to it."""
    try:
        names = [entry.name for entry in itertools.islice(os.scandir(path.parent), NEAR_NAMES_SCANNED)]
    except OSError:
        return ""
    # stems, so that a shared extension does not make 'missing.png' look like 's.png'
    by_stem: dict[str, list[str]] = {}
    for name in names:
        by_stem.setdefault(os.path.splitext(name)[0], []).append(name)
    stems = difflib.get_close_matches(os.path.splitext(path.name)[0], list(by_stem), n=3, cutoff=0.7)
    close = [name for stem in stems for name in by_stem[stem]][:3]
    return f"did you mean {', '.join(close)}?" if close else ""


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Read only the header: is it an image, and how big. Raises ``InputError`` with the fix."""
    path = Path(path)
    member = webdataset.is_member(path)
    if not member and not path.exists():
        raise InputError(f"{path}: no such file", hint=_near_names(path) or "check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    try:
        source = _source(path, member)
        if (len(source.getbuffer()) if member else path.stat().st_size) == 0:
            raise InputError(f"{path}: file is empty (0 bytes)", hint="re-export or re-download it")
        limit = max_pixels()
        with Image.open(source) as im:
            info = ImageInfo(im.width, im.height, im.format or "?", im.mode)
    except Image.DecompressionBombError as e:
        raise _pillow_refuses(path, e) from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read",
                         hint="use PNG, JPEG, WebP, TIFF, BMP or GIF") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if info.width * info.height > limit:
        raise InputError(f"{path}: {info.width}x{info.height} is {info.width * info.height / 1e6:.0f}"
                         f" megapixels, over the limit of {limit / 1e6:g} (a decompression bomb?)",
                         hint="if the image is genuine, raise the limit: NSTBATCH_MAX_PIXELS=<pixels>")
    return info


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB by the rule in this module's docstring."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(im, dtype=np.float64)
        scaled = np.clip(values / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB")
    if im.mode == "F":
        values = np.clip(np.asarray(im, dtype=np.float64), 0, 1)
        return Image.fromarray((values * 255 + 0.5).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | os.PathLike, size: int | None = None) -> Image.Image:
    """Decode ``path`` to RGB, upright, with its long side resized to ``size`` if given."""
    probe_image(path)
    try:
        with Image.open(_source(Path(path), webdataset.is_member(path))) as im:
            im.seek(0)  # animated: the first frame
            im = ImageOps.exif_transpose(im)
            im.load()
            rgb = to_rgb(im)
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise _pillow_refuses(path, e) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: cannot decode image ({e})",
                         hint="the file may be truncated or corrupt") from None
    return resize_long_side(rgb, size) if size else rgb


# A label image's modes: one value a pixel (grey, palette indices, 16-bit grey).
LABEL_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I;16N", "I")


def load_labels(path: str | os.PathLike) -> np.ndarray:
    """A label image (a segmentation map: one value a pixel, each value a region; a grey or
    palette PNG, 8 or 16 bits), upright, as an integer array ``(H, W)``: the values as stored,
    never scaled (a palette image's indices, not its colours)."""
    probe_image(path)
    try:
        with Image.open(_source(Path(path), webdataset.is_member(path))) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            if im.mode not in LABEL_MODES:
                raise InputError(f"{path}: a label image holds one value a pixel; this one is {im.mode}",
                                 hint="save the segmentation map as a grey or palette PNG (its values, not colours)")
            return np.asarray(im).astype(np.int64)
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: cannot decode image ({e})", hint="the file may be truncated or corrupt") from None


def resize_long_side(im: Image.Image, size: int) -> Image.Image:
    """Scale so the long side is ``size`` px (Lanczos), keeping the aspect ratio."""
    new = long_side_size(*im.size, size)
    return im if new == im.size else im.resize(new, Image.Resampling.LANCZOS)


def fit_image(im: Image.Image, size: int, resize: str = "long", crop: str = "none") -> Image.Image:
    """The content image as the output will be: scaled (Lanczos) and cropped (see ``fitted``)."""
    scaled, box = fitted(*im.size, size, resize, crop)
    if scaled != im.size:
        im = im.resize(scaled, Image.Resampling.LANCZOS)
    return im.crop(box) if box and box != (0, 0, *scaled) else im


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise InputError(f"{path}: cannot tell the output format from {suffix or 'no extension'!r}",
                         hint=f"end the name with one of {', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def check_output_path(path: str | os.PathLike) -> Path:
    """Before any work: the format is known and the folder exists (or can be made) and is writable."""
    path = Path(path)
    output_format(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the output")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{folder}: cannot create the output folder ({e.strerror or e})",
                         hint="choose a writable location") from None
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{folder}: output folder is not writable ({e.strerror or e})",
                         hint="fix its permissions or choose another output") from None
    return path


def check_bit_depth(path: str | os.PathLike, bit_depth: int) -> None:
    """Before any work: the output's format is known and holds ``bit_depth`` bits a channel."""
    if output_format(path) not in DEEP_FORMATS and bit_depth == 16:
        raise InputError(f"{path}: bit_depth 16 needs a .png or .tif output; {Path(path).suffix} holds"
                         " 8 bits a channel", hint="name the output .png or .tif, or use bit_depth 8")


def icc_profile(path: str | os.PathLike) -> bytes | None:
    """The ICC profile embedded in an input image (from its header), or None."""
    try:
        with Image.open(_source(Path(path), webdataset.is_member(path))) as im:
            return im.info.get("icc_profile") or None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # its decoding, not its profile, is where a broken input is reported


# The Exif tags that carry an output's provenance in JPEG and WebP files (PNG: text chunks).
EXIF_DESCRIPTION, EXIF_SOFTWARE = 0x010E, 0x0131


def save_image(image: Image.Image | np.ndarray, path: str | os.PathLike,
               metadata: Mapping[str, object] | None = None, *,
               jpeg_quality: int = 95, webp_quality: int = 95, icc_profile: bytes | None = None) -> Path:
    """Save atomically in the format the extension names: ``image`` an RGB Pillow image (8 bits
    a channel), or a ``uint16`` array ``(H, W, 3)`` (16 bits; PNG and TIFF only). ``metadata``
    (parameters, versions: how the image was made) goes into PNG outputs as ``nstbatch:<key>``
    text chunks, into JPEG and WebP outputs as one JSON object in the Exif ImageDescription, and
    into TIFF outputs as that object in the ImageDescription tag (read it back with
    ``read_provenance``); ``icc_profile`` is embedded in every format. JPEG: ``jpeg_quality``
    with full-resolution colour (4:4:4); WebP: ``webp_quality``, 100 meaning lossless."""
    path = Path(path)
    fmt = output_format(path)
    deep = isinstance(image, np.ndarray)
    if deep:
        check_bit_depth(path, 16)
        if image.dtype != np.uint16 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"a 16-bit output is a uint16 (H, W, 3) array, got {image.dtype} {image.shape}")
    if fmt == "TIFF":
        write = _tiff_writer(np.asarray(image), metadata, icc_profile)
    elif deep:
        write = _png16_writer(image, metadata, icc_profile)
    else:
        options: dict = {"icc_profile": icc_profile} if icc_profile else {}
        if fmt == "PNG" and metadata:
            info = PngImagePlugin.PngInfo()
            for key, value in metadata.items():
                info.add_itxt(f"nstbatch:{key}", _text(value))
            options["pnginfo"] = info
        elif fmt == "JPEG":
            options.update(quality=jpeg_quality, subsampling=0)
        elif fmt == "WEBP":
            options.update(quality=webp_quality, lossless=webp_quality >= 100, method=4)
        if fmt in ("JPEG", "WEBP") and metadata:
            exif = Image.Exif()
            exif[EXIF_DESCRIPTION] = json.dumps({"nstbatch": dict(metadata)}, sort_keys=True)
            exif[EXIF_SOFTWARE] = "nstbatch"
            options["exif"] = exif.tobytes()

        def write(f) -> None:
            image.save(f, format=fmt, **options)
    try:
        atomic_write(path, write)
    except OSError as e:
        raise InputError(f"{path}: cannot write output ({e.strerror or e})",
                         hint="check free space and permissions") from None
    return path


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _png16_writer(array: np.ndarray, metadata: Mapping[str, object] | None, icc: bytes | None):
    """A 48-bit PNG by pypng, with the profile (iCCP) and the provenance (iTXt) chunks that
    Pillow writes for 8-bit ones."""
    import png

    height, width, _ = array.shape
    encoded = io.BytesIO()
    png.Writer(width, height, greyscale=False, bitdepth=16).write(encoded, array.reshape(height, width * 3))
    chunks = list(png.Reader(bytes=encoded.getvalue()).chunks())
    extra = [(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc))] if icc else []
    extra += [(b"iTXt", f"nstbatch:{key}".encode("latin-1") + b"\0\0\0\0\0" + _text(value).encode())
              for key, value in (metadata or {}).items()]
    chunks = chunks[:1] + extra + chunks[1:]  # after IHDR, before the image data

    def write(f) -> None:
        png.write_chunks(f, chunks)
    return write


def _tiff_writer(array: np.ndarray, metadata: Mapping[str, object] | None, icc: bytes | None):
    """A TIFF by tifffile (8 or 16 bits a channel), deflate-compressed."""
    import tifffile

    description = json.dumps({"nstbatch": dict(metadata)}, sort_keys=True) if metadata else None

    def write(f) -> None:
        encoded = io.BytesIO()  # tifffile wants a named file or a buffer, not the temp file's descriptor
        tifffile.imwrite(encoded, array, photometric="rgb", compression="zlib", iccprofile=icc,
                         description=description, software="nstbatch", metadata=None)
        f.write(encoded.getvalue())
    return write


def read_provenance(path: str | os.PathLike) -> dict:
    """What ``save_image`` stored in an output: {key: value}, from any of its formats."""
    if output_format(path) == "TIFF":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            text = tif.pages[0].description
    else:
        with Image.open(path) as im:
            if im.format == "PNG":
                return {key[len("nstbatch:"):]: _maybe_json(value) for key, value in im.text.items()
                        if key.startswith("nstbatch:")}
            text = im.getexif().get(EXIF_DESCRIPTION)
    try:
        return json.loads(text)["nstbatch"] if text else {}
    except (ValueError, KeyError, TypeError):
        return {}  # someone else's description


def _maybe_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text
