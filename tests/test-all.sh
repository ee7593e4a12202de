#!/usr/bin/env bash
# `make test` after setup, in two lanes at once (each molecule scenario spends most of its time waiting on
# services in its test hosts, so two lanes share the 2 CPUs well):
#   lane A: molecule default (the longest scenario), its output live;
#   lane B: the static checks (lint, unit, collection, sanity), then the other scenarios of $SCENARIOS, its
#           output in .cache/logs/lane-b.log, printed (and followed to its end) once lane A is done.
# Each lane stops at its first failure; fails when either fails. The scenarios use their own ports, networks
# and hosts; the setup both lanes use (`make setup`) is done before, once.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mkdir -p .cache/logs
read -r -a scenarios <<< "${SCENARIOS:-default fleet vllm driver trixie}"
lane_a=() lane_b=()
for s in "${scenarios[@]}"; do
  if [ "$s" = default ]; then lane_a+=("$s"); else lane_b+=("$s"); fi
done
start=$(date +%s)
(
  make --no-print-directory lint unit collection sanity
  rc=$?
  echo "==> lane B: static checks (lint, unit, collection, sanity) finished after $(( $(date +%s) - start ))s (exit ${rc})"
  [ "$rc" -eq 0 ] || exit "$rc"
  [ "${#lane_b[@]}" -eq 0 ] || bash tests/molecule.sh "${lane_b[@]}"
) > .cache/logs/lane-b.log 2>&1 &
lane_b_pid=$!
echo "==> lane B (static checks, then molecule ${lane_b[*]:-nothing}) runs beside: .cache/logs/lane-b.log"
a_rc=0
[ "${#lane_a[@]}" -eq 0 ] || bash tests/molecule.sh "${lane_a[@]}" || a_rc=$?
echo "==> lane A (molecule ${lane_a[*]:-nothing}) finished after $(( $(date +%s) - start ))s (exit ${a_rc}); lane B's output follows"
tail -c +1 -f --pid="$lane_b_pid" .cache/logs/lane-b.log
wait "$lane_b_pid"
b_rc=$?
echo "==> lane B finished after $(( $(date +%s) - start ))s (exit ${b_rc})"
if [ "$b_rc" -ne 0 ]; then
  echo "==> lane B failed (exit ${b_rc}); its failures:"
  grep -E 'FAILED|ERROR|Error|error:|^E  |\[E[0-9]+\]|^[^ ]+:[0-9]+:[0-9]+: ' .cache/logs/lane-b.log | tail -60
fi
[ "$a_rc" -eq 0 ] && [ "$b_rc" -eq 0 ]
