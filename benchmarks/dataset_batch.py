"""Images per hour on a dataset with random styles: one image at a time vs mixed-style batches.

    python benchmarks/dataset_batch.py [--size 128] [--variants 4] [--batches 1 4] [--device cpu]

Draws the small tree of ``manifests/make_samples.py --tree`` (4 photos, 4 paintings), makes a
dataset entry with ``variants`` styles per photo drawn at random from the pool and
``crop: center`` (one output shape, so any jobs can share a pass), fills the style-target
cache once, then runs the same entry with each ``--batch`` in a process of its own (fresh
outputs and state), side by side, and prints each run's images per hour from its summary.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="balanced")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "manifests" / "make_samples.py")
    samples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(samples)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    nstbatch = [sys.executable, "-m", "nstbatch"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, device {args.device},"
          f" {args.preset} preset at {args.size} px")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        samples.draw_tree(folder, side=2 * args.size)
        env["NSTBATCH_CACHE"] = str(folder / "cache")
        manifest = folder / "m.yaml"
        manifest.write_text(f"defaults: {{preset: {args.preset}, size: {args.size}, crop: center}}\n"
                            f"jobs:\n  - dataset: photos/\n    style_pool: paintings/\n"
                            f"    variants: {args.variants}\n    output: out/{{content_relpath}}_{{variant}}.jpg\n")
        subprocess.run(nstbatch + ["precompute", str(manifest), "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        print("| batch | jobs | batch sizes run | wall time | images/hour (run's wall time) | vs batch 1 |")
        print("| --- | --- | --- | --- | --- | --- |")
        first = None
        for batch in args.batches:
            state = folder / f"state-b{batch}"
            started = time.monotonic()
            subprocess.run(nstbatch + ["run", str(manifest), "--batch", str(batch), "--devices", args.device,
                                       "--state-dir", str(state), "--force", "-q"], check=True, env=env)
            wall = time.monotonic() - started
            summary = json.loads((state / "summary.json").read_text())
            sizes = sorted({json.loads(p.read_text())["batch"] for p in (state / "done").glob("*.json")})
            # images per hour of the run's wall time (the summary's own images_per_hour is of job
            # time since issue 35, which leaves start-up out; RESULTS' figures are of wall time)
            rate = 3600 * summary["done"] / summary["seconds"]
            first = first or rate
            print(f"| {batch} | {summary['done']} | {', '.join(map(str, sizes))} | {wall:.0f} s |"
                  f" {rate:.0f} | {rate / first:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
