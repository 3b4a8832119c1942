"""Planning a dataset of 1,000,000 images: time and peak memory of the commands that read the
whole tree before any GPU time is spent.

    python benchmarks/dataset_plan.py [--files 1000000] [--keep DIR]

Builds a synthetic ImageFolder tree (1,000 class folders of 1,000 hard links to one small PNG
each: the tree costs inodes, not disk) and a four-painting pool, with a YAML dataset entry
(``variants: 1``, ``crop: center``), then runs each command in a process of its own and
reports its wall time and peak resident memory (wait4's rusage):
- ``nstbatch plan M --export plan.csv``: walk, header probes, every job resolved and written;
- ``nstbatch run M --dry-run``: the same plus the done check, which hashes every input;
- the same again once a run has recorded the inputs' digests in the state directory
  (``hashes.jsonl``, written here by the run's own planning step): a restart stats them.

``--photo`` makes the linked file a noisy camera-sized JPEG (2048x1536, about 3 MB) instead
of a small PNG, so the hashing reads what real photos would cost (from the page cache here).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifest_memory import measure  # noqa: E402 - one way to measure a command

ROOT = Path(__file__).resolve().parent.parent

MANIFEST = """\
output_dir: stylized
defaults: {size: 224, crop: center, preset: fast}
jobs:
  - dataset: photos/
    style_pool: paintings/
    seed: 1
    output: "{content_reldir}/{content_stem}.jpg"
"""


def build(folder: Path, files: int, per_folder: int = 1000, photo: bool = False) -> float:
    """The tree under ``folder``; seconds it took."""
    started = time.monotonic()
    seed = folder / ("seed.jpg" if photo else "seed.png")
    if photo:
        noise = np.random.default_rng(0).integers(0, 256, (1536, 2048, 3), dtype=np.uint8)
        Image.fromarray(noise, "RGB").save(seed, quality=90)
    else:
        Image.open(ROOT / "manifests" / "samples" / "harbour.png").resize((64, 48)).save(seed)
    data = seed.read_bytes()
    for index in range(files):
        path = folder / "photos" / f"n{index // per_folder:08d}" / f"img_{index:08d}.JPEG"
        if index % per_folder == 0:  # a file per folder, linked (file systems cap links per inode)
            path.parent.mkdir(parents=True)
            path.write_bytes(data)
            first = path
        else:
            os.link(first, path)
    (folder / "paintings").mkdir()
    for name in ("swirls", "mosaic", "harbour", "town"):
        Image.open(ROOT / "manifests" / "samples" / f"{name}.png").save(folder / "paintings" / f"{name}.png")
    (folder / "m.yaml").write_text(MANIFEST)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the tree here instead of a temp folder")
    parser.add_argument("--photo", action="store_true", help="link a 3 MB camera-sized JPEG, not a small PNG")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        if not (folder / "m.yaml").exists():
            folder.mkdir(parents=True, exist_ok=True)
            print(f"built {args.files:,} files in {build(folder, args.files, photo=args.photo):.0f} s",
                  f"each {next((folder / 'photos').rglob('*.JPEG')).stat().st_size / 1e6:.1f} MB", flush=True)
        print("| files | command | time | peak memory |")
        print("| --- | --- | --- | --- |")
        manifest = str(folder / "m.yaml")
        remember = ("from pathlib import Path; from nstbatch.jobs.ledger import StateDir, default_state_dir;"
                    f" from nstbatch.jobs.plan import plan_run; m = Path({manifest!r});"
                    " s = StateDir(default_state_dir(m)); plan_run(m, s); s.save_hashes()")
        for label, argv in (("`nstbatch plan --export plan.csv`", ["-m", "nstbatch", "plan", manifest, "--export",
                                                         str(folder / "plan.csv")]),
                            ("`nstbatch run --dry-run`", ["-m", "nstbatch", "run", manifest, "--dry-run"]),
                            ("(a run's planning, recording the digests)", ["-c", remember]),
                            ("`nstbatch run --dry-run`, digests recorded", ["-m", "nstbatch", "run", manifest, "--dry-run"])):
            seconds, peak, code = measure([sys.executable, *argv])
            print(f"| {args.files:,} | {label} (exit {code}) | {seconds:.1f} s | {peak:.0f} MiB |",
                  flush=True)


if __name__ == "__main__":
    main()
