"""Step time: nstbatch vs the PyTorch tutorial's loop (benchmarks/baseline.py), side by side.

    python benchmarks/step_time.py [--sizes 256 512] [--steps 12]

One step is one forward and backward pass through VGG-19 plus the update (for L-BFGS, one
closure evaluation, as the tutorial counts). Each variant runs ``--steps`` steps on the same
content/style pair; the mean step time after two warm-up steps is reported, and the ratio
to the baseline. Variants run alternately, in one process.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from nstbatch.config import DEFAULT_PRESET, resolve_params
from nstbatch.engine.devices import autocast_dtype
from nstbatch.io.images import load_image
from nstbatch.engine.pixels import to_tensor
from nstbatch.engine.optimize import optimize
from nstbatch.engine.vgg import build_features
from nstbatch.styles.store import StyleTargetStore

import baseline  # noqa: E402  (benchmarks/ is the script's folder)

SAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "samples"


def intervals(stamps: list[float]) -> float:
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][2:]  # drop the warm-up steps
    return statistics.mean(gaps)  # mean: a multi-scale schedule mixes cheap and dear steps


def time_nstbatch(content, style, params) -> float:
    stamps: list[float] = []
    features = build_features(params)
    target, _ = StyleTargetStore(backend="torch").for_images([(style, 1.0)], params, content)
    optimize(content, target, params, features=features, on_step=lambda p: stamps.append(time.perf_counter()))
    return intervals(stamps)


def time_baseline(content, style, steps) -> float:
    stamps: list[float] = []
    baseline.run_baseline(content, style, num_steps=steps, on_step=lambda n: stamps.append(time.perf_counter()))
    return intervals(stamps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); auto precision on this CPU: "
          f"{autocast_dtype('auto', torch.device('cpu'))}")
    for size in args.sizes:
        content = to_tensor(load_image(SAMPLES / "harbour.png", size))
        style = to_tensor(load_image(SAMPLES / "swirls.png", size))
        variants = {
            "baseline (tutorial: L-BFGS, conv1-5, fp32 NCHW)": lambda: time_baseline(content, style, args.steps),
            "nstbatch seed (Adam, to relu5_4, fp32)": lambda: time_nstbatch(
                content, style, resolve_params("seed", {"size": size, "steps": args.steps})),
            "nstbatch seed, precision auto": lambda: time_nstbatch(
                content, style, resolve_params("seed", {"size": size, "steps": args.steps, "precision": "auto"})),
            f"nstbatch {DEFAULT_PRESET} (the default: bf16 auto, 0.5/1 scales)": lambda: time_nstbatch(
                content, style, resolve_params(DEFAULT_PRESET, {"size": size, "steps": args.steps})),
        }
        times = {name: run() for name, run in variants.items()}
        base = times[next(iter(times))]
        print(f"size {size} ({tuple(content.shape[-2:])}):")
        for name, seconds in times.items():
            print(f"  {name:52s} {seconds * 1000:8.1f} ms/step   {seconds / base:5.2f}x baseline")


if __name__ == "__main__":
    main()
