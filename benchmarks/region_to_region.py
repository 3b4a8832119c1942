"""Region to region on the repository's own pictures (issue 50; docs/regions.md's picture): the
Hoover Tower at night (``manifests/images/hoovertowernight.jpg``) under the Starry Night, the
whole picture from the whole painting, against the photo's sky from the painting's sky and its
buildings from the painting's village (``style_masks``), through ``nstbatch run`` as a user
writes it.

    python benchmarks/region_to_region.py [--out benchmarks/region-out] [--size 384] [--preset balanced]

The masks are drawn by rule, not by hand: the photo's sky is where blue leads red by 25 levels
and more (its night sky; the lit buildings and the dark roofs do not), closed and blurred a
little; the painting's sky is its upper 58 % less the cypress (its large dark shape), its village its
lower 28 %. Both pairs are saved beside the outputs (``--out``), with ``sheet.png``: the photo,
its sky mask, the whole-picture job, the region-to-region job. The yardstick's style figure of
the buildings (a rectangle wholly inside them) against the painting's village and against its
sky, for each job, is printed: region to region should sit nearer the village.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "manifests" / "images" / "hoovertowernight.jpg"
PAINTING = ROOT / "manifests" / "images" / "starry_night.jpg"
BUILDINGS = (0.05, 0.62, 0.60, 0.97)  # a rectangle inside the arcade, as shares of the width and height


def photo_sky(photo: Image.Image) -> np.ndarray:
    rgb = np.asarray(photo.convert("RGB"), dtype=np.int32)
    sky = (rgb[..., 2] - rgb[..., 0] > 25).astype(np.uint8) * 255
    return np.asarray(Image.fromarray(sky).filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(5))
                      .filter(ImageFilter.GaussianBlur(1.5)))


def painting_parts(painting: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(painting.convert("RGB"), dtype=np.int32)
    h = rgb.shape[0]
    rows = np.arange(h)[:, None]
    dark = Image.fromarray(((rgb.sum(-1) < 200) & (rgb[..., 2] - rgb[..., 0] < 40)).astype(np.uint8) * 255)
    cypress = np.asarray(dark.filter(ImageFilter.MinFilter(5)).filter(ImageFilter.MaxFilter(11))) > 0  # the big shape
    sky = ((rows < 0.58 * h) & ~cypress).astype(np.uint8) * 255
    village = np.broadcast_to(rows >= 0.72 * h, rgb.shape[:2]).astype(np.uint8) * 255
    return sky, village


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=ROOT / "benchmarks" / "region-out", type=Path)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--preset", default="balanced")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    photo, painting = Image.open(PHOTO), Image.open(PAINTING)
    sky = photo_sky(photo)
    Image.fromarray(sky).save(out / "photo_sky.png")
    Image.fromarray(255 - sky).save(out / "photo_buildings.png")
    for name, mask in zip(("painting_sky", "painting_village"), painting_parts(painting)):
        Image.fromarray(mask).save(out / f"{name}.png")
    (out / "m.yaml").write_text(
        f"defaults: {{preset: {args.preset}, size: {args.size}}}\n"
        "jobs:\n"
        f"  - {{content: {PHOTO}, style: {PAINTING}, output: whole.png}}\n"
        f"  - {{content: {PHOTO}, style: [{PAINTING}, {PAINTING}], masks: [photo_sky.png, photo_buildings.png],"
        " style_masks: [painting_sky.png, painting_village.png], output: parts.png}\n")
    subprocess.run([sys.executable, "-m", "nstbatch", "run", str(out / "m.yaml"), "-q"], check=True)
    _score(out)
    _sheet(out, photo, sky)


def _score(out: Path) -> None:
    """The buildings' style figure against the painting's village and its sky, for each job."""
    import torch

    from nstbatch.engine.pixels import to_tensor
    from nstbatch.engine.yardstick import Yardstick

    painting = Image.open(PAINTING).convert("RGB")
    w, h = painting.size
    parts = {"village": painting.crop((0, int(0.74 * h), w, h)), "sky": painting.crop((int(0.35 * w), 0, w, h // 2))}
    photo, net = Image.open(PHOTO).convert("RGB"), None
    for job in ("whole", "parts"):
        made = Image.open(out / f"{job}.png").convert("RGB")
        box = tuple(int(share * side) for share, side in zip(BUILDINGS, made.size * 2))
        inside, content = to_tensor(made.crop(box)), to_tensor(photo.resize(made.size).crop(box))
        figures = {}
        for name, part in parts.items():
            stick = Yardstick(content, to_tensor(part), size=max(inside.shape[-2:]), net=net)
            net = stick.net
            with torch.no_grad():
                figures[name] = stick(inside).style
        print(f"{job}: the buildings' style figure against the painting's village {figures['village']:.3f},"
              f" against its sky {figures['sky']:.3f}")


def _sheet(out: Path, photo: Image.Image, sky: np.ndarray) -> None:
    tiles = [photo.convert("RGB"), Image.fromarray(sky).convert("RGB")] + [
        Image.open(out / f"{job}.png").convert("RGB") for job in ("whole", "parts")]
    w, h = tiles[2].size
    sheet = Image.new("RGB", (2 * w, 2 * h), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile.resize((w, h), Image.Resampling.LANCZOS), ((k % 2) * w, (k // 2) * h))
    sheet.save(out / "sheet.png")
    print(f"wrote {out / 'sheet.png'}")


if __name__ == "__main__":
    main()
