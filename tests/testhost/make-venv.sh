#!/usr/bin/env bash
# Creates the controller venv with the pinned toolchain (requirements.txt); skipped when it
# already matches the pins (a hash of requirements.txt is kept inside the venv).
set -euo pipefail
venv=${1:-.venv}
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -x "$venv/bin/ansible-playbook" ] && [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
  echo "venv $venv: up to date (skipped)"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r requirements.txt
echo "$want" > "$venv/.requirements.sha256"
echo "venv $venv: installed $(grep -c '==' requirements.txt) pinned packages"
