"""site.yml stops before any host is touched when a variable is wrong.

Runs the real site.yml in check mode against this machine (local connection, CPU mode) with
one bad variable per case and asserts the run ends in the plan or preflight stage, naming the
option, and that the deploy play never starts.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")


def _site(tmp_path, *extra, tags=None, facts=None):
    """site.yml --check on this machine; facts: cached host facts (as another OS would report them)."""
    inv = tmp_path / "hosts.ini"
    inv.write_text("[llm_hosts]\ntesthost ansible_connection=local ansible_python_interpreter=%s "
                   "gpu_facts_sysfs_root=%s\n" % (sys.executable, tmp_path))
    env = dict(os.environ, ANSIBLE_FACT_CACHING="memory", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "t"),
               LLM_PLAN_REPORT_DIR=str(tmp_path / "reports"))  # plan.yml's report, not the repo's
    if facts is not None:
        # Ansible itself writes the facts into a fact cache the site.yml run then reads (preflight
        # gathers facts only when the cache has none).
        env.update(ANSIBLE_FACT_CACHING="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"))
        seed = tmp_path / "seed-facts.yml"
        seed.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [
            {"ansible.builtin.set_fact": dict({"ansible_" + k: v for k, v in facts.items()}, cacheable=True)}]}]))
        subprocess.run([PLAYBOOK, "-i", str(inv), str(seed)], cwd=str(REPO), env=env, check=True,
                       capture_output=True, text=True, timeout=120)
    cmd = [PLAYBOOK, "-i", str(inv), str(REPO / "site.yml"), "--check", "-e", "llm_mode=cpu"]
    if tags:
        cmd += ["--tags", tags]
    for e in extra:
        cmd += ["-e", e]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("bad,needle", [
    ("base_apt_cache_valid_time=soon", "base_apt_cache_valid_time"),
    ('{"base_debian_components": ["main", "universe"]}', "base_debian_components"),
    ("python_runtime_index_strategy=fastest", "python_runtime_index_strategy"),
    ("llm_max_model_len=lots", "llm_max_model_len"),
    ("model_store_source=hf model_store_revision=main",
     "model_store_revision must be a commit (40 hex digits) of Qwen/Qwen2.5-7B-Instruct, got 'main'"),
    ("model_store_source=hf model_store_repo=acme/qwen-tuned",
     "model_store_revisions: {'acme/qwen-tuned': <commit>}"),
    # Values a type does not catch (playbooks/tasks/preflight-values.yml).
    ("open_webui_admin_password=short", "open_webui_admin_password has 5 characters: use at least 12"),
    ("open_webui_admin_email=admin", "open_webui_admin_email 'admin' is not an e-mail address"),
    ("nginx_tls_certificate_src=/nonexistent/cert.pem nginx_tls_certificate_key_src=/nonexistent/key.pem",
     "nginx_tls_certificate_src '/nonexistent/cert.pem' is not a file on the controller"),
    ("nginx_tls_certificate_src=%s nginx_tls_certificate_key_src=%s" % (REPO / "LICENSE", REPO / "LICENSE"),
     "nginx_tls_certificate_key_src '%s' is not PEM" % (REPO / "LICENSE")),
    ("open_webui_port=8081", "llamacpp_port and open_webui_port share port 8081"),
])
def test_wrong_variable_stops_site_before_the_deploy_play(tmp_path, bad, needle):
    rc, out = _site(tmp_path, bad)
    assert rc != 0, out
    assert needle in out, out
    assert "PLAY [Deploy the LLM stack]" not in out, out


def test_site_reaches_the_deploy_play_with_valid_variables(tmp_path):
    # The same run without a bad variable gets past preflight (guards against a test that
    # passes because site.yml is broken for every input).
    # Only the always-tagged stages run; the deploy play starts but its tasks are skipped.
    rc, out = _site(tmp_path, tags="preflight")
    assert rc == 0, out
    assert "PLAY [Preflight - check every role's variables]" in out, out
    assert "PLAY [Deploy the LLM stack]" in out, out


def test_misspelled_bundle_variable_is_named_with_the_closest_one(tmp_path):
    # A typo in a bundle-prefixed variable would be ignored silently: preflight names it and the likely intent.
    rc, out = _site(tmp_path, "llamacpp_prot=8082", tags="preflight")
    assert rc == 0, out
    assert "WARNING: llamacpp_prot is set but no role of this bundle declares it" in out, out
    assert "did you mean llamacpp_port?" in out, out
    rc, out = _site(tmp_path, tags="preflight")
    assert "WARNING:" not in out.replace("[WARNING]", ""), out  # a clean inventory gets no such warning


ROCKY_9 = {"distribution": "Rocky", "distribution_version": "9.4", "distribution_major_version": "9",
           "os_family": "RedHat"}


def test_unsupported_os_stops_site_in_preflight(tmp_path):
    # The bundle is apt-only: a RHEL-family host is refused before the deploy play, naming what works.
    rc, out = _site(tmp_path, tags="preflight", facts=ROCKY_9)
    assert rc != 0, out
    assert ("Rocky 9.4 (RedHat family) is not supported: the bundle installs with apt and supports "
            "Debian 12/13 and Ubuntu 22.04/24.04 only.") in out, out
    assert "PLAY [Deploy the LLM stack]" not in out, out


def test_supported_os_from_the_cache_passes_preflight(tmp_path):
    # The same cached-facts path with Debian 12 facts gets through (the refusal above is the OS, not the cache).
    rc, out = _site(tmp_path, tags="preflight", facts=dict(ROCKY_9, distribution="Debian", os_family="Debian",
                                                           distribution_version="12.8",
                                                           distribution_major_version="12"))
    assert rc == 0, out
    assert "PLAY [Deploy the LLM stack]" in out, out
