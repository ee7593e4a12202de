#!/usr/bin/env bash
# Download the llama-cpp-python sdist ONCE into the bundle cache; idempotent.
#
#   LLM_BUNDLE_CACHE   cache root (default /var/cache/llm-bundle)
#   LLAMACPP_VERSION   llama-cpp-python version (default 0.3.36)
#   LLAMACPP_PYTHON    interpreter whose pip downloads it (default python3)
#
# Output: $LLM_BUNDLE_CACHE/sdist/llama_cpp_python-<ver>.tar.gz (+ .sha256), the one source
# of: the CPU wheel (build-llamacpp-wheel.sh), the llm-llama-server .deb
# (roles/llamacpp/files/build-llama-server-deb.sh, vendor/llama.cpp) and
# convert_hf_to_gguf.py + gguf-py (make_tiny_gguf.py). Prints the sdist's path last.
set -euo pipefail

CACHE="${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}"
VER="${LLAMACPP_VERSION:-0.3.36}"
PY="${LLAMACPP_PYTHON:-python3}"
SDIST_DIR="$CACHE/sdist"
SDIST="$SDIST_DIR/llama_cpp_python-$VER.tar.gz"

mkdir -p "$SDIST_DIR"
if [ -s "$SDIST" ]; then
  echo "llama-cpp-python sdist: skipped (cached) $SDIST" >&2
else
  # --no-binary for THIS package only: ":all:" would also build every build dependency
  # (scikit-build-core, hatchling, setuptools...) from source, minutes for nothing.
  # Downloaded into a temp dir and renamed: an interrupted download leaves nothing behind.
  tmp="$(mktemp -d "$SDIST_DIR/.download.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python --dest "$tmp" "llama-cpp-python==$VER" >&2
  [ -s "$tmp/$(basename "$SDIST")" ] || { echo "pip download gave no $(basename "$SDIST")" >&2; exit 1; }
  mv "$tmp/$(basename "$SDIST")" "$SDIST"
  echo "llama-cpp-python sdist: downloaded $SDIST ($(du -h "$SDIST" | cut -f1))" >&2
fi
[ -s "$SDIST.sha256" ] || (cd "$SDIST_DIR" && sha256sum "$(basename "$SDIST")" > "$(basename "$SDIST").sha256")
echo "$SDIST"
