#!/usr/bin/env bash
# Run the container's job on this machine without Docker: install, fetch the weights, serve.
#   bash scripts/serve.sh            -> http://127.0.0.1:5000 (HOST and PORT override)
# The device is CUDA when available, else CPU (E5_DEVICE overrides). Needs Python 3.11-3.13.
# It runs here, beside .cog/openapi_schema.json, so requests are checked against the image's schema (422s).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-serve
.venv-serve/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv-serve/bin/python scripts/download_weights.py
export PATH="$PWD/.venv-serve/bin:$PATH"  # Cog spawns its worker as `python` from PATH
export COG_PREDICT_TYPE_STUB=predict.py:Predictor PORT="${PORT:-5000}"
export COG_MAX_CONCURRENCY="${COG_MAX_CONCURRENCY:-32}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"  # as cog.yaml: two malloc heaps, not eight per core
echo "serving on http://${HOST:-127.0.0.1}:$PORT (POST /predictions, GET /health-check)"
exec python -m cog.server.http --host "${HOST:-127.0.0.1}"
