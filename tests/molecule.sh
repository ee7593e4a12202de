#!/usr/bin/env bash
# Runs molecule scenarios one after the other: molecule.sh SCENARIO... Each scenario's output is also kept in
# .cache/logs/molecule-<scenario>.log; on a failure its failing checks and errors are printed again at the end,
# where a CI log's tail shows them (and kept in .cache/logs/failures-<scenario>.txt), and the rest is not run. Expects `make setup` done (no setup step here: two
# lanes of tests/test-all.sh call this at once).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mkdir -p .cache/logs
for s in "$@"; do
  if ! bash tests/stage.sh "molecule $s" bash -c "set -o pipefail; molecule test -s $s 2>&1 | tee .cache/logs/molecule-$s.log"; then
    {
      echo "==> molecule $s: the last failed tasks, whole:"
      grep -E -A30 'fatal:' ".cache/logs/molecule-$s.log" | tail -120
      # molecule's own list of them can be lost (its parser of the run's output raised AttributeError once).
      echo "==> molecule $s: tasks that changed in its idempotence run:"
      awk '/idempotence.*Executing/{f=1} /idempotence.*Executed/{f=0} f && /TASK \[/{t=$0} f && /changed: \[/{print t}' ".cache/logs/molecule-$s.log" \
        | sed 's/\x1b\[[0-9;]*m//g' | tail -40
      echo "==> molecule $s failed; its failures (full log: .cache/logs/molecule-$s.log):"
      grep -E 'FAILED|ERROR|^[^A-Za-z]*E  ' ".cache/logs/molecule-$s.log" | tail -60
    } | tee ".cache/logs/failures-$s.txt"
    exit 1
  fi
done
