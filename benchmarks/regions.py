"""Regions on a real photo (issue 50): two paintings on the two parts of a photo, and a part kept
as photographed, through ``nstbatch run`` as a user writes it, against the whole picture
stylized with each painting alone.

    python benchmarks/regions.py [--out benchmarks/regions-out] [--size 512] [--preset balanced]

The photo is ``../shared/photos/astronaut.png`` (measuring only, never committed) with masks
drawn by hand as polygons and ellipses over it (``MASKS``, in the photo's pixels): the person
(hair, face, suit and helmet) and the background; the face kept. Four jobs: the Scream on the
person and the Starry Night on the background with the face kept (``masks`` + ``keep``); the
same without ``keep``; the whole picture in each painting alone. Each part is scored on
rectangles wholly inside it (``RECTANGLES``) with the yardstick (the part of the photo and a
painting, at the rectangle's size): its style figure against its own painting and against the
other, beside the whole picture's figure there; inside the kept face, the content figure and
the mean pixel difference from the photo. Seconds an image from the run's report. Writes the
masks, the outputs and ``sheet.jpg`` (photo, masks, the four outputs, and the face's edge at
4×) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT.parent / "shared" / "photos" / "astronaut.png"
PAINTINGS = {"person": ROOT / "manifests" / "images" / "the_scream.jpg",
             "background": ROOT / "manifests" / "images" / "starry_night.jpg"}
# Drawn over the 512 px photo: the person (hair and face, the suit, the helmet on the table).
MASKS = {"person": {"ellipses": [(154, 14, 302, 196)],
                    "polygons": [[(128, 166), (307, 166), (371, 275), (384, 512), (26, 512), (26, 320), (77, 256),
                                  (122, 192)],
                                 [(275, 371), (384, 335), (474, 346), (506, 422), (506, 512), (275, 512)]]},
         "face": {"ellipses": [(178, 62, 272, 184)], "polygons": []}}
# Rectangles wholly inside each part, (left, top, right, bottom) in the 512 px photo's pixels.
RECTANGLES = {"person": (60, 330, 290, 500), "background": (330, 0, 512, 240), "face": (195, 85, 255, 165)}


def draw(shapes: dict, size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    pen = ImageDraw.Draw(mask)
    for box in shapes["ellipses"]:
        pen.ellipse(box, fill=255)
    for points in shapes["polygons"]:
        pen.polygon(points, fill=255)
    return mask


def main() -> None:
    from nstbatch.engine.pixels import to_tensor
    from nstbatch.engine.yardstick import Yardstick

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "regions-out")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--preset", default="balanced")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    photo = Image.open(PHOTO).convert("RGB")
    photo.save(out / "photo.png")
    person = draw(MASKS["person"], photo.size)
    person.save(out / "person.png")
    Image.fromarray(255 - np.asarray(person)).save(out / "background.png")
    draw(MASKS["face"], photo.size).save(out / "face.png")
    styles = f"[{PAINTINGS['person']}, {PAINTINGS['background']}]"
    (out / "m.yaml").write_text(
        f"defaults: {{size: {args.size}, preset: {args.preset}}}\njobs:\n"
        f"  - {{content: photo.png, style: {styles}, masks: [person.png, background.png], keep: face.png,"
        f" output: out/kept.png}}\n"
        f"  - {{content: photo.png, style: {styles}, masks: [person.png, background.png], output: out/regions.png}}\n"
        f"  - {{content: photo.png, style: {PAINTINGS['person']}, output: out/whole-person.png}}\n"
        f"  - {{content: photo.png, style: {PAINTINGS['background']}, output: out/whole-background.png}}\n")
    subprocess.run([sys.executable, "-m", "nstbatch", "run", str(out / "m.yaml")], cwd=ROOT, check=True)
    report = [json.loads(line) for line in (out / ".nstbatch" / "m.yaml" / "report.jsonl").read_text().splitlines()]
    seconds = {Path(line["output"]).stem: line["seconds"] for line in report if line["status"] == "done"}
    outputs = {name: Image.open(out / "out" / f"{name}.png").convert("RGB")
               for name in ("kept", "regions", "whole-person", "whole-background")}
    scale = outputs["kept"].width / photo.width
    fitted = photo.resize(outputs["kept"].size, Image.Resampling.LANCZOS)

    def crop(image: Image.Image, part: str) -> Image.Image:
        return image.crop(tuple(round(v * scale) for v in RECTANGLES[part]))

    net, rows = None, {}
    for part, other in (("person", "background"), ("background", "person")):
        content = to_tensor(crop(fitted, part))
        for painting in (part, other):
            yardstick = Yardstick(content, to_tensor(Image.open(PAINTINGS[painting]).convert("RGB")),
                                  max(content.shape[-2:]), net)
            net = yardstick.net
            for name in ("kept", "regions", "whole-person", "whole-background"):
                score = yardstick(to_tensor(crop(outputs[name], part)))
                rows.setdefault(f"{part} vs {painting}", {})[name] = {"style": round(score.style, 4),
                                                                       "content": round(score.content, 4)}
    face = to_tensor(crop(fitted, "face"))
    yardstick = Yardstick(face, to_tensor(Image.open(PAINTINGS["person"]).convert("RGB")), max(face.shape[-2:]), net)
    kept = {}
    for name in ("kept", "regions"):
        made = crop(outputs[name], "face")
        kept[name] = {"content": round(yardstick(to_tensor(made)).content, 4),
                      "mean_abs_255": round(float(np.abs(np.asarray(made, np.float64)
                                                         - np.asarray(crop(fitted, "face"), np.float64)).mean()), 2)}
    results = {"size": args.size, "preset": args.preset, "seconds": seconds, "parts": rows, "face": kept}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    sheet(out, photo, outputs, scale)


def sheet(out: Path, photo: Image.Image, outputs: dict, scale: float, tile: int = 256) -> None:
    """The photo, the masks and the four outputs in a row; below, the face's edge at 4× in each."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quality import _sheet

    masks = Image.merge("RGB", [Image.open(out / "person.png"), Image.open(out / "face.png"),
                                Image.open(out / "background.png")])
    left, top = round(150 * scale), round(60 * scale)
    box = (left, top, left + round(96 * scale), top + round(96 * scale))
    first = [("photo", photo), ("masks: person, face, background", masks)] + list(outputs.items())
    second = [("face edge, photo", photo.resize(outputs["kept"].size).crop(box).resize((tile, tile)))] + [
        (f"{name}, 4x", image.crop(box).resize((tile, tile), Image.Resampling.NEAREST))
        for name, image in outputs.items() if name in ("kept", "regions")]
    _sheet([first, second], tile).save(out / "sheet.jpg", quality=88)


if __name__ == "__main__":
    main()
