#!/usr/bin/env bash
# Run the container's job on this machine without Docker: install, choose the weights, serve.
#   bash scripts/serve.sh            -> http://127.0.0.1:5000 (HOST and PORT override)
# Weights: E5_WEIGHTS_DIR, else weights/, else a download from the Hugging Face Hub, else the embedded
# multilingual-e5-small, with a banner (scripts/serve_setup.sh; E5_SERVE_MODEL=real or embedded chooses).
# The device is CUDA when available, else CPU (E5_DEVICE overrides). Needs Python 3.11-3.13.
# It runs here, beside .cog/openapi_schema.json, so requests are checked against the image's schema (422s).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve_setup.sh
install_runtime
choose_weights
export PATH="$PWD/.venv-serve/bin:$PATH"  # Cog spawns its worker as `python` from PATH
export COG_PREDICT_TYPE_STUB=predict.py:Predictor PORT="${PORT:-5000}"
export COG_MAX_CONCURRENCY="${COG_MAX_CONCURRENCY:-32}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"  # as cog.yaml: two malloc heaps, not eight per core
say "next: loading the model, then serving on http://${HOST:-127.0.0.1}:$PORT (POST /predictions, GET /health-check)"
exec python -m cog.server.http --host "${HOST:-127.0.0.1}"
