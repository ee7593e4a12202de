"""site.yml stops before any host is touched when a variable is wrong.

Runs the real site.yml in check mode against this machine (local connection, CPU mode) with
one bad variable per case and asserts the run ends in the plan or preflight stage, naming the
option, and that the deploy play never starts.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")


def _site(tmp_path, *extra, tags=None):
    inv = tmp_path / "hosts.ini"
    inv.write_text("[llm_hosts]\ntesthost ansible_connection=local ansible_python_interpreter=%s "
                   "gpu_facts_sysfs_root=%s\n" % (sys.executable, tmp_path))
    env = dict(os.environ, ANSIBLE_FACT_CACHING="memory", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "t"),
               LLM_PLAN_REPORT_DIR=str(tmp_path / "reports"))  # plan.yml's report, not the repo's
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


def _offline_model(tmp_path):
    """A model source preflight can size without the Hub (model_store sizes the download in preflight)."""
    src = tmp_path / "model"
    src.mkdir()
    (src / "LICENSE").write_text("Apache-2.0\n")
    (src / "SHA256SUMS").write_text("0" * 64 + "  LICENSE\n")
    return "model_store_source=controller model_store_controller_src=%s model_store_root=%s" % (
        src, tmp_path / "models")


def test_site_reaches_the_deploy_play_with_valid_variables(tmp_path):
    # The same run without a bad variable gets past preflight (guards against a test that
    # passes because site.yml is broken for every input).
    # Only the always-tagged stages run; the deploy play starts but its tasks are skipped.
    rc, out = _site(tmp_path, _offline_model(tmp_path), tags="preflight")
    assert rc == 0, out
    assert "PLAY [Preflight - check every role's variables]" in out, out
    assert "PLAY [Deploy the LLM stack]" in out, out


def test_misspelled_bundle_variable_is_named_with_the_closest_one(tmp_path):
    # A typo in a bundle-prefixed variable would be ignored silently: preflight names it and the likely intent.
    model = _offline_model(tmp_path)
    rc, out = _site(tmp_path, "llamacpp_prot=8082", model, tags="preflight")
    assert rc == 0, out
    assert "WARNING: llamacpp_prot is set but no role of this bundle declares it" in out, out
    assert "did you mean llamacpp_port?" in out, out
    rc, out = _site(tmp_path, model, tags="preflight")
    assert "WARNING:" not in out.replace("[WARNING]", ""), out  # a clean inventory gets no such warning
