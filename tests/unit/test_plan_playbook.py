"""playbooks/plan.yml end-to-end: ansible-playbook --check on local hosts with fake nvidia-smi.

Also imports plan.yml the way site.yml does and checks that a later play sees llm_plan,
and that one failed host stops the run before any later play while the table still shows
every host. The plan report goes to tmp_path/reports ($LLM_PLAN_REPORT_DIR), never the repo.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NVSMI, REPO, SYSFS, write_fake_nvidia_smi

BIN = Path(sys.executable).parent
PLAYBOOK = shutil.which("ansible-playbook", path=str(BIN)) or shutil.which("ansible-playbook")

pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")


def _inventory(tmp_path, hosts):
    lines = ["[llm]"]
    for host, card, extra in hosts:
        smi = tmp_path / ("nvidia-smi-" + host)
        if card:
            write_fake_nvidia_smi(smi, NVSMI / card)
        if "gpu_facts_sysfs_root=" not in extra:
            extra += " gpu_facts_sysfs_root=%s" % (SYSFS / "empty")
        lines.append("%s ansible_connection=local ansible_python_interpreter=%s "
                     "gpu_facts_nvidia_smi_path=%s %s" % (host, sys.executable, smi, extra))
    inv = tmp_path / "hosts.ini"
    inv.write_text("\n".join(lines) + "\n")
    site = tmp_path / "site.yml"
    site.write_text(
        "- import_playbook: %s\n"
        "- name: A later stage\n"
        "  hosts: all\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"LATER {{ inventory_hostname }} {{ llm_plan.engine }} "
        "{{ llm_plan.quantization }} {{ llm_plan.max_model_len }}\"\n"
        % (REPO / "playbooks" / "plan.yml"))
    return inv, site


def _run(tmp_path, inv, playbook, *args):
    env = dict(os.environ, ANSIBLE_CACHE_PLUGIN="memory", ANSIBLE_LOCAL_TEMP=str(tmp_path / "t"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               LLM_PLAN_REPORT_DIR=str(tmp_path / "reports"))
    proc = subprocess.run([PLAYBOOK, "-i", str(inv), str(playbook), "--check"] + list(args),
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _recap(out):
    """{host: changed count} from the PLAY RECAP."""
    recap = out[out.rindex("PLAY RECAP"):].splitlines()[1:]
    return {ln.split()[0]: int(ln.split("changed=")[1].split()[0]) for ln in recap
            if "changed=" in ln}


def test_plan_playbook_plans_every_host_in_check_mode_and_later_plays_see_llm_plan(tmp_path):
    inv, site = _inventory(tmp_path, [
        ("big", "h200", ""), ("small", "rtx3060", ""), ("aws", "a10g", ""),
        ("demo", "no-devices", "llm_mode=cpu"),
        ("long", "h200", "llm_max_model_len=131072"),
        ("bare", None, "nvidia_driver_branch=580 gpu_facts_sysfs_root=%s"
         % (SYSFS / "rtx4090")),
    ])
    rc, out = _run(tmp_path, inv, site)
    assert rc == 0, out
    assert "LATER big vllm bf16 32768" in out
    assert "LATER small llamacpp gguf_q4_k_m 32768" in out
    assert "LATER aws vllm bf16 32768" in out
    assert "LATER demo vllm bf16 4096" in out
    assert "LATER long vllm bf16 131072" in out
    assert "LATER bare vllm bf16 32768" in out  # no driver yet: planned for branch 580
    # The report is a controller-side file: no host counts a change for it.
    assert _recap(out) == {"big": 0, "small": 0, "aws": 0, "demo": 0, "long": 0, "bare": 0}, out
    table = [ln.strip() for ln in out.splitlines()]
    assert any(ln.startswith("small") and "gguf_q4_k_m" in ln and "llamacpp" in ln
               for ln in table), out
    assert any(ln.startswith("aws") and "vllm cu129" in ln for ln in table), out
    reports = tmp_path / "reports"
    shown = "Plan report: %s/llm-plan.md, %s/llm-plan.html" % (reports, reports)
    assert shown in " ".join(out.split()), out  # the callback may fold a long message
    md, page = (reports / "llm-plan.md").read_text(), (reports / "llm-plan.html").read_text()
    for host in ("big", "small", "aws", "demo", "long", "bare"):
        assert "\n## %s\n" % host in md and "<h2>%s <span" % host in page
    assert "| small | NVIDIA GeForce RTX 3060 | 12.0 GiB | 550.163.01 | gguf_q4_k_m |" in md
    assert '<span class="badge">provisional</span>' in page  # bare: no driver yet
    assert (reports / "llm-plan.html").stat().st_mode & 0o777 == 0o644
    rc, out = _run(tmp_path, inv, tmp_path / "site.yml")
    assert rc == 0 and set(_recap(out).values()) == {0}, out


def test_plan_playbook_stops_the_run_listing_every_failed_host(tmp_path):
    inv, site = _inventory(tmp_path, [
        ("good", "rtx4090", ""), ("broken", "garbage", ""), ("nogpu", "no-devices", ""),
        ("tiny", "rtx3060", "llm_quantization=bf16"),
    ])
    rc, out = _run(tmp_path, inv, site, "-e", "llm_plan_report_dir=%s" % (tmp_path / "chosen"))
    assert rc != 0
    assert "LATER" not in out  # nothing after the plan ran
    assert "LLM plan failed on 3 host(s):" in out
    assert "nogpu: LLM plan failed (gpu_facts status no_gpu): no NVIDIA GPU found" in out
    assert "broken: LLM plan failed (gpu_facts status error): cannot read the GPUs" in out
    assert "tiny: LLM plan failed (1x GPU: NVIDIA GeForce RTX 3060 12288 MiB, driver " \
           "550.163.01): bf16 weights need 14.19 GiB" in out
    table = [ln.strip() for ln in out.splitlines()]
    assert any(ln.startswith("good") and "vllm cu130" in ln for ln in table), out
    page = (tmp_path / "chosen" / "llm-plan.html").read_text()  # written before the stop
    assert '<h2>good <span class="summary">vllm cu130' in page
    assert ('<h2>nogpu <span class="summary">plan failed</span></h2><p class="error">LLM plan '
            'failed (gpu_facts status no_gpu): no NVIDIA GPU found') in page
    md = (tmp_path / "chosen" / "llm-plan.md").read_text()
    assert "4 host(s): 1 planned, 3 failed." in md and "\n## broken\n" in md
    assert not (tmp_path / "reports").exists()  # the variable wins over $LLM_PLAN_REPORT_DIR


def test_fresh_host_plans_for_the_driver_roles_default_branch_without_any_variable(tmp_path):
    # No llm_assume_driver_branch, no nvidia_driver_branch: the branch comes from
    # roles/nvidia_driver/defaults/main.yml (580), the one the role would install.
    inv, site = _inventory(tmp_path, [
        ("fresh", None, "gpu_facts_sysfs_root=%s" % (SYSFS / "rtx4090")),
        ("fresh535", None, "nvidia_driver_branch=535 gpu_facts_sysfs_root=%s"
         % (SYSFS / "rtx4090")),
    ])
    rc, out = _run(tmp_path, inv, site)
    assert rc == 0, out
    table = [ln.strip() for ln in out.splitlines()]
    assert any(ln.startswith("fresh ") and "580 (planned)" in ln and "vllm cu130" in ln
               for ln in table), out
    assert any(ln.startswith("fresh535") and "535 (planned)" in ln and "vllm cu129" in ln
               for ln in table), out


REPLAN = """\
- import_playbook: {plan}
- name: The driver role installed nvidia-smi (simulated) and the deploy re-plans
  hosts: all
  gather_facts: false
  tasks:
    - name: Install the fake nvidia-smi where the plan looks for it
      ansible.builtin.copy:
        src: "{{{{ fake_after_driver }}}}"
        dest: "{{{{ gpu_facts_nvidia_smi_path }}}}"
        mode: "0755"
      check_mode: false
    - ansible.builtin.import_tasks: {replan}
    - ansible.builtin.debug:
        msg: "AFTER {{{{ inventory_hostname }}}} {{{{ llm_plan.engine }}}} {{{{ llm_plan.provisional }}}} {{{{ llm_plan.gpu_memory_utilization }}}} {{{{ llm_plan.driver_version }}}}"
"""


def _replan_site(tmp_path, card_after, sysfs="rtx4090"):
    fake = tmp_path / ("after-" + card_after)
    write_fake_nvidia_smi(fake, NVSMI / card_after)
    inv = tmp_path / "hosts.ini"
    inv.write_text(
        "[llm]\nfresh ansible_connection=local ansible_python_interpreter=%s "
        "gpu_facts_nvidia_smi_path=%s gpu_facts_sysfs_root=%s fake_after_driver=%s\n"
        % (sys.executable, tmp_path / "bin" / "nvidia-smi", SYSFS / sysfs, fake))
    (tmp_path / "bin").mkdir()
    site = tmp_path / "site.yml"
    site.write_text(REPLAN.format(plan=REPO / "playbooks" / "plan.yml",
                                  replan=REPO / "playbooks" / "tasks" / "replan.yml"))
    return inv, site


def test_replan_after_the_driver_uses_the_real_numbers_and_reports_the_difference(tmp_path):
    inv, site = _replan_site(tmp_path, "rtx4090-desktop")
    rc, out = _run(tmp_path, inv, site)
    assert rc == 0, out
    assert "580 (planned)" in out  # the provisional plan's table row
    assert "Re-planned from nvidia-smi after the driver role" in out
    assert "gpu_memory_utilization: 0.935 -> 0.858" in out
    assert "gpu_memory_used_mib: 0 -> 1846" in out
    assert "provisional: True -> False" in out
    assert "AFTER fresh vllm False 0.858 580.95.05" in out
    report = (tmp_path / "reports" / "llm-plan.md").read_text()  # rewritten by the re-plan
    assert "0.858" in report and "0.935" not in report


def test_replan_stops_the_host_when_the_real_gpu_no_longer_fits(tmp_path):
    inv, site = _replan_site(tmp_path, "rtx3060-busy", sysfs="rtx4090")
    rc, out = _run(tmp_path, inv, site)
    assert rc != 0
    assert "no longer works with the GPUs the driver reports" in out
    assert "6900 MiB already in use by other processes" in out
    assert "AFTER" not in out
