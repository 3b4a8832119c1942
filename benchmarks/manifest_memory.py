"""Peak memory of nstbatch on a very large CSV manifest (1,000,000 rows by default).

    python benchmarks/manifest_memory.py [--rows 1000000 100000]

Writes a manifest whose rows share a few images (as a dataset-augmentation manifest does), then
runs `nstbatch validate` and `nstbatch run --dry-run` on it, each in a process of its own, and
reports each one's wall time and peak resident memory (from wait4's rusage).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def measure(argv: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB, exit code) of one command."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    return time.monotonic() - started, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    samples = ROOT / "manifests" / "samples"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print("| rows | manifest size | command | time | peak memory |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in ("harbour", "town", "swirls", "mosaic"):
            Image.open(samples / f"{name}.png").save(folder / f"{name}.png")
        for rows in args.rows:
            manifest = folder / f"m{rows}.csv"
            with open(manifest, "w") as f:
                f.write("content,style,output,size,steps\n")
                for i in range(rows):
                    content = ("harbour", "town")[i % 2]
                    style = ("swirls", "mosaic")[(i // 2) % 2]
                    f.write(f"{content}.png,{style}.png,out/{i // 1000}/{i}.png,{128 + i % 3 * 32},{50 + i % 5}\n")
            size = manifest.stat().st_size / 2**20
            for label, argv in (("validate", ["validate", str(manifest)]),
                                ("run --dry-run", ["run", str(manifest), "--dry-run"])):
                seconds, peak, code = measure([sys.executable, "-m", "nstbatch", *argv])
                print(f"| {rows:,} | {size:.0f} MiB | `nstbatch {label}` (exit {code}) | {seconds:.1f} s | {peak:.0f} MiB |",
                      flush=True)


if __name__ == "__main__":
    main()
