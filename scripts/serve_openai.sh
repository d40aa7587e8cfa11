#!/usr/bin/env bash
# The OpenAI-compatible server on this machine, without Docker: install, choose the weights, serve.
#   bash scripts/serve_openai.sh     -> http://127.0.0.1:8000/v1/embeddings (HOST and PORT override)
# Weights as serve.sh chooses them (scripts/serve_setup.sh). The same settings as the Cog face (E5_*), plus
# E5_API_KEY to require a bearer token. Needs Python 3.11-3.13.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve_setup.sh
install_runtime
choose_weights
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"  # as cog.yaml: two malloc heaps, not eight per core
say "next: loading the model, then serving on http://${HOST:-127.0.0.1}:${PORT:-8000}/v1/embeddings"
exec .venv-serve/bin/python -m openai_api --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
