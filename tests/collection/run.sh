#!/usr/bin/env bash
# `make collection`: builds the collection from this clone, installs it into a scratch
# collections path and uses it by FQCN only (smoke.yml, then the collection's own plan playbook
# on a recorded GPU), with a configuration that does not know the clone's plugin paths.
# Leaves the installed tree in .cache/collection/root for tests/collection/sanity.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
out=$repo/.cache/collection
export ANSIBLE_CONFIG=$repo/tests/collection/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH=$out/root
rm -rf "$out"
mkdir -p "$out/dist" "$out/root" "$out/work"
ansible-galaxy collection build --force --output-path "$out/dist" . >/dev/null
tarball=$(ls "$out"/dist/llmstack-serving-*.tar.gz)
# --no-deps: its dependencies (ansible.posix, community.*) come with the PyPI `ansible` package
ansible-galaxy collection install --no-deps --force -p "$out/root" "$tarball" >/dev/null
echo "built and installed $(basename "$tarball")"

work=$out/work
python3 - "$work/nvidia-smi" "$repo/tests/unit/fixtures/nvidia-smi/rtx4090" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests/unit")
from conftest import write_fake_nvidia_smi  # the tests' one fake nvidia-smi (tests/fakes/nvidia_smi.py)
write_fake_nvidia_smi(Path(sys.argv[1]), Path(sys.argv[2]))
PY
printf 'smoke ansible_connection=local ansible_python_interpreter=%s gpu_facts_nvidia_smi_path=%s gpu_facts_sysfs_root=%s\n' \
  "$(command -v python3)" "$work/nvidia-smi" "$repo/tests/unit/fixtures/sysfs/empty" > "$work/hosts.ini"

export ANSIBLE_LOCAL_TEMP=$work/tmp ANSIBLE_NOCOLOR=1 LLM_PLAN_REPORT_DIR=$work/reports
cd "$work"  # no ansible.cfg, roles/ or library/ of the clone nearby
ansible-playbook -i localhost, "$repo/tests/collection/smoke.yml" \
  -e "smoke_nvidia_smi=$work/nvidia-smi" -e "smoke_sysfs_root=$repo/tests/unit/fixtures/sysfs/empty" \
  -e "ansible_python_interpreter=$(command -v python3)"
# The collection's playbook by its FQCN: short module, filter and role names inside it resolve
# to the collection (check mode; the report goes to $LLM_PLAN_REPORT_DIR).
ansible-playbook -i hosts.ini llmstack.serving.plan --check
test -s reports/llm-plan.html
# The whole deployment as the collection's playbook: every import and role resolves.
ansible-playbook -i hosts.ini llmstack.serving.site --syntax-check >/dev/null
echo "collection llmstack.serving: FQCNs resolve (modules, filters, role, playbooks)"
