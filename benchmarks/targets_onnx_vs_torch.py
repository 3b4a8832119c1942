"""Style-target precompute: ONNX Runtime (CPU) vs eager PyTorch, side by side in one run.

    python benchmarks/targets_onnx_vs_torch.py [STYLE] [--size 512] [--repeats 7]

Both compute the seed preset's five Gram targets of the same image with the same weights;
runs alternate (torch, onnx, torch, onnx, …) after one warm-up each, and the medians are
compared. Prints the machine, the thread counts and the ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from nstbatch.config import resolve_params
from nstbatch.io.images import load_image
from nstbatch.engine.pixels import to_tensor
from nstbatch.styles.onnx_backend import OnnxTargets, export_targets_model, relative_error
from nstbatch.engine.targets import torch_style_targets
from nstbatch.engine.vgg import VGGFeatures
from nstbatch.engine.weights import load_weights

SAMPLE = Path(__file__).resolve().parent.parent / "manifests" / "samples" / "swirls.png"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("style", nargs="?", default=SAMPLE)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    params = resolve_params("seed", {"size": args.size})
    weights = load_weights(params.weights)
    image = to_tensor(load_image(args.style, params.size))
    features = VGGFeatures(weights, params.style_layers, params.pooling)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "targets.onnx"
        export_targets_model(weights, params.style_layers, params.pooling, model)
        session = OnnxTargets.open(model, params.style_layers, "cpu")
        runs = {"torch": lambda: torch_style_targets(features, image, params.style_layers),
                "onnx": lambda: session(image)}
        results = {name: run() for name, run in runs.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
    error = max(relative_error(results["onnx"].tensors()[n], results["torch"].tensors()[n]) for n in params.style_layers)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}")
    print(f"style {Path(args.style).name} at {tuple(image.shape[-2:])}, {args.repeats} runs each after a warm-up")
    for name in runs:
        print(f"  {name:6s} median {medians[name] * 1000:8.1f} ms  (min {min(times[name]) * 1000:.1f})")
    print(f"  torch / onnx = {medians['torch'] / medians['onnx']:.2f}x   (max relative error {error:.1e})")


if __name__ == "__main__":
    main()
