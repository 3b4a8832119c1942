"""The memory estimate (``nstbatch.jobs.memory``) against measured peaks, on this machine.

    python benchmarks/memory_estimate.py [--sizes 256 512 1024] [--steps 6] [--checkpointing]
        [--preset NAME] [--set KEY=VALUE ...]

Each size runs in a fresh process: the worker's state before its first job (network loaded,
style targets computed) is the baseline; a sampler reads the resident memory every 2 ms while
the job runs (default preset, a few steps at each scale, the full-size stage included), and
the peak increase over the baseline is compared with the estimate.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys
sys.path.insert(0, "benchmarks")
from peak_memory import PeakSampler
import torch
from nstbatch.config import resolve_params
from nstbatch.io.images import load_image
from nstbatch.engine.pixels import to_tensor
from nstbatch.styles.store import StyleTargetStore
from nstbatch.engine.optimize import Memory, optimize
from nstbatch.engine.vgg import build_features
from nstbatch.jobs.memory import estimate
size, steps, checkpointing = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
extra = json.loads(sys.argv[6])
params = resolve_params(extra.pop("preset", None), {"size": size, "steps": steps, **extra})
content = to_tensor(load_image(sys.argv[4], size))
style = to_tensor(load_image(sys.argv[5], size))
features = build_features(params)
targets, _ = StyleTargetStore(backend="torch").for_images([(style, 1.0)], params, content)
sampler = PeakSampler().start()
optimize(content, targets, params, features=features,
         memory=Memory(checkpointing))
increase = sampler.stop()
h, w = content.shape[-2:]
guess = estimate(params, h, w, checkpointing=checkpointing)
print(json.dumps({"size": [h, w], "checkpointing": checkpointing, "baseline_mib": sampler.baseline / 2**20,
                  "measured_mib": increase / 2**20, "estimate_mib": guess.bytes / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--precision", help="override the preset's precision (fp32, bf16)")
    ap.add_argument("--preset", help="the preset to run [default: the default]")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more parameters")
    ap.add_argument("--content", default=ROOT / "manifests/images/hoovertowernight.jpg")
    ap.add_argument("--style", default=ROOT / "manifests/images/starry_night.jpg")
    args = ap.parse_args()
    print("| size | checkpointing | baseline | measured peak increase | estimate | estimate / measured |")
    print("| --- | --- | --- | --- | --- | --- |")
    extra = dict(item.split("=", 1) for item in args.set)
    extra.update({"precision": args.precision} if args.precision else {})
    extra.update({"preset": args.preset} if args.preset else {})
    for size in args.sizes:
        out = subprocess.run([sys.executable, "-c", CHILD, str(size), str(args.steps),
                              "1" if args.checkpointing else "0", str(args.content), str(args.style),
                               json.dumps(extra)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['size'][1]}×{r['size'][0]} | {'yes' if r['checkpointing'] else 'no'} | {r['baseline_mib']:.0f} MiB"
              f" | {r['measured_mib']:.0f} MiB | {r['estimate_mib']:.0f} MiB | {r['estimate_mib'] / r['measured_mib']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
