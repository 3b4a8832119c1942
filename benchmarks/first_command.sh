#!/usr/bin/env bash
# README's first command, timed as a new user meets it: a fresh clone of this repository's
# HEAD, a new virtual environment, no pip cache and an empty nstbatch cache (the ONNX export
# and the style targets are made again), then the bundled example manifest.
#
#   bash benchmarks/first_command.sh        (from anywhere; needs python3 and git)
#
# Prints the install's and the run's wall time apart, and the whole.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/nstbatch"
cd "$work/nstbatch"
export XDG_CACHE_HOME="$work/cache" PIP_NO_CACHE_DIR=1
start=$(date +%s.%N)
python3 -m venv .venv
.venv/bin/pip install -q -e .
installed=$(date +%s.%N)
.venv/bin/nstbatch run manifests/example.csv
done_at=$(date +%s.%N)
ls out/example
python3 - "$start" "$installed" "$done_at" <<'EOF'
import sys
start, installed, done = map(float, sys.argv[1:])
print(f"install {installed - start:.1f} s, run {done - installed:.1f} s, "
      f"whole {done - start:.1f} s")
EOF
