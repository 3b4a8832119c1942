"""Prints: peak memory and time of a step against size, tiled and untiled, on this machine.

    python benchmarks/print_tiles.py [--runs 1024:off 1024:512 2048:off 2048:1024 4096:1024]
                                     [--steps 3] [--preset balanced] [--out benchmarks/print-tiles.jsonl]

Each run is ``SIZE:TILE`` (TILE a side in px, or off) in a fresh process: the preset (default:
the default) at one scale (the full-size stage a print chain ends in), ``steps`` steps (L-BFGS
iterations for ``quality``, whose history of up to 50 pairs of image-sized vectors grows with
them: the estimate counts it full), the style read at
1024 px. The baseline is the process after the network is loaded and the targets are computed
(the content's activations gathered tile by tile where tiled); a sampler reads the resident
memory every 2 ms while the steps run. Reported: the peak increase over the baseline, the
estimate (``jobs.memory.estimate``), the seconds per step after the first, and the seconds of
all the steps and the final costs (``steps_s``: L-BFGS with ``clip_every`` runs several
iterations in one call, so a step may not show alone) with L-BFGS's evaluations (line searches
included; the final costs are one more).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, "benchmarks")
from peak_memory import PeakSampler
import torch
from nstbatch.config import resolve_params
from nstbatch.io.images import load_image
from nstbatch.engine.pixels import to_tensor
from nstbatch.styles.store import StyleTargetStore
from nstbatch.engine.optimize import Memory, Stylization
from nstbatch.engine.vgg import build_features
from nstbatch.jobs.memory import estimate
size, steps, tile = int(sys.argv[1]), int(sys.argv[2]), None if sys.argv[3] == "off" else int(sys.argv[3])
params = resolve_params(sys.argv[6], {"size": size, "steps": steps, "scales": "1", "scale_steps": "1",
                               "style_size": 1024})
content = to_tensor(load_image(sys.argv[4], size))
style = to_tensor(load_image(sys.argv[5], 1024))
features = build_features(params)
targets, _ = StyleTargetStore(backend="torch").for_images([(style, 1.0)], params, content)
stamps, started = [], time.perf_counter()
with Stylization(content, targets, params, features=features, memory=Memory(tile=tile)) as run:
    for point in run:
        if point.step == 0:  # the targets are made: the baseline
            sampler, first = PeakSampler().start(), time.perf_counter()
        stamps.append(time.perf_counter())
    lbfgs = run.descent.optimizer.state.get(run.descent.image) or {}  # L-BFGS counts its evaluations
ended = time.perf_counter()  # the last step is not yielded: the final costs (one evaluation) follow it
increase = sampler.stop()
h, w = content.shape[-2:]
guess = estimate(params, h, w, tile=tile)
per_step = (stamps[-1] - stamps[1]) / (len(stamps) - 2) if len(stamps) > 2 else float("nan")
steps_s = ended - first  # all of them and the final costs (L-BFGS may run the steps in one call)
print(json.dumps({"size": [h, w], "tile": tile, "steps": steps, "baseline_mib": round(sampler.baseline / 2**20),
                  "measured_mib": round(increase / 2**20), "estimate_mib": round(guess.bytes / 2**20),
                  "targets_s": round(first - started, 1), "step_s": round(per_step, 2),
                  "steps_s": round(steps_s, 1), "evaluations": lbfgs.get("func_evals"),
                  "threads": torch.get_num_threads(), "precision": params.precision,
                  "preset": params.preset, "optimizer": params.optimizer}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="*", default=["1024:off", "1024:512", "2048:off", "2048:1024", "4096:1024"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--preset", default="balanced", help="whose full-size stage (quality: L-BFGS, its history counted)")
    ap.add_argument("--content", default=ROOT / "manifests/images/hoovertowernight.jpg")
    ap.add_argument("--style", default=ROOT / "manifests/images/starry_night.jpg")
    ap.add_argument("--out", type=Path, help="append each run's JSON line here")
    args = ap.parse_args()
    for run in args.runs:
        size, tile = run.split(":")
        result = subprocess.run([sys.executable, "-c", CHILD, size, str(args.steps), tile, str(args.content),
                                 str(args.style), args.preset], capture_output=True, text=True, cwd=ROOT)
        line = result.stdout.strip().splitlines()[-1] if result.returncode == 0 else json.dumps(
            {"run": run, "error": result.stderr.strip().splitlines()[-1:]})
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
