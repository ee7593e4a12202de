#!/usr/bin/env bash
# Build every expensive test asset ONCE into the bundle cache; idempotent.
#
#   bash tests/assets/build.sh
#
# Environment:
#   LLM_BUNDLE_CACHE   cache root (default /var/cache/llm-bundle)
#   LLM_BUNDLE_PYTHON  Python 3.11 used for the assets venv (default python3)
#   LLAMACPP_VERSION   llama-cpp-python version (default 0.3.36)
#   LLAMA_SERVER_JOBS  compile jobs for the llama-server .deb (default: nproc)
#
# Stages (each prints its time, or "skipped (cached)"):
#   1. llama-cpp-python sdist      -> $LLM_BUNDLE_CACHE/sdist/llama_cpp_python-<ver>.tar.gz
#      (its vendored llama.cpp: the .deb's source and the GGUF converter)
#   2. llama-server .deb, CPU      -> $LLM_BUNDLE_CACHE/debs/llama-server/debian12-cpu/llm-llama-server_*.deb
#      (llama-server for the test hosts, llama-quantize for stage 5)
#   3. assets venv                 -> $LLM_BUNDLE_CACHE/venvs/assets (tests/assets/requirements.txt)
#   4. tiny HF model               -> $LLM_BUNDLE_CACHE/models/tiny-qwen2.5-instruct
#   5. tiny GGUF Q4_K_M            -> $LLM_BUNDLE_CACHE/models/tiny-qwen2.5-instruct-gguf/tiny-qwen2.5-instruct-q4_k_m.gguf
#   6. tiny LoRA adapter           -> $LLM_BUNDLE_CACHE/models/tiny-qwen2.5-instruct-lora{,-gguf}
#   7. tiny embedding model (GGUF) -> $LLM_BUNDLE_CACHE/models/tiny-embed-gguf/tiny-embed-q4_k_m.gguf (Open WebUI's RAG)
# The llama-cpp-python wheel (the server the bundle used before llama-server) is built only by
# tests/bench/llamacpp-servers.py, for its comparison (build-llamacpp-wheel.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export LLM_BUNDLE_CACHE="${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}"
export LLAMACPP_VERSION="${LLAMACPP_VERSION:-0.3.36}"
PY="${LLM_BUNDLE_PYTHON:-python3}"
export LLAMACPP_PYTHON="$PY"
CACHE="$LLM_BUNDLE_CACHE"
VENV="$CACHE/venvs/assets"
WHEELHOUSE="$CACHE/wheelhouse"
SDIST="$CACHE/sdist/llama_cpp_python-$LLAMACPP_VERSION.tar.gz"
LLAMA_SERVER_VARIANT=debian12-cpu
LLAMA_SERVER_DEBS="$CACHE/debs/llama-server/$LLAMA_SERVER_VARIANT"

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
  "$VENV/bin/python" -m pip install --quiet -r "$HERE/requirements.txt"
  "$VENV/bin/python" -c 'import torch, transformers, tokenizers, safetensors, numpy; print("assets venv: torch", torch.__version__, "transformers", transformers.__version__)'
  echo "$want" > "$VENV/.stamp"
}

# The .deb is built on this machine (Debian 12, like the test hosts): cmake, ninja, a C++
# compiler and dpkg-dev (dpkg-shlibdeps) come from Debian's archive when missing.
llama_server_deb() {
  local need=() cmd_pkg
  for cmd_pkg in cmake:cmake ninja:ninja-build c++:g++ cc:gcc dpkg-shlibdeps:dpkg-dev readelf:binutils; do
    command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || need+=("${cmd_pkg#*:}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "missing build tools: apt-get install ${need[*]}" >&2; return 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  bash "$REPO/roles/llamacpp/files/build-llama-server-deb.sh" --sdist "$SDIST" \
      --variant "$LLAMA_SERVER_VARIANT" --outdir "$LLAMA_SERVER_DEBS" --jobs "${LLAMA_SERVER_JOBS:-$(nproc)}"
}

stage "1/7 llama-cpp-python sdist (vendors llama.cpp)" bash "$HERE/fetch-llamacpp-sdist.sh"
stage "2/7 llama-server .deb ($LLAMA_SERVER_VARIANT)" llama_server_deb
stage "3/7 assets venv" make_venv
stage "4/7 tiny HF model" "$VENV/bin/python" "$HERE/make_tiny_model.py" "$CACHE/models/tiny-qwen2.5-instruct"
stage "5/7 tiny GGUF Q4_K_M" "$VENV/bin/python" "$HERE/make_tiny_gguf.py" \
    --hf-dir "$CACHE/models/tiny-qwen2.5-instruct" \
    --out-dir "$CACHE/models/tiny-qwen2.5-instruct-gguf"
stage "6/7 tiny LoRA adapter (PEFT and GGUF)" "$VENV/bin/python" "$HERE/make_tiny_lora.py" \
    --base-dir "$CACHE/models/tiny-qwen2.5-instruct" \
    --out-dir "$CACHE/models/tiny-qwen2.5-instruct-lora" \
    --gguf-dir "$CACHE/models/tiny-qwen2.5-instruct-lora-gguf"

stage "7/7 tiny embedding model (HF, then GGUF)" bash -c '"$0" "$1/make_tiny_model.py" --preset embed "$2/models/tiny-embed" \
    && "$0" "$1/make_tiny_gguf.py" --preset embed --hf-dir "$2/models/tiny-embed" --out-dir "$2/models/tiny-embed-gguf"' \
    "$VENV/bin/python" "$HERE" "$CACHE"

echo "== assets ready in $(( $(date +%s) - total_start )) s:"
ls -1 "$LLAMA_SERVER_DEBS"/llm-llama-server_*.deb
echo "$CACHE/models/tiny-qwen2.5-instruct"
echo "$CACHE/models/tiny-qwen2.5-instruct-gguf/tiny-qwen2.5-instruct-q4_k_m.gguf"
echo "$CACHE/models/tiny-qwen2.5-instruct-lora"
echo "$CACHE/models/tiny-qwen2.5-instruct-lora-gguf/tiny-qwen2.5-instruct-lora-f16.gguf"
echo "$CACHE/models/tiny-embed-gguf/tiny-embed-q4_k_m.gguf"
