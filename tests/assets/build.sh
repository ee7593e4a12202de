#!/usr/bin/env bash
# Build every expensive test asset ONCE into the bundle cache; idempotent.
#
#   bash tests/assets/build.sh
#
# Environment:
#   LLM_BUNDLE_CACHE   cache root (default /var/cache/llm-bundle)
#   LLM_BUNDLE_PYTHON  Python 3.11 used for the wheel and the assets venv (default python3)
#   LLAMACPP_VERSION   llama-cpp-python version (default 0.3.36)
#
# Stages (each prints its time, or "skipped (cached)"):
#   1. llama-cpp-python CPU wheel  -> $LLM_BUNDLE_CACHE/wheelhouse/llama_cpp_python-*.whl
#   2. assets venv                 -> $LLM_BUNDLE_CACHE/venvs/assets (tests/assets/requirements.txt)
#   3. tiny HF model               -> $LLM_BUNDLE_CACHE/models/tiny-qwen2.5-instruct
#   4. tiny GGUF Q4_K_M            -> $LLM_BUNDLE_CACHE/models/tiny-qwen2.5-instruct-gguf/tiny-qwen2.5-instruct-q4_k_m.gguf
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export LLM_BUNDLE_CACHE="${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}"
export LLAMACPP_VERSION="${LLAMACPP_VERSION:-0.3.36}"
PY="${LLM_BUNDLE_PYTHON:-python3}"
export LLAMACPP_PYTHON="$PY"
CACHE="$LLM_BUNDLE_CACHE"
VENV="$CACHE/venvs/assets"
WHEELHOUSE="$CACHE/wheelhouse"

mkdir -p "$CACHE"
# one build at a time per cache (parallel CI jobs, a developer and CI on one machine)
exec 9>"$CACHE/.assets-build.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

total_start=$(date +%s)
stage() {  # stage NAME CMD...
  local name="$1"; shift
  local s e
  s=$(date +%s)
  echo "== [$name] start"
  if ! "$@"; then
    echo "== [$name] FAILED after $(( $(date +%s) - s )) s" >&2
    exit 1
  fi
  e=$(date +%s)
  echo "== [$name] done in $((e - s)) s"
}

venv_stamp() {
  {
    "$PY" -c 'import sys; print(sys.version)'
    sha256sum "$HERE/requirements.txt" | cut -d' ' -f1
    ls "$WHEELHOUSE"/llama_cpp_python-"$LLAMACPP_VERSION"-*.whl 2>/dev/null | xargs -r -n1 basename
  } | sha256sum | cut -d' ' -f1
}

make_venv() {
  local want
  want="$(venv_stamp)"
  if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$want" ]; then
    echo "assets venv: skipped (cached) $VENV"
    return 0
  fi
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet \
      --find-links "$WHEELHOUSE" --only-binary llama-cpp-python \
      -r "$HERE/requirements.txt"
  "$VENV/bin/python" -c 'import llama_cpp, torch, transformers, tokenizers, safetensors, numpy; print("assets venv: llama_cpp", llama_cpp.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
  echo "$want" > "$VENV/.stamp"
}

stage "1/4 llama-cpp-python wheel" bash "$HERE/build-llamacpp-wheel.sh"
stage "2/4 assets venv" make_venv
stage "3/4 tiny HF model" "$VENV/bin/python" "$HERE/make_tiny_model.py" "$CACHE/models/tiny-qwen2.5-instruct"
stage "4/4 tiny GGUF Q4_K_M" "$VENV/bin/python" "$HERE/make_tiny_gguf.py" \
    --hf-dir "$CACHE/models/tiny-qwen2.5-instruct" \
    --out-dir "$CACHE/models/tiny-qwen2.5-instruct-gguf"

echo "== assets ready in $(( $(date +%s) - total_start )) s:"
ls -1 "$WHEELHOUSE"/llama_cpp_python-"$LLAMACPP_VERSION"-*.whl
echo "$CACHE/models/tiny-qwen2.5-instruct"
echo "$CACHE/models/tiny-qwen2.5-instruct-gguf/tiny-qwen2.5-instruct-q4_k_m.gguf"
