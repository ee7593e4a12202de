#!/usr/bin/env bash
# Smoke test of the built assets with the real llama-cpp-python server (no Ansible).
#
#   bash tests/assets/smoke-llamacpp-server.sh
#
# Installs the bundle wheel + [server] deps (tests/assets/requirements-llamacpp-server.txt)
# into a scratch venv made with SMOKE_PYTHON (default /usr/bin/python3: Debian 12's 3.11.2,
# like the test hosts), serves the tiny Q4_K_M GGUF with an API key and checks:
#   GET /v1/models without key -> 401, with key -> 200 listing "tiny";
#   POST /v1/chat/completions max_tokens 8 -> OpenAI JSON (choices[0].message, usage);
#   the same with tools + tool_choice auto (what Open WebUI sends) -> 200.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}"
VER="${LLAMACPP_VERSION:-0.3.36}"
PY="${SMOKE_PYTHON:-/usr/bin/python3}"
[ -x "$PY" ] || PY=python3
PORT="${SMOKE_PORT:-18080}"
KEY="testkey"
GGUF="$CACHE/models/tiny-qwen2.5-instruct-gguf/tiny-qwen2.5-instruct-q4_k_m.gguf"
[ -f "$GGUF" ] || { echo "missing $GGUF: run bash tests/assets/build.sh" >&2; exit 1; }

work="$(mktemp -d /tmp/llamacpp-smoke.XXXXXX)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

t=$(date +%s)
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --find-links "$CACHE/wheelhouse" --only-binary llama-cpp-python \
    -r "$HERE/requirements-llamacpp-server.txt"
echo "venv + wheel[server] install: $(( $(date +%s) - t )) s ($("$work/venv/bin/python" --version))"

t0=$(date +%s.%N)
"$work/venv/bin/python" -m llama_cpp.server --model "$GGUF" --model_alias tiny \
    --host 127.0.0.1 --port "$PORT" --n_ctx 4096 --api_key "$KEY" > "$work/server.log" 2>&1 &
server_pid=$!
code=000
for _ in $(seq 1 240); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models" || true)
  [ "$code" = 200 ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "server died" >&2; exit 1; }
  sleep 0.25
done
[ "$code" = 200 ] || { tail -20 "$work/server.log" >&2; echo "server not ready" >&2; exit 1; }
printf 'server ready (GET /v1/models 200) after %.1f s\n' "$(echo "$(date +%s.%N) - $t0" | bc)"

fail=0
check() { if [ "$2" = "$3" ]; then echo "ok   $1 ($2)"; else echo "FAIL $1: got $2, want $3"; fail=1; fi; }
check "/v1/models without key" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v1/models")" 401
check "/v1/models wrong key" "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer nope' "http://127.0.0.1:$PORT/v1/models")" 401
models=$(curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models")
check "/v1/models lists tiny" "$(echo "$models" | "$work/venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')" tiny

chat() {
  curl -s -w '\n%{http_code} %{time_total}' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    "http://127.0.0.1:$PORT/v1/chat/completions" -d "$1"
}
validate='import json,sys
lines=sys.stdin.read().rsplit("\n",1); body,(code,secs)=lines[0],lines[1].split()
d=json.loads(body); m=d["choices"][0]["message"]
assert d["object"]=="chat.completion" and m["role"]=="assistant" and d["usage"]["completion_tokens"]>0, d
print(code, f"{float(secs)*1000:.0f}ms", "prompt_tokens=%d" % d["usage"]["prompt_tokens"], repr(m["content"]))'
out=$(chat '{"model":"tiny","messages":[{"role":"user","content":"Hello"}],"max_tokens":8}' | "$work/venv/bin/python" -c "$validate") \
  && echo "ok   chat max_tokens 8: $out" || { echo "FAIL chat"; fail=1; }
out=$(chat '{"model":"tiny","messages":[{"role":"user","content":"Weather in Paris?"}],"max_tokens":8,"tool_choice":"auto","tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}' \
  | "$work/venv/bin/python" -c "$validate") && echo "ok   chat with tools: $out" || { echo "FAIL chat with tools"; fail=1; }

grep -q "Using gguf chat template" "$work/server.log" && echo "ok   server uses the GGUF's chat template" \
  || { echo "FAIL chat template not taken from GGUF"; fail=1; }
exit "$fail"
