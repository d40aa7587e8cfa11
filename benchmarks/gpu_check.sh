#!/usr/bin/env bash
# The GPU check in one command (docs/gpu.md): installs the wheels in .whl/ if there are any (benchmarks/gpu_wheels.sh
# fetches them for a CUDA machine without a package index),
# then runs benchmarks/gpu_check.py, which builds the full-size checkpoint and runs every part within 7.5 minutes:
# the whole command finishes within 10.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [gpu_check.py options]     # OUT_DIR defaults to gpu-out/
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh /tmp/dry --dry-run   # the same on the CPU, tiny counts
set -uo pipefail
cd "$(dirname "$0")/.."
out=gpu-out
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out="$1"; shift; fi
dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done
if [ "$dry" = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
  # Wheels for the machine's python3 (3.12); --target leaves its own packages untouched, PYTHONPATH puts ours first.
  site=/tmp/e5-site
  "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || { echo "gpu_check: installing .whl/*.whl failed" >&2; exit 1; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m benchmarks.gpu_check --out "$out" "$@"
