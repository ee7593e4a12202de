#!/usr/bin/env bash
# Times a molecule scenario's serving path: converge cold and warm, a no-op re-run, and the service's
# start-to-ready time. Prints one table; run from the repository root.
#
#   bash tests/bench/serving.sh SCENARIO          e.g. bash tests/bench/serving.sh vllm
#
# cold   : fresh test host AND empty uv cache ($LLM_BUNDLE_CACHE/uv-cache is set aside and restored after)
# warm   : fresh test host, caches kept (uv cache, controller wheelhouse and model)
# no-op  : converge again on the converged host (SSH + pipelining); target < 60 s
# ready  : `systemctl restart UNIT` until READY_URL answers 200, measured inside the host
#
# Environment: BENCH_UNIT (default: the scenario name), BENCH_READY_URL (default http://127.0.0.1:8000/health),
# BENCH_SKIP_COLD=1 to skip the cold converge. llamacpp's default probe is llama-server's /health on 8081.
set -euo pipefail
scenario=${1:?usage: serving.sh SCENARIO}
unit=${BENCH_UNIT:-$scenario}
case "$scenario" in
  llamacpp) default_ready=http://127.0.0.1:8081/health ;;  # 200 once the model is loaded, no key needed
  *) default_ready=http://127.0.0.1:8000/health ;;
esac
ready_url=${BENCH_READY_URL:-$default_ready}
export LLM_BUNDLE_CACHE=${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/tests/testhost/containers.conf}
export PATH=$PWD/.venv/bin:$PATH
log_dir=${BENCH_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bench-$scenario.XXXXXX")}
platform=$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["platforms"][0]["name"])' \
  "molecule/$scenario/molecule.yml")

timed() {  # timed NAME CMD... -> seconds on stdout, output in $log_dir/NAME.log
  local name=$1; shift
  local start=$SECONDS
  if ! "$@" >"$log_dir/$name.log" 2>&1; then
    echo "bench: '$name' failed, see $log_dir/$name.log" >&2
    tail -30 "$log_dir/$name.log" >&2
    exit 1
  fi
  echo $(( SECONDS - start ))
}

fresh_host() {
  molecule destroy -s "$scenario" >/dev/null 2>&1
  molecule create -s "$scenario" >"$log_dir/create.log" 2>&1
  molecule prepare -s "$scenario" >"$log_dir/prepare.log" 2>&1
}

cold=skipped
if [ "${BENCH_SKIP_COLD:-0}" != 1 ]; then
  molecule destroy -s "$scenario" >/dev/null 2>&1
  uv_cache=$LLM_BUNDLE_CACHE/uv-cache
  mv "$uv_cache" "$uv_cache.bench-saved" && mkdir -p "$uv_cache"
  trap 'rm -rf "$uv_cache" && mv "$uv_cache.bench-saved" "$uv_cache"' EXIT
  fresh_host
  cold=$(timed converge-cold molecule converge -s "$scenario")
  rm -rf "$uv_cache" && mv "$uv_cache.bench-saved" "$uv_cache" && trap - EXIT
fi
fresh_host
warm=$(timed converge-warm molecule converge -s "$scenario")
noop=$(timed converge-noop molecule converge -s "$scenario")
changed=$(grep -Eo 'changed=[0-9]+' "$log_dir/converge-noop.log" | tail -1)

# start-to-ready inside the host (no key needed: /health is public and loopback-only)
ready=$(podman exec -i "$platform" python3 - "$unit" "$ready_url" <<'PY'
import subprocess, sys, time, urllib.error, urllib.request
unit, url = sys.argv[1], sys.argv[2]
start = time.monotonic()
subprocess.run(["systemctl", "restart", unit], check=True)
while time.monotonic() - start < 1800:
    try:
        if urllib.request.urlopen(url, timeout=5).status == 200:
            break
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):  # serving and checking keys: ready
            break
    except Exception:
        pass
    time.sleep(0.5)
print("%.1f" % (time.monotonic() - start))
PY
)

printf '%-28s %s\n' "scenario" "$scenario ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ))" \
  "converge cold (s)" "$cold" "converge warm (s)" "$warm" \
  "no-op re-run (s)" "$noop ($changed)" "start-to-ready $unit (s)" "$ready" "logs" "$log_dir"
