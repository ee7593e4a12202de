#!/usr/bin/env bash
# `make test` after setup, in three lanes at once (each molecule scenario spends much of its time waiting on
# services in its test hosts; measured on the 2-CPU CI machine, two lanes left the CPUs half idle for the last
# 18 minutes, while the light scenarios ran alone):
#   lane A: molecule default (the longest scenario), its output live;
#   lane B: the static checks (lint, unit, collection, sanity), then molecule fleet;
#   lane C: the other scenarios of $SCENARIOS (vllm, driver, trixie: light on the CPUs).
# Lanes B and C write to .cache/logs/lane-<b|c>.log, printed (and followed to their end) once lane A is done.
# Each lane stops at its first failure; fails when any fails, and prints every failed lane's failures again at
# the very end (a CI log shows its tail). The scenarios use their own ports, networks and hosts; the setup the
# lanes share (`make setup`) is done before, once.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mkdir -p .cache/logs
rm -f .cache/logs/failures-*.txt
read -r -a scenarios <<< "${SCENARIOS:-default fleet vllm driver trixie}"
lane_a=() lane_b=() lane_c=()
for s in "${scenarios[@]}"; do
  case "$s" in
    default) lane_a+=("$s") ;;
    fleet) lane_b+=("$s") ;;
    *) lane_c+=("$s") ;;
  esac
done
start=$(date +%s)
(
  make --no-print-directory lint unit collection sanity
  rc=$?
  echo "==> lane B: static checks (lint, unit, collection, sanity) finished after $(( $(date +%s) - start ))s (exit ${rc})"
  if [ "$rc" -ne 0 ]; then
    grep -E 'FAILED|ERROR|Error|error:|^E  |\[E[0-9]+\]|^[^ ]+:[0-9]+:[0-9]+: ' .cache/logs/lane-b.log | tail -40 \
      > .cache/logs/failures-static.txt
    exit "$rc"
  fi
  [ "${#lane_b[@]}" -eq 0 ] || bash tests/molecule.sh "${lane_b[@]}"
) > .cache/logs/lane-b.log 2>&1 &
lane_b_pid=$!
(
  [ "${#lane_c[@]}" -eq 0 ] || bash tests/molecule.sh "${lane_c[@]}"
) > .cache/logs/lane-c.log 2>&1 &
lane_c_pid=$!
echo "==> lane B (static checks, then molecule ${lane_b[*]:-nothing}) runs beside: .cache/logs/lane-b.log"
echo "==> lane C (molecule ${lane_c[*]:-nothing}) runs beside: .cache/logs/lane-c.log"
a_rc=0
[ "${#lane_a[@]}" -eq 0 ] || bash tests/molecule.sh "${lane_a[@]}" || a_rc=$?
echo "==> lane A (molecule ${lane_a[*]:-nothing}) finished after $(( $(date +%s) - start ))s (exit ${a_rc})"
rcs=("$a_rc")
for lane in c b; do
  pid_var="lane_${lane}_pid"
  echo "==> lane ${lane^^}'s output follows"
  tail -c +1 -f --pid="${!pid_var}" ".cache/logs/lane-${lane}.log"
  wait "${!pid_var}"
  rc=$?
  rcs+=("$rc")
  echo "==> lane ${lane^^} finished after $(( $(date +%s) - start ))s (exit ${rc})"
done
# The failures of every failed lane again, last: lanes B and C printed theirs after lane A's.
failed=0
for rc in "${rcs[@]}"; do [ "$rc" -eq 0 ] || failed=1; done
if [ "$failed" -ne 0 ]; then
  for f in .cache/logs/failures-*.txt; do
    [ -f "$f" ] || continue
    echo "==> ${f}:"
    tail -40 "$f"
  done
  echo "==> lanes' exit codes: A ${rcs[0]}, C ${rcs[1]}, B ${rcs[2]} (A: ${lane_a[*]:-}; B: static ${lane_b[*]:-}; C: ${lane_c[*]:-})"
fi
[ "$failed" -eq 0 ]
