#!/usr/bin/env bash
# The CUDA variant of the llm-llama-server package on a real GPU, the way the llamacpp role makes
# and uses it: roles/llamacpp/files/build-llama-server-deb.sh with the role's CUDA cmake arguments
# (architecture 90 only: the H200), then apt installs and holds the .deb, and llama-server from the
# package serves the tests' tiny GGUF with every layer on the GPU, with the unit's environment
# (LD_LIBRARY_PATH=<cuda>/lib64, CUDA_DEVICE_ORDER) and the role's kind of flags.
#
# Run on the device machine from the repository root, one call (build ~5 min with 16 cores):
#   bash tests/device/llama_server_deb_gpu.sh .dev/llama-src.tar.gz .dev/tiny-q4_k_m.gguf "$OUT"
# The source is the llama-cpp-python sdist (or the slim copy of it, see RESULTS.md); the GGUF is
# /var/cache/llm-bundle/models/tiny-qwen2.5-instruct-gguf/tiny-qwen2.5-instruct-q4_k_m.gguf.
# Writes deb-gpu.txt (everything below) and BUILD-INFO into OUT.
set -euo pipefail
SDIST="${1:?sdist}"; GGUF="${2:?gguf}"; OUT="${3:?out dir}"
mkdir -p "$OUT"
exec > >(tee "$OUT/deb-gpu.txt") 2>&1
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")}"
export CUDA_HOME CUDACXX="$CUDA_HOME/bin/nvcc" PATH="$CUDA_HOME/bin:$PATH"
. /etc/os-release
cuda_v="$("$CUDACXX" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
# The role's variant name: <distribution><major>-cuda<X.Y>-sm<archs> (archs other than the default set).
VARIANT="${ID}${VERSION_ID%%.*}-cuda${cuda_v}-sm90"
CPU_ARGS="$(sed -n '/^llamacpp_cmake_args_cpu:/,/^[a-z#]/p' "$REPO/roles/llamacpp/defaults/main.yml" | sed '1d;$d' | tr -s ' \n' ' ')"
CMAKE_ARGS="${CPU_ARGS# } -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90"
echo "== host: $PRETTY_NAME, $(nproc) cores, nvcc $cuda_v ($CUDACXX)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== build: variant $VARIANT"
echo "   cmake args: $CMAKE_ARGS"
command -v ninja >/dev/null || echo "   (no ninja here: Unix Makefiles)"
t0=$(date +%s)
bash "$REPO/roles/llamacpp/files/build-llama-server-deb.sh" --sdist "$SDIST" --variant "$VARIANT" \
  --outdir /root/debs --cmake-args "$CMAKE_ARGS" --jobs "$(nproc)"
echo "BUILD $(( $(date +%s) - t0 )) s"
DEB="$(ls /root/debs/llm-llama-server_*.deb)"
echo "== package"
ls -l "$DEB"; cat "$DEB.sha256"; (cd /root/debs && sha256sum -c "$(basename "$DEB").sha256")
dpkg-deb --info "$DEB" | sed -n '/Package:/,$p'
dpkg-deb --contents "$DEB" | awk '{print $1, $3, $6, $7, $8}'
# The package may depend only on what every host of the variant has: no NCCL from the builder.
if dpkg-deb -f "$DEB" Depends | grep -qi nccl; then echo "FAIL: Depends names NCCL"; exit 1; fi
echo "== install (apt, held)"
t0=$(date +%s)
apt-get install -y "$DEB" 2>&1 | tail -n 3 \
  || { echo "apt could not satisfy Depends offline; dpkg -i"; dpkg -i "$DEB"; }
apt-mark hold llm-llama-server
dpkg-query --showformat '${Package} ${Version} ${db:Status-Abbrev}\n' --show llm-llama-server
apt-mark showhold
echo "INSTALL $(( $(date +%s) - t0 )) s"
cp /opt/llm/llama.cpp/BUILD-INFO "$OUT/BUILD-INFO"
echo "== libraries (the unit's LD_LIBRARY_PATH=$CUDA_HOME/lib64)"
LD_LIBRARY_PATH="$CUDA_HOME/lib64" ldd /opt/llm/llama.cpp/lib/libggml-cuda.so.0 | grep -E 'cuda|cublas|ggml|not found'
LD_LIBRARY_PATH="$CUDA_HOME/lib64" /opt/llm/llama.cpp/bin/llama-server --version
echo "== serve the tiny GGUF on the GPU"
key="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
install -m 0600 /dev/null /root/api-key; printf '%s' "$key" > /root/api-key
t0=$(date +%s)
CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=0 LD_LIBRARY_PATH="$CUDA_HOME/lib64" \
  /opt/llm/llama.cpp/bin/llama-server --api-key-file /root/api-key --model "$GGUF" --alias tiny \
  --host 127.0.0.1 --port 8090 --parallel 4 --ctx-size 32768 --kv-unified --cache-type-k f16 \
  --cache-type-v f16 --flash-attn on --n-gpu-layers 999 --jinja --no-webui --metrics --slots \
  > /root/serve.log 2>&1 &
pid=$!
for _ in $(seq 1 120); do
  curl -fsS http://127.0.0.1:8090/health >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat /root/serve.log; exit 1; }
  sleep 0.5
done
echo "READY $(( $(date +%s) - t0 )) s"
grep -i -E 'cuda|offload|gpu|flash|n_ctx' /root/serve.log | head -n 30
echo "-- without key: HTTP $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8090/v1/models)"
curl -fsS http://127.0.0.1:8090/v1/chat/completions -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' \
  -d '{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":16}' \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print("chat:", r["object"], r["usage"], r["timings"]["predicted_per_second"], "tok/s")'
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
curl -fsS http://127.0.0.1:8090/metrics -H "Authorization: Bearer $key" | grep -E '^llamacpp:(prompt_tokens_total|tokens_predicted_total)'
kill "$pid"; wait "$pid" || true
echo "DONE"
