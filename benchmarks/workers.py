"""Images per hour for a 16-job manifest on the CPU: 1 worker vs 2, side by side.

    python benchmarks/workers.py [--jobs 16] [--size 128] [--steps 60]

Writes a manifest over the bundled samples into a temporary folder, runs it with
`nstbatch run --workers 1` and `--workers 2` (fresh state and a shared, pre-filled style-target
cache, so both measure the optimisation), and prints images/hour for each and the ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "samples"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for image in SAMPLES.glob("*.png"):
            shutil.copy(image, tmp / image.name)
        contents, styles = ["harbour.png", "town.png"], ["swirls.png", "mosaic.png"]
        rows = [f"{contents[i % 2]},{styles[(i // 2) % 2]},out/{{w}}/{i}.png,{args.size},{args.steps},{i}\n"
                for i in range(args.jobs)]
        env = {**os.environ, "NSTBATCH_CACHE": str(tmp / "cache")}
        rates = {}
        for workers in (1, 2):
            manifest = tmp / f"w{workers}.csv"
            manifest.write_text("content,style,output,size,steps,seed\n" + "".join(r.format(w=workers) for r in rows))
            subprocess.run([sys.executable, "-m", "nstbatch", "precompute", str(manifest), "-q"], env=env, check=True,
                           capture_output=True)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "nstbatch", "run", str(manifest), "-q", "--workers", str(workers)],
                           env=env, check=True, capture_output=True)
            seconds = time.perf_counter() - started
            rates[workers] = 3600 * args.jobs / seconds
            print(f"{workers} worker(s): {seconds:6.1f} s for {args.jobs} jobs -> {rates[workers]:7.1f} images/hour"
                  " (process start and model load included)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.size} px, {args.steps} steps;"
          f" 2 workers / 1 worker = {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
