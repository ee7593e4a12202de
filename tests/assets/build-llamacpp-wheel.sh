#!/usr/bin/env bash
# Build the llama-cpp-python CPU wheel ONCE and keep it in the bundle cache.
#
#   LLM_BUNDLE_CACHE   cache root (default /var/cache/llm-bundle)
#   LLAMACPP_VERSION   llama-cpp-python version (default 0.3.36)
#   LLAMACPP_PYTHON    interpreter whose tag the wheel gets (default python3; must be cp311
#                      so the wheel installs on Debian 12's system python3 3.11.x)
#
# Output: $LLM_BUNDLE_CACHE/wheelhouse/llama_cpp_python-<ver>-cp311-cp311-linux_x86_64.whl
# The sdist comes from fetch-llamacpp-sdist.sh ($LLM_BUNDLE_CACHE/sdist), shared with the
# llama-server .deb and make_tiny_gguf.py (convert_hf_to_gguf.py + gguf-py).
#
# Portable CPU build: GGML_NATIVE=OFF with AVX/AVX2/FMA/F16C forced on (no AVX-512), so the
# wheel runs on any x86_64 CPU with AVX2 (the test hosts run on this same CPU).
set -euo pipefail

CACHE="${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}"
VER="${LLAMACPP_VERSION:-0.3.36}"
PY="${LLAMACPP_PYTHON:-python3}"
WHEELHOUSE="$CACHE/wheelhouse"

mkdir -p "$WHEELHOUSE"

shopt -s nullglob
existing=("$WHEELHOUSE"/llama_cpp_python-"$VER"-*.whl)
shopt -u nullglob
if [ "${#existing[@]}" -gt 0 ]; then
  echo "llama-cpp-python wheel: skipped (cached) ${existing[0]}"
  exit 0
fi

start=$(date +%s)

# toolchain: a C/C++ compiler is needed (cmake/ninja come from PyPI via build isolation when
# the system has none or too old ones). Install it on Debian/Ubuntu when missing and root.
if ! command -v c++ >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "no C/C++ compiler: installing build-essential"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential
  else
    echo "a C/C++ compiler (gcc/g++) is needed to build llama-cpp-python" >&2
    exit 1
  fi
fi

# 1) the sdist (shared with the llama-server .deb and convert_hf_to_gguf.py); reused when present
SDIST="$(bash "$(dirname "${BASH_SOURCE[0]}")/fetch-llamacpp-sdist.sh" | tail -n 1)"
[ -f "$SDIST" ] || { echo "sdist not found: $SDIST" >&2; exit 1; }

# 2) the wheel, built in a temp dir and moved in atomically (an interrupted build leaves nothing)
tmp=$(mktemp -d "$WHEELHOUSE/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_BMI2=ON -DGGML_CUDA=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF ${LLAMACPP_EXTRA_CMAKE_ARGS:-}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export FORCE_CMAKE=1
echo "building llama-cpp-python $VER wheel (CMAKE_ARGS=$CMAKE_ARGS, parallel $CMAKE_BUILD_PARALLEL_LEVEL)"
"$PY" -m pip wheel --no-deps --no-cache-dir --wheel-dir "$tmp" "$SDIST"

built=("$tmp"/llama_cpp_python-"$VER"-*.whl)
[ -f "${built[0]}" ] || { echo "no wheel produced" >&2; exit 1; }
mv "${built[0]}" "$WHEELHOUSE/"
( cd "$WHEELHOUSE" && sha256sum "$(basename "${built[0]}")" > "$(basename "${built[0]}").sha256" )

end=$(date +%s)
echo "llama-cpp-python wheel: built $WHEELHOUSE/$(basename "${built[0]}") in $((end - start)) s"
