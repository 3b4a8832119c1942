"""Check an exported targets model against PyTorch at the sizes you will run at.

    python export/check_parity.py [--preset seed] [--size 512 --size 1024x768] [--providers cpu]

(``nstbatch export`` writes the checked model itself and ``nstbatch precompute MANIFEST`` fills
the style-target cache ahead of a cluster run; this script checks other sizes too.)

Exports the model for the preset's weights, style layers and pooling into a temporary folder
(the export itself already checks two small sizes), then compares ONNX Runtime with PyTorch
on random images of each --size and prints the worst relative error per size. Exit 1 if any
exceeds --tolerance.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from nstbatch.config import resolve_params
from nstbatch.styles.onnx_backend import OnnxTargets, export_targets_model, relative_error
from nstbatch.engine.targets import torch_style_targets
from nstbatch.engine.vgg import VGGFeatures
from nstbatch.engine.weights import load_weights


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(h or w), int(w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=None)
    ap.add_argument("--size", action="append", default=None, help="WIDTH or WIDTHxHEIGHT; repeatable")
    ap.add_argument("--providers", default="cpu")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args(argv)
    params = resolve_params(args.preset)
    weights = load_weights(params.weights)
    features = VGGFeatures(weights, params.style_layers, params.pooling)
    worst_all = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "targets.onnx"
        export_targets_model(weights, params.style_layers, params.pooling, model)
        gpu = args.providers != "cpu" and torch.cuda.is_available()
        session = OnnxTargets.open(model, params.style_layers, args.providers, device="cuda:0" if gpu else "cpu")
        for size in args.size or ["512", "333x517"]:
            height, width = parse_size(size)
            image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
            expected = torch_style_targets(features, image, params.style_layers).tensors()
            got = session(image.cuda() if session.provider != "CPUExecutionProvider" else image).tensors()
            worst = max(relative_error(got[n].cpu(), expected[n]) for n in expected)
            worst_all = max(worst_all, worst)
            print(f"{width}x{height}: worst relative error {worst:.2e} ({session.provider})")
    return 0 if worst_all < args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
