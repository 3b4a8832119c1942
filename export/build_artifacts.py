"""Build the ONNX (and, where TensorRT runs, TensorRT) artifacts a cluster run needs, ahead of
time, and fill the shared style-target cache.

    python export/build_artifacts.py MANIFEST --cache-dir /shared/nstbatch-cache [--providers auto]

For every distinct (weights, style layers, pooling) of the manifest's jobs, the targets model
is exported into the cache (checked against PyTorch first), a session is opened on it (which
builds and caches a TensorRT engine where TensorRT runs), and then every distinct style target
is computed into the cache. GPU jobs pointed at the same --cache-dir then export and compute
nothing. All the logic is the package's; this script only strings it together.
"""
from __future__ import annotations

import argparse
import sys

from nstbatch.cache import cache_root
from nstbatch.errors import NstbatchError
from nstbatch.manifest import read_manifest
from nstbatch.onnx_backend import build_artifacts
from nstbatch.precompute import StyleTargetStore, distinct_targets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--cache-dir", default=None, help="default: $NSTBATCH_CACHE or ~/.cache/nstbatch")
    ap.add_argument("--providers", default="auto")
    args = ap.parse_args(argv)
    try:
        jobs = read_manifest(args.manifest).jobs
        root = cache_root(args.cache_dir)
        models = {}
        for _, params in distinct_targets(jobs):
            models.setdefault((params.weights, params.style_layers, params.pooling), params)
        for params in models.values():
            artifact = build_artifacts(params, root / "onnx", args.providers)
            print(f"model {artifact.model.name}: parity {artifact.error:.1e}, provider {artifact.provider}")
        store = StyleTargetStore(cache_dir=root, providers=args.providers, notice=print)
        for style, params in distinct_targets(jobs):
            store.get(style, params)
        print(f"style targets: {store.computed} computed, {store.reused} already cached, in {root}")
    except NstbatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
