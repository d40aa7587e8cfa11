#!/usr/bin/env bash
# Everything the tests need, on a fresh machine, then the whole suite (CPU only, offline).
# Extra arguments go to pytest: bash scripts/test.sh -k batcher
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
