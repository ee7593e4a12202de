#!/usr/bin/env bash
# Runs one stage of `make`, printing its wall time and how busy the machine's CPUs were meanwhile (all of
# them, whatever ran beside it): stage.sh NAME COMMAND...
set -uo pipefail
name=$1; shift
cpu() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
start=$(date +%s)
read -r busy0 idle0 < <(cpu)
echo "==> ${name}"
"$@"
rc=$?
read -r busy1 idle1 < <(cpu)
total=$(( busy1 - busy0 + idle1 - idle0 ))
echo "<== ${name}: $(( $(date +%s) - start ))s, CPUs $(( total > 0 ? 100 * (busy1 - busy0) / total : 0 ))% busy (exit ${rc})"
exit "$rc"
