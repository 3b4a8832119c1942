"""Quality against time: nstbatch presets vs the tutorial baseline, scored by evaluate.py.

    python benchmarks/quality.py [--size 256] [--content C --style S]

Runs the baseline for 300 steps (its time T and score), then each nstbatch candidate to its
configured steps (time, score), then the baseline again with each candidate's time as its
budget (score at equal time). One process, same machine, CPU.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from nstbatch.config import resolve_params
from nstbatch.images import load_image, to_tensor
from nstbatch.optimize import build_features, optimize

import baseline  # noqa: E402
from evaluate import Evaluator  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "samples"

CANDIDATES = {
    "seed (fp32, 500 steps)": ("seed", {}),
    "seed, 150 steps, auto precision": ("seed", {"steps": 150, "precision": "auto"}),
    "multi-scale 0.5,1 (0.7,0.3), 150 steps, auto": (
        "seed", {"steps": 150, "precision": "auto", "scales": "0.5,1", "scale_steps": "0.7,0.3"}),
    "multi-scale 0.5,1 (0.7,0.3), 300 steps, auto": (
        "seed", {"steps": 300, "precision": "auto", "scales": "0.5,1", "scale_steps": "0.7,0.3"}),
    "fast (the default)": ("fast", {}),
    "multi-scale, lr 0.05, content relu4_2, 150 steps, auto": (
        "seed", {"steps": 150, "precision": "auto", "scales": "0.5,1", "scale_steps": "0.7,0.3",
                 "lr": 0.05, "content_layers": "relu4_2"}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--content", default=SAMPLES / "harbour.png")
    ap.add_argument("--style", default=SAMPLES / "swirls.png")
    ap.add_argument("--only", nargs="*", help="names of candidates to run")
    args = ap.parse_args()
    content = to_tensor(load_image(args.content, args.size))
    style = to_tensor(load_image(args.style, args.size))
    evaluator = Evaluator(content, style)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{Path(args.content).name} x {Path(args.style).name} at {tuple(content.shape[-2:])}")
    print(f"content image scores {evaluator.score(content):.3f}")
    started = time.perf_counter()
    image, steps = baseline.run_baseline(content, style, num_steps=300)
    base_time = time.perf_counter() - started
    base_score = evaluator.score(image)
    print(f"{'baseline, 300 steps':55s} {base_time:7.1f} s  score {base_score:.3f}  ({steps} evaluations)")
    for name, (preset, overrides) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        params = resolve_params(preset, {"size": args.size, **overrides})
        features = build_features(params)
        started = time.perf_counter()
        result = optimize(content, style, params, features=features)
        seconds = time.perf_counter() - started
        score = evaluator.score(result.image)
        b_image, b_steps = baseline.run_baseline(content, style, num_steps=10_000, time_budget=seconds)
        b_score = evaluator.score(b_image)
        print(f"{name:55s} {seconds:7.1f} s  score {score:.3f}  | baseline in the same time: "
              f"{b_score:.3f} ({b_steps} evals)  | time vs baseline-300: {seconds / base_time:.2f}x")


if __name__ == "__main__":
    main()
