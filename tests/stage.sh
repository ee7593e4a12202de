#!/usr/bin/env bash
# Runs one stage of `make`, printing its wall time: stage.sh NAME COMMAND...
set -uo pipefail
name=$1; shift
start=$(date +%s)
echo "==> ${name}"
"$@"
rc=$?
echo "<== ${name}: $(( $(date +%s) - start ))s (exit ${rc})"
exit "$rc"
