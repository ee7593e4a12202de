#!/usr/bin/env bash
# `make sanity`: ansible-test sanity on the collection built by tests/collection/run.sh
# (.cache/collection/root), copied into a scratch ansible_collections/llmstack/serving tree
# outside this git checkout (ansible-test skips files git ignores). README.md ("As an Ansible
# collection") says what runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
src=$repo/.cache/collection/root/ansible_collections/llmstack/serving
[ -f "$src/MANIFEST.json" ] || { echo "no built collection: run tests/collection/run.sh first" >&2; exit 2; }

# ansible-test keeps one virtualenv per sanity test (pinned requirements from PyPI) under
# ~/.ansible/test; that HOME lives in the bundle cache so later runs reuse them.
export HOME=${LLM_BUNDLE_CACHE:-$repo/.cache}/ansible-test-home
mkdir -p "$HOME/.ansible/test/cache"
# Each new virtualenv gets pip from a get-pip script that ansible-test downloads from
# ci-files.testing.ansible.com. Where that host cannot be reached (only PyPI here), a stand-in
# installs the same pip release from PyPI's pip wheel.
pip_version=$(python3 -c 'from ansible_test._internal.python_requirements import get_venv_packages as g
print(g(type("P", (), {"version": "3.11"})())["pip"])')
get_pip=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [ ! -s "$get_pip" ] && ! python3 - "$pip_version" "$get_pip" 2>/dev/null <<'PY'
import sys, urllib.request
url = "https://ci-files.testing.ansible.com/ansible-test/get-pip-%s.py" % sys.argv[1]
with urllib.request.urlopen(url, timeout=10) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
PY
then
  rm -f "$get_pip"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$HOME/.ansible/test/cache" "pip==$pip_version"
  cat > "$get_pip" <<PY
# Stand-in for get-pip.py (written by tests/collection/sanity.sh): installs pip ${pip_version}
# with pip run from PyPI's wheel, the way get-pip.py runs its embedded copy.
import os, sys
wheel = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-${pip_version}-py3-none-any.whl")
sys.path.insert(0, wheel)
from pip._internal.cli.main import main
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + args))
PY
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ansible_collections/llmstack"
cp -a "$src" "$work/ansible_collections/llmstack/serving"
# The ignore file (tests/ is not part of the built collection): only findings that cannot be
# fixed, each with its reason.
mkdir -p "$work/ansible_collections/llmstack/serving/tests"
cp -a tests/sanity "$work/ansible_collections/llmstack/serving/tests/"
cd "$work/ansible_collections/llmstack/serving"
unset ANSIBLE_CONFIG
# Every sanity test runs; shellcheck needs the Debian package (tests/testhost/install-host-packages.sh),
# without it ansible-test skips that one test with a warning.
ansible-test sanity --python 3.11 --local --color no "$@"
