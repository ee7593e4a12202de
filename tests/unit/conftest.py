"""Unit-test helpers: make ansible.module_utils.llm_* importable, fixtures, fake nvidia-smi."""

import json
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NVSMI = FIXTURES / "nvidia-smi"
SYSFS = FIXTURES / "sysfs"

import ansible.module_utils  # noqa: E402

_MU = str(REPO / "plugins" / "module_utils")
if _MU not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MU)
for _p in (str(REPO / "plugins" / "modules"), str(REPO / "plugins" / "filter")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

#: Which fixture file answers which nvidia-smi call (see fake_nvidia_smi).
FAKE_SMI = r"""#!/bin/sh
D='@FIXTURE_DIR@'
case "$*" in
  *--query-gpu=*compute_cap*) name=query-gpu-facts.csv ;;
  *--query-gpu=*) name=query-fallback.csv ;;
  *--query-compute-apps=*) name=query-compute-apps.csv ;;
  --version) name=nvidia-smi-version.txt ;;
  "") name=nvidia-smi.txt ;;
  *) echo "fake nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
esac
if [ ! -f "$D/$name" ]; then echo "fake nvidia-smi: no fixture $name" >&2; exit 2; fi
cat "$D/$name"
rcf="$D/${name%.*}.rc"
if [ -f "$rcf" ]; then exit "$(cat "$rcf")"; fi
"""


def read_fixture(*parts: str) -> str:
    return (FIXTURES.joinpath(*parts)).read_text()


@pytest.fixture
def fake_nvidia_smi(tmp_path):
    """Return make(card) -> path of an executable fake nvidia-smi printing that card's files."""

    def make(card: str) -> str:
        src = NVSMI / card
        assert src.is_dir(), "no fixture dir %s" % src
        workdir = tmp_path / "fake"
        workdir.mkdir(exist_ok=True)
        script = workdir / ("nvidia-smi-" + card)
        script.write_text(FAKE_SMI.replace("@FIXTURE_DIR@", str(src)))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return str(script)

    return make


def fixture_runner(card: str):
    """In-process runner (argv -> rc, out, err) answering from fixture files like the fake."""
    src = NVSMI / card

    def run(argv):
        args = " ".join(argv[1:])
        if "--query-gpu=" in args:
            name = "query-gpu-facts.csv" if "compute_cap" in args else "query-fallback.csv"
        elif "--query-compute-apps=" in args:
            name = "query-compute-apps.csv"
        elif args == "--version":
            name = "nvidia-smi-version.txt"
        elif args == "":
            name = "nvidia-smi.txt"
        else:
            return 2, "", "unexpected arguments"
        path = src / name
        if not path.exists():
            return 2, "", "no fixture %s" % name
        rc_file = src / (name.rsplit(".", 1)[0] + ".rc")
        rc = int(rc_file.read_text()) if rc_file.exists() else 0
        return rc, path.read_text(), ""

    return run


@pytest.fixture
def run_module(monkeypatch, capsys):
    """Run an Ansible module's main() in-process with args; return its JSON result."""
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    def run(module, args):
        payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=True)}
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps(payload)))
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
        with pytest.raises(SystemExit):
            module.main()
        out = capsys.readouterr().out
        return json.loads(out)

    return run


def planned_hostvars(fleet):
    """hostvars as playbooks/plan.yml leaves them, from real plans of fixture GPUs.

    fleet: [(host, card, choices), ...]; card names a fixtures/nvidia-smi dir. A refused plan
    records the llm_plan module's message as llm_plan_error, like the playbook does.
    """
    from ansible.module_utils import llm_gpu
    from ansible.module_utils.llm_planner import PlanError, plan

    import llm_plan as llm_plan_module

    hostvars = {}
    for host, card, choices in fleet:
        facts = llm_gpu.gather(fixture_runner(card), "/usr/bin/nvidia-smi", str(SYSFS / "empty"))
        try:
            hostvars[host] = {"llm_plan_ok": True, "llm_plan": plan(facts, choices).to_dict()}
        except PlanError as exc:
            hostvars[host] = {"llm_plan_ok": False, "llm_plan_error": "LLM plan failed (%s): %s"
                              % (llm_plan_module._where(facts), exc)}
    return hostvars
