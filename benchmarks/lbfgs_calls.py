"""L-BFGS's evaluations per iteration and time per evaluation, ``clip_every`` 1 against 5, beside
Adam's time per step, on one pair at one scale, in one process.

    python benchmarks/lbfgs_calls.py [--size 512] [--steps 10]

An evaluation is one forward pass of the VGG-19 (with its backward where the optimizer asks for
a gradient), counted by a hook on the network's first layer; the counts include those a run
makes outside its steps (the content's own style cost for ``style_cap``, L-BFGS's normalisation,
the final costs: two or three). Each variant runs two untimed steps first (kernel preparation).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import torch

from nstbatch.config import resolve_params
from nstbatch.io.images import load_image
from nstbatch.engine.optimize import optimize
from nstbatch.engine.vgg import build_features
from nstbatch.engine.pixels import to_tensor
from nstbatch.styles.store import StyleTargetStore

IMAGES = Path(__file__).resolve().parent.parent / "manifests" / "images"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    content = to_tensor(load_image(IMAGES / "hoovertowernight.jpg", args.size))
    style = to_tensor(load_image(IMAGES / "the_scream.jpg", args.size))
    one_scale = {"size": args.size, "steps": args.steps, "scales": "1", "scale_steps": "1"}
    variants = {
        "adam (balanced)": resolve_params("balanced", one_scale),
        "lbfgs, clip_every 1": resolve_params("fast", {**one_scale, "clip_every": 1}),
        "lbfgs, clip_every 5": resolve_params("fast", {**one_scale, "clip_every": 5}),
    }
    features = build_features(variants["adam (balanced)"])
    store = StyleTargetStore(backend="torch")
    calls = []
    features.features[0].register_forward_hook(lambda *_: calls.append(1))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {tuple(content.shape[-2:])} px, {args.steps} steps")
    print("| variant | evaluations | per step (all included) | s | s per evaluation |")
    print("| --- | --- | --- | --- | --- |")
    for name, params in variants.items():
        target, _ = store.for_images([(style, 1.0)], params, content)
        optimize(content, target, dataclasses.replace(params, steps=2), features=features)  # untimed
        calls.clear()
        started = time.perf_counter()
        optimize(content, target, params, features=features)
        seconds = time.perf_counter() - started
        n = len(calls)
        print(f"| {name} | {n} | {n / args.steps:.2f} | {seconds:.2f} | {seconds / n:.3f} |", flush=True)


if __name__ == "__main__":
    main()
