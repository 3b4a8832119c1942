#!/usr/bin/env bash
# Everything a lent GPU should run, in one go, sized for about 7 minutes on one H200:
#
#   bash benchmarks/gpu.sh [CONTENT STYLE BIG [OUT]]     (from anywhere; nstbatch importable)
#
# 1. the CUDA tests (tests/test_gpu.py; skipped on machines without a GPU);
# 2. the bundled example manifest, run on the GPU through the CLI;
# 3. benchmarks/gpu.py: step time fp32 vs bf16 at batch 1/4/16, the default preset's seconds
#    per image and quality at 512 px, a 4000 px image under a 24 GiB cap, ONNX Runtime vs
#    PyTorch targets, torch.compile vs eager. Figures go to OUT/gpu.jsonl (default gpu-results/);
#    ONLY="step default" runs some sections alone.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${4:-${OUT:-gpu-results}}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| onnxruntime', o.__version__, o.get_available_providers())"
echo "== tests/test_gpu.py"
timeout 200 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$OUT/tests.txt" 2>&1
tail -12 "$OUT/tests.txt"
echo "== example manifest on the GPU"
work=$(mktemp -d)
cp -r manifests "$work/"
( time timeout 90 "$PY" -m nstbatch run "$work/manifests/example.csv" --devices cuda ) 2>&1 | tail -12
cp "$work"/out/example/town_blend.png "$OUT/example_town_blend.png" 2>/dev/null || true
echo "== benchmarks/gpu.py"
args=()
[ $# -ge 3 ] && args=(--content "$1" --style "$2" --big "$3")
timeout 400 "$PY" benchmarks/gpu.py "${args[@]}" --out "$OUT" --budget "${BUDGET:-330}" ${ONLY:+--only $ONLY}
