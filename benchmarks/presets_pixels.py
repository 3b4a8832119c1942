"""Does a change keep every preset's picture? Runs ``nstbatch stylize`` with each preset (and
``balanced`` and ``fast`` in bf16) at 96 px, 12 steps, once with the code of this checkout and
once with the code of another (``--before``: a clone at the commit to compare with), and says
for each whether the two PNGs are equal to the pixel.

    git clone -q . /tmp/before && git -C /tmp/before checkout -q REV
    python benchmarks/presets_pixels.py --before /tmp/before [--out /tmp/presets]

Both runs use one style-target cache (a fresh one under ``--out``), so only the code differs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CASES = {**{preset: ["--preset", preset] for preset in ("seed", "fast", "balanced", "quality", "gatys", "video")},
         "balanced-bf16": ["--preset", "balanced", "--precision", "bf16"],
         "fast-bf16": ["--preset", "fast", "--precision", "bf16"]}


def run(code: Path, out: Path, cache: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, flags in CASES.items():
        subprocess.run([sys.executable, "-m", "nstbatch", "stylize", str(ROOT / "manifests/samples/town.png"),
                        str(ROOT / "manifests/images/starry_night.jpg"), "-o", str(out / f"{name}.png"),
                        "--size", "96", "--steps", "12", "-q", *flags], check=True,
                       env={**os.environ, "PYTHONPATH": str(code), "NSTBATCH_CACHE": str(cache)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="a checkout of the code to compare with")
    ap.add_argument("--out", type=Path, default=Path("/tmp/presets-pixels"))
    args = ap.parse_args()
    run(args.before, args.out / "before", args.out / "cache")
    run(ROOT, args.out / "after", args.out / "cache")
    print("| case | the two pictures |\n| --- | --- |")
    for name in CASES:
        a, b = (np.asarray(Image.open(args.out / side / f"{name}.png")) for side in ("before", "after"))
        same = a.shape == b.shape and bool((a == b).all())
        print(f"| {name} | {'equal to the pixel' if same else f'differ: at most {np.abs(a.astype(int) - b).max()} levels'} |")


if __name__ == "__main__":
    main()
