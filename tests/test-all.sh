#!/usr/bin/env bash
# `make test` after setup: the static checks (lint, unit, collection, sanity; CPU-bound, about 8 min)
# run beside the molecule scenarios, which spend most of their time waiting on services in the test
# hosts. The checks' output goes to .cache/logs/checks.log and is printed whole when both are done;
# one line says when the checks finished. Fails when either fails.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mkdir -p .cache/logs
start=$(date +%s)
(
  make --no-print-directory lint unit collection sanity > .cache/logs/checks.log 2>&1
  rc=$?
  echo "==> static checks (lint, unit, collection, sanity) finished beside molecule after $(( $(date +%s) - start ))s (exit ${rc}); output below at the end"
  exit "$rc"
) &
checks=$!
make --no-print-directory molecule
molecule_rc=$?
wait "$checks"
checks_rc=$?
echo "==> static checks' output (.cache/logs/checks.log):"
cat .cache/logs/checks.log
if [ "$checks_rc" -ne 0 ]; then
  echo "==> static checks failed (exit ${checks_rc}); their failures:"
  grep -E 'FAILED|ERROR|Error|error:|^E  |\[E[0-9]+\]|^[^ ]+:[0-9]+:[0-9]+: ' .cache/logs/checks.log | tail -60
fi
[ "$molecule_rc" -eq 0 ] && [ "$checks_rc" -eq 0 ]
