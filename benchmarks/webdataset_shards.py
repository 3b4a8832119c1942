"""WebDataset shards: planning 100 input shards of 1,000 small images each, and what packing
an output shard costs beside writing the same samples into a tree.

    python benchmarks/webdataset_shards.py [--shards 100] [--per-shard 1000] [--keep DIR]

Builds ``--shards`` tar shards of ``--per-shard`` samples (a 64x48 PNG, distinct within a
shard, and a ``.cls`` member each), a four-painting pool and a YAML entry (shards in, shards
out, ``copy: [cls]``),
then times each command in a process of its own with its peak resident memory (wait4):
- ``nstbatch plan M --export plan.csv``: every shard's headers scanned, every image member's
  header probed, every job resolved and written;
- ``nstbatch run M --dry-run``: the same plus the done check, which hashes every member.

Packing: for one shard's worth of stylized samples (the PNGs, a provenance ``.json`` and the
``.cls`` each), the time to write them as files into a tree the way outputs are written
(``atomic_write``: a temp file, fsync, rename), against the extra time of the shard path:
the same staged files, then ``webdataset.pack`` (one tar, written atomically) and the staged
files removed. Run side by side in one process, ``--repeat`` times, medians.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifest_memory import measure  # noqa: E402 - one way to measure a command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from nstbatch.io import webdataset  # noqa: E402
from nstbatch.jobs.outputs import remove_staged  # noqa: E402
from nstbatch.fs import atomic_write  # noqa: E402

MANIFEST = """\
output_dir: stylized
defaults: {{size: 224, crop: center, preset: fast}}
jobs:
  - dataset: "wds/train-{{000000..{last:06d}}}.tar"
    style_pool: paintings/
    seed: 1
    output: "{{shard_stem}}.tar"
    format: jpg
    copy: [cls]
"""


def small_pngs(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.open(ROOT / "manifests" / "samples" / "harbour.png").convert("RGB").resize((64, 48)))
    out = []
    for _ in range(count):
        noisy = np.clip(base.astype(int) + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def build(folder: Path, count: int, per_shard: int) -> float:
    started = time.monotonic()
    images = small_pngs(per_shard)  # each shard holds the same 1,000 images under its own keys
    (folder / "wds").mkdir(parents=True)
    for s in range(count):
        with tarfile.open(folder / "wds" / f"train-{s:06d}.tar", "w") as tar:
            for k, data in enumerate(images):
                for ext, payload in (("png", data), ("cls", str(k % 1000).encode())):
                    info = tarfile.TarInfo(f"s{s:06d}_{k:06d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    (folder / "paintings").mkdir()
    for name in ("swirls", "mosaic", "harbour", "town"):
        Image.open(ROOT / "manifests" / "samples" / f"{name}.png").save(folder / "paintings" / f"{name}.png")
    (folder / "m.yaml").write_text(MANIFEST.format(last=count - 1))
    return time.monotonic() - started


def _samples(per_shard: int) -> list[tuple[str, bytes]]:
    """One shard's output members: a 224x168 JPEG-sized payload, a .json and a .cls per sample."""
    image = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (168, 224, 3), dtype=np.uint8)).save(image, "JPEG")
    members = []
    for k in range(per_shard):
        members += [(f"s_{k:06d}.jpg", image.getvalue()), (f"s_{k:06d}.json", b'{"style": "x"}' * 8),
                    (f"s_{k:06d}.cls", b"7")]
    return members


def packing(folder: Path, per_shard: int, repeat: int) -> tuple[float, float]:
    """(median seconds to write one shard's samples into a tree, median extra seconds to pack
    the staged samples into a shard and remove them)."""
    members = _samples(per_shard)
    tree_times, pack_times = [], []
    for r in range(repeat):
        tree = folder / f"tree-{r}"
        started = time.perf_counter()
        for name, data in members:
            path = tree / name
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f, data=data: f.write(data))
        tree_times.append(time.perf_counter() - started)
        shard = folder / f"out-{r}.tar"
        staged = [webdataset.staged(shard / name) for name, _ in members]
        for path, (_, data) in zip(staged, members):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f, data=data: f.write(data))
        started = time.perf_counter()
        webdataset.pack(shard, [webdataset.Entry(name, path) for (name, _), path in zip(members, staged)])
        remove_staged(shard, staged)
        pack_times.append(time.perf_counter() - started)
    return statistics.median(tree_times), statistics.median(pack_times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the shards here instead of a temp folder")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        if not (folder / "m.yaml").exists():
            folder.mkdir(parents=True, exist_ok=True)
            seconds = build(folder, args.shards, args.per_shard)
            size = sum(p.stat().st_size for p in (folder / "wds").glob("*.tar")) / 2**20
            print(f"built {args.shards} shards x {args.per_shard} samples ({size:.0f} MiB) in {seconds:.0f} s", flush=True)
        print("| samples | command | time | peak memory |")
        print("| --- | --- | --- | --- |")
        manifest = str(folder / "m.yaml")
        samples = args.shards * args.per_shard
        for label, argv in (("`nstbatch plan --export plan.csv`", ["plan", manifest, "--export", str(folder / "plan.csv")]),
                            ("`nstbatch run --dry-run`", ["run", manifest, "--dry-run"])):
            seconds, peak, code = measure([sys.executable, "-m", "nstbatch", *argv])
            print(f"| {samples:,} | {label} (exit {code}) | {seconds:.1f} s | {peak:.0f} MiB |", flush=True)
        tree, pack = packing(folder, args.per_shard, args.repeat)
        print(f"\none shard's {args.per_shard} samples (3 members each): into a tree {tree:.2f} s;"
              f" packing the staged samples into a shard {pack:.2f} s more ({pack / tree:.2f}x the tree's time,"
              f" {1000 * pack / args.per_shard:.2f} ms per sample)")


if __name__ == "__main__":
    main()
