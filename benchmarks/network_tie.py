"""A network trained with the temporal cost (issue 48, item 4), beside one trained on stills:
the same photos, painting, crops, steps and seed as the still network ``benchmarks/networks.py``
trained (read from its card), with ``temporal_weight`` set, so that each crop has a moved, noisy
twin tied to its output (``engine.transform.twin_crops``). Their flicker is then measured side by
side with per-frame and video optimisation by ``benchmarks/flicker.py --network``.

    python benchmarks/network_tie.py [--out benchmarks/networks-out] [--still nets/network.onnx]
        [--tie 1000] [--name tied]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from nstbatch.config import resolve_params
    from nstbatch.jobs.train import TrainSpec, train_network

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "networks-out")
    ap.add_argument("--still", default="nets/network.onnx", help="the still network, under --out")
    ap.add_argument("--tie", type=float, default=1000.0, help="temporal_weight of the training")
    ap.add_argument("--name", default="tied")
    args = ap.parse_args()
    out = args.out.resolve()
    card = json.loads((out / args.still).with_suffix(".json").read_text())
    training, criterion = card["training"], card["criterion"]
    params = resolve_params(criterion["preset"], {"size": "512", "temporal_weight": str(args.tie)})
    photos = tuple(sorted((out / "photos").glob("*.png")))
    paintings = tuple(Path(style["path"]) for style in card["styles"])
    spec = TrainSpec(photos, paintings, out / "nets" / f"{args.name}.onnx", params, size=training["size"],
                     steps=training["steps"], batch=training["batch"], lr=training["lr"], seed=training["seed"],
                     score_size=512)
    started = time.monotonic()
    result = train_network(spec, out / "state", notice=print,
                           on_step=lambda p: print(f"step {p.step}/{p.steps} cost {p.costs.total:.4g}"
                                                   f" {p.images_per_second:.2f} crops/s", flush=True))
    print(json.dumps({"network": str(result.network), "steps": result.step, "tie": args.tie,
                      "seconds": round(time.monotonic() - started, 1), "held_out": result.curve}))


if __name__ == "__main__":
    main()
