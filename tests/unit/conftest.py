"""Unit-test helpers: make ansible.module_utils.llm_* importable, fixtures, fake nvidia-smi."""

import json
import os
import shlex
import shutil
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
for _p in (str(REPO / "plugins" / "modules"), str(REPO / "plugins" / "filter"),
           str(REPO / "tests" / "fakes"), str(REPO / "tests" / "helpers")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import nvidia_smi as fake_smi  # noqa: E402  the one fake nvidia-smi (tests/fakes/nvidia_smi.py)


def write_fake_nvidia_smi(path: Path, card_dir: Path) -> str:
    """An executable nvidia-smi at `path` answering from the recorded card in `card_dir` (the one fake)."""
    path.write_text("#!/bin/sh\nFAKE_NVIDIA_SMI_FIXTURES=%s exec %s %s \"$@\"\n" % (
        shlex.quote(str(card_dir)), shlex.quote(sys.executable), shlex.quote(fake_smi.__file__)))
    path.chmod(0o755)
    return str(path)


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
        return write_fake_nvidia_smi(workdir / ("nvidia-smi-" + card), src)

    return make


def fixture_runner(card: str):
    """In-process runner (argv -> rc, out, err): the fake nvidia-smi's play-back without a process."""
    src = str(NVSMI / card)
    return lambda argv: fake_smi.answer(src, argv[1:])


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


def local_play(tmp_path: Path, **env_extra: str):
    """(inventory path, environment) for running a playbook on this machine with the repo's ansible.cfg:
    one host h1 over the local connection with this Python, temp files and async jobs under tmp_path,
    no fact cache shared with other runs."""
    import os

    inv = tmp_path / "hosts.ini"
    inv.write_text("h1 ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "t"), ANSIBLE_CACHE_PLUGIN="memory", **env_extra)
    return inv, env


@pytest.fixture(scope="session")
def promtool():
    """Debian 12's promtool (the monitoring role's version): on PATH, or where `make promtool` puts it."""
    cached = Path(os.environ.get("LLM_BUNDLE_CACHE", "/var/cache/llm-bundle")) / "tools" / "bin" / "promtool"
    found = shutil.which("promtool") or (str(cached) if cached.exists() else None)
    if not found:
        pytest.fail("promtool is missing: run `make promtool` (Debian 12's, into %s)" % cached.parent)
    return found
