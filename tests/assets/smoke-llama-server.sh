#!/usr/bin/env bash
# Smoke test of the llm-llama-server .deb (llama.cpp's own llama-server) on THIS machine, no
# Ansible, no root needed: the package is unpacked with `dpkg-deb -x` into a temp dir (its
# RUNPATH $ORIGIN/../lib makes it relocatable) and serves the tiny Q4_K_M GGUF.
#
#   bash tests/assets/smoke-llama-server.sh
#
# Environment:
#   LLM_BUNDLE_CACHE   cache root (default /var/cache/llm-bundle)
#   SMOKE_DEB          the .deb (default: highest-versioned llm-llama-server_*.deb of the debian12-cpu
#                      variant under $LLM_BUNDLE_CACHE/debs/llama-server/debian12-cpu/)
#   SMOKE_PORT         port on 127.0.0.1 (default 18081)
#
# Server flags are the ones the role will use: --api-key-file, --parallel 4, --ctx-size 16384,
# --jinja, --no-webui, --metrics, --alias qwen2.5-7b-instruct. Checks:
#   /health 200 without a key; /v1/models 401 without a key, 200 with it (lists the alias);
#   streamed chat with and without `tools`: valid SSE chat.completion.chunk events + [DONE];
#   a prompt longer than the per-slot context -> HTTP 4xx with an OpenAI error JSON
#   (streamed and not streamed); /metrics with the key has llamacpp:* series (401 without);
#   two concurrent requests decode together (/slots shows 2 slots processing at once).
set -euo pipefail

CACHE="${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}"
PORT="${SMOKE_PORT:-18081}"
ALIAS=qwen2.5-7b-instruct
GGUF="$CACHE/models/tiny-qwen2.5-instruct-gguf/tiny-qwen2.5-instruct-q4_k_m.gguf"
[ -f "$GGUF" ] || { echo "missing $GGUF: run bash tests/assets/build.sh" >&2; exit 1; }
DEB="${SMOKE_DEB:-}"
if [ -z "$DEB" ]; then
  DEB="$(printf '%s\n' "$CACHE"/debs/llama-server/debian12-cpu/llm-llama-server_*_amd64.deb | sort -V | tail -n 1)"
fi
[ -f "$DEB" ] || { echo "missing llm-llama-server .deb: run bash tests/assets/build.sh" >&2; exit 1; }
PY=python3
BASE="http://127.0.0.1:$PORT"

work="$(mktemp -d /tmp/llama-server-smoke.XXXXXX)"
server_pid=""
# shellcheck disable=SC2317  # called through trap
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "package: $(dpkg-deb -f "$DEB" Package) $(dpkg-deb -f "$DEB" Version) ($(du -h "$DEB" | cut -f1), $(basename "$DEB"))"
dpkg-deb -x "$DEB" "$work/root"
BIN="$work/root/opt/llm/llama.cpp/bin/llama-server"
if LD_LIBRARY_PATH='' ldd "$BIN" | grep -q 'not found'; then
  LD_LIBRARY_PATH='' ldd "$BIN" >&2; echo "FAIL unresolved libraries" >&2; exit 1
fi
echo "version: $("$BIN" --version 2>&1 | tr '\n' ' ')"

KEY="smoke-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
( umask 077; printf '%s\n' "$KEY" > "$work/api-key" )

t0=$(date +%s.%N)
"$BIN" --model "$GGUF" --alias "$ALIAS" --host 127.0.0.1 --port "$PORT" \
    --api-key-file "$work/api-key" --parallel 4 --ctx-size 16384 --jinja --no-webui --metrics \
    > "$work/server.log" 2>&1 &
server_pid=$!
code=000
for _ in $(seq 1 240); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health" || true)
  [ "$code" = 200 ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "server died" >&2; exit 1; }
  sleep 0.25
done
[ "$code" = 200 ] || { tail -n 30 "$work/server.log" >&2; echo "server not ready" >&2; exit 1; }
printf 'server ready (GET /health 200) after %.1f s\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
grep -oE 'n_slots = [0-9]+, n_ctx_slot = [0-9]+, kv_unified = .[a-z]+.' "$work/server.log" | head -n 1 | sed 's/^/server: /' || true

fail=0
check() { if [ "$2" = "$3" ]; then echo "ok   $1 ($2)"; else echo "FAIL $1: got $2, want $3"; fail=1; fi; }
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
AUTH=(-H "Authorization: Bearer $KEY")
JSON=(-H 'Content-Type: application/json')

check "/health without key" "$(status "$BASE/health")" 200
check "/v1/models without key" "$(status "$BASE/v1/models")" 401
check "/v1/models wrong key" "$(status -H 'Authorization: Bearer nope' "$BASE/v1/models")" 401
check "/v1/models with key" "$(status "${AUTH[@]}" "$BASE/v1/models")" 200
check "/v1/models lists the alias" "$(curl -s "${AUTH[@]}" "$BASE/v1/models" | $PY -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')" "$ALIAS"

# SSE: every event is `data: {chat.completion.chunk}` and the stream ends with `data: [DONE]`.
sse_check='import json,sys
raw=sys.stdin.read(); body,code=raw.rsplit("\n",1)
assert code=="200", f"HTTP {code}: {body[:300]}"
events=[l[6:] for l in body.splitlines() if l.startswith("data: ")]
assert events and events[-1]=="[DONE]", f"no [DONE]: {body[-300:]}"
chunks=[json.loads(e) for e in events[:-1]]
text=""; finish=None; tool_calls=0
for c in chunks:
    assert c["object"]=="chat.completion.chunk" and c["model"], c
    for ch in c.get("choices", []):
        d=ch["delta"]; text+=d.get("content") or ""; tool_calls+=len(d.get("tool_calls") or [])
        finish=ch.get("finish_reason") or finish
print(f"200, {len(chunks)} chunks, finish_reason={finish}, tool_call deltas={tool_calls}, text={text[:40]!r}")'
chat_stream() {
  curl -s -N -w '\n%{http_code}' "${AUTH[@]}" "${JSON[@]}" "$BASE/v1/chat/completions" -d "$1"
}
if out=$(chat_stream '{"model":"'"$ALIAS"'","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"Hello"}]}' | $PY -c "$sse_check" 2>&1); then
  echo "ok   streamed chat: $out"; else echo "FAIL streamed chat: $out"; fail=1; fi
TOOLS='"tool_choice":"auto","tools":[{"type":"function","function":{"name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]'
if out=$(chat_stream '{"model":"'"$ALIAS"'","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"Weather in Paris?"}],'"$TOOLS"'}' | $PY -c "$sse_check" 2>&1); then
  echo "ok   streamed chat with tools: $out"; else echo "FAIL streamed chat with tools: $out"; fail=1; fi

# Over-long prompt: more tokens than one slot holds (16384 / 4 slots = 4096 without --kv-unified).
$PY -c 'import json; print(json.dumps({"model":"'"$ALIAS"'","max_tokens":8,"messages":[{"role":"user","content":" ".join(f"w{i} zq{i*7}" for i in range(450))}]}))' > "$work/long.json"
$PY -c 'import json; d=json.load(open("'"$work/long.json"'")); d["stream"]=True; print(json.dumps(d))' > "$work/long-stream.json"
err_check='import json,sys
raw=sys.stdin.read(); body,code=raw.rsplit("\n",1)
assert code.startswith("4"), f"HTTP {code}: {body[:300]}"
e=json.loads(body)["error"]
print("HTTP %s type=%s message=%r" % (code, e.get("type"), e.get("message", "")[:110]))'
for mode in long long-stream; do
  if out=$(curl -s -N -w '\n%{http_code}' "${AUTH[@]}" "${JSON[@]}" "$BASE/v1/chat/completions" --data-binary "@$work/$mode.json" | $PY -c "$err_check" 2>&1); then
    echo "ok   over-long prompt ($mode): $out"; else echo "FAIL over-long prompt ($mode): $out"; fail=1; fi
done

# Metrics: key required, Prometheus text with llamacpp:* series.
check "/metrics without key" "$(status "$BASE/metrics")" 401
series=$(curl -s "${AUTH[@]}" "$BASE/metrics" | grep -oE '^llamacpp:[a-z_]+' | sort -u | tr '\n' ' ')
if [ -n "$series" ]; then echo "ok   /metrics with key: $series"; else echo "FAIL /metrics has no llamacpp:* series"; fail=1; fi

# Concurrency: two long generations at once; /slots must show both slots processing together.
long_gen='{"model":"'"$ALIAS"'","stream":true,"max_tokens":3000,"ignore_eos":true,"messages":[{"role":"user","content":"Count"}]}'
chat_stream "$long_gen" > "$work/c1.out" 2>&1 & c1=$!
chat_stream "$long_gen" > "$work/c2.out" 2>&1 & c2=$!
max_busy=0; max_proc=0
for _ in $(seq 1 200); do
  busy=$(curl -s "${AUTH[@]}" "$BASE/slots" | $PY -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s.get("is_processing")))' 2>/dev/null || echo 0)
  proc=$(curl -s "${AUTH[@]}" "$BASE/metrics" | sed -n 's/^llamacpp:requests_processing \([0-9.]*\).*/\1/p' | cut -d. -f1)
  [ "$busy" -gt "$max_busy" ] && max_busy=$busy
  [ "${proc:-0}" -gt "$max_proc" ] && max_proc=$proc
  [ "$max_busy" -ge 2 ] && [ "$max_proc" -ge 2 ] && break
  kill -0 "$c1" 2>/dev/null || kill -0 "$c2" 2>/dev/null || break
  sleep 0.05
done
wait "$c1" "$c2" || true
check "two concurrent requests: max busy slots in /slots" "$max_busy" 2
check "two concurrent requests: max llamacpp:requests_processing" "$max_proc" 2
for f in c1 c2; do
  if out=$($PY -c "$sse_check" < "$work/$f.out" 2>&1); then echo "ok   concurrent stream $f: ${out%%, text=*}"; else echo "FAIL concurrent stream $f: $out"; fail=1; fi
done
grep -E 'prompt eval time|eval time' "$work/server.log" | tail -n 2 | sed 's/^/server: /' || true

if grep -q "$KEY" "$work/server.log"; then echo "FAIL the API key appears in the server log"; fail=1; else echo "ok   API key not in the server log"; fi
exit "$fail"
