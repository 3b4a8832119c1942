#!/usr/bin/env bash
# GPU figures for benchmarks/RESULTS.md, sized to finish in under 8 minutes on one H200.
#
#   bash benchmarks/gpu.sh            (from the repository root, with nstbatch installed)
#
# 1. seconds per image at 512 px for batch 1 / 4 / 16 and fp32 vs bf16 (Adam, seed layers,
#    200 steps; images of a batch share one pass), and
# 2. style-target precompute at 512 px: ONNX Runtime CUDA vs PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python - <<'PY'
import statistics, time, torch
from nstbatch.config import resolve_params
from nstbatch.optimize import build_features, optimize
assert torch.cuda.is_available(), "no GPU visible"
torch.backends.cudnn.benchmark = True
dev = torch.device("cuda")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
for precision in ("fp32", "bf16"):
    params = resolve_params("seed", {"size": 512, "steps": 200, "precision": precision})
    features = build_features(params, dev)
    style = torch.rand(1, 3, 512, 512, device=dev)
    for batch in (1, 4, 16):
        content = torch.rand(batch, 3, 384, 512, device=dev)
        optimize(content, style, resolve_params("seed", {"size": 512, "steps": 5, "precision": precision}),
                 features=features, report_every=10**9)  # warm-up, cuDNN autotuning
        torch.cuda.synchronize()
        started = time.perf_counter()
        optimize(content, style, params, features=features, report_every=10**9)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        print(f"{precision} batch {batch:2d}: {seconds / batch:.3f} s/image (200 steps, 512x384),"
              f" peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        torch.cuda.reset_peak_memory_stats()
PY
python - <<'PY'
import tempfile, time, statistics, torch
from pathlib import Path
from nstbatch.config import resolve_params
from nstbatch.onnx_backend import OnnxTargets, export_targets_model
from nstbatch.targets import torch_style_targets
from nstbatch.vgg import VGGFeatures
from nstbatch.weights import load_weights
params = resolve_params("seed")
weights = load_weights()
image = torch.rand(1, 3, 512, 512, device="cuda")
features = VGGFeatures(weights, params.style_layers).cuda()
with tempfile.TemporaryDirectory() as tmp:
    model = Path(tmp) / "t.onnx"
    export_targets_model(weights, params.style_layers, params.pooling, model)
    for providers in ("cuda", "tensorrt,cuda,cpu"):
        try:
            session = OnnxTargets.open(model, params.style_layers, providers, cache_root=Path(tmp))
        except Exception as e:
            print(f"onnx {providers}: unavailable ({e})")
            continue
        runs = {"torch": lambda: torch_style_targets(features, image, params.style_layers),
                f"onnx {session.provider}": lambda: session(image)}
        times = {k: [] for k in runs}
        for name, run in runs.items():
            run(); torch.cuda.synchronize()
        for _ in range(20):
            for name, run in runs.items():
                t = time.perf_counter(); run(); torch.cuda.synchronize(); times[name].append(time.perf_counter() - t)
        for name, t in times.items():
            print(f"targets 512 px {name:32s} median {statistics.median(t) * 1000:.2f} ms")
PY
