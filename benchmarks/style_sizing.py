"""Which size a style image is read at when the output's long side is not ``size``
(``resize: short``), measured on real pairs with the default preset (issue 35):

- A: the style's long side from ``size`` (what ``run`` did before issue 35);
- B: from the output's actual long side (what ``stylize`` did, and every door does now).

Both take their targets through the same code (PyTorch here, for both), everything else equal;
each output is scored on the two-axis yardstick (``nstbatch/engine/yardstick.py``) and saved for
looking at. One JSON line per pair and rule on stdout.

    python benchmarks/style_sizing.py [--size 512] [--out benchmarks/quality-out/sizing]
        [CONTENT=STYLE ...]

Default pairs: the repository's photo and paintings, and ../shared/tuning where it exists
(measuring only, never committed).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nstbatch.config import resolve_params
from nstbatch.engine.color import prepare_style
from nstbatch.engine.optimize import optimize
from nstbatch.engine.vgg import build_features
from nstbatch.engine.pixels import to_pil, to_tensor
from nstbatch.engine.targets import blend_targets, torch_style_targets
from nstbatch.engine.vgg import VGGFeatures
from nstbatch.engine.weights import load_weights
from nstbatch.engine.yardstick import Yardstick
from nstbatch.io.images import fit_image, load_image

ROOT = Path(__file__).resolve().parent.parent
IMAGES, TUNING = ROOT / "manifests/images", ROOT.parent / "shared/tuning"
PAIRS = [(TUNING / "taj_mahal.jpg", TUNING / "hokusai_great_wave.jpg"),
         (TUNING / "taj_mahal.jpg", TUNING / "kandinsky_composition_vii.jpg"),
         (IMAGES / "hoovertowernight.jpg", IMAGES / "starry_night.jpg"),
         (IMAGES / "hoovertowernight.jpg", IMAGES / "the_scream.jpg"),
         (IMAGES / "shipwreck.jpg", IMAGES / "starry_night.jpg"),
         (IMAGES / "the_scream.jpg", IMAGES / "starry_night.jpg")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", nargs="*", metavar="CONTENT=STYLE")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", default=ROOT / "benchmarks/quality-out/sizing")
    args = ap.parse_args()
    pairs = [tuple(map(Path, p.split("=", 1))) for p in args.pairs] or [p for p in PAIRS if p[0].is_file()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = resolve_params("balanced", {"size": args.size, "resize": "short"})
    features = build_features(params)
    style_net = VGGFeatures(load_weights(params.weights), params.style_layers, params.pooling)
    yardstick_net = None
    for content_path, style_path in pairs:
        fitted = fit_image(load_image(content_path), *params.geometry)
        content = to_tensor(fitted)
        yardstick = Yardstick(to_tensor(load_image(content_path, 512)), to_tensor(load_image(style_path, 512)), 512,
                              yardstick_net)
        yardstick_net = yardstick.net
        for rule, side in (("A size", params.style_side()), ("B output", params.style_side(max(fitted.size)))):
            style = prepare_style(to_tensor(load_image(style_path, side)), params, content)
            targets = blend_targets([(torch_style_targets(style_net, style, params.style_layers), 1.0)],
                                    params.feature_scale)
            started = time.perf_counter()
            image = optimize(content, targets, params, features=features).image
            seconds = time.perf_counter() - started
            score = yardstick(image)
            to_pil(image).save(out / f"{content_path.stem}_{style_path.stem}_{rule[0]}.png")
            print(json.dumps({"pair": f"{content_path.stem}-{style_path.stem}", "candidate": rule, "style_side": side,
                              "output": list(fitted.size), "seconds": round(seconds, 1), "style": round(score.style, 4),
                              "content": round(score.content, 4),
                              "layers": {k: round(v, 4) for k, v in score.style_layers.items()}}), flush=True)


if __name__ == "__main__":
    main()
