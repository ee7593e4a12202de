"""The generated passwords of roles/postgresql and roles/redis, kept on the controller.

Runs each role's real secrets tasks on this machine (local connection), twice, as
test_open_webui_vault.py does for Open WebUI's admin password: plain files 0600 in a 0700
git-ignored folder, or only a vault file with postgresql_password_vault_id / redis_password_vault_id.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOK = shutil.which("ansible-playbook", path=str(BIN))

pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: postgresql
        tasks_from: secrets
    - ansible.builtin.include_role:
        name: redis
        tasks_from: secrets
    - name: Hand the published passwords to the test
      ansible.builtin.copy:
        content: "{{{{ postgresql_password_effective }}}}\\n{{{{ redis_password_effective }}}}\\n{{{{ redis_monitor_password_effective }}}}\\n"
        dest: {out}
        mode: "0600"
      no_log: true
"""


def _run(tmp_path, *extra, identity_list=""):
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(out=tmp_path / "published"))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CACHE_PLUGIN="memory", ANSIBLE_LOCAL_TEMP=str(tmp_path / "t"),
               PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    env.pop("ANSIBLE_VAULT_IDENTITY_LIST", None)
    if identity_list:  # an empty list would read as a password file named ""
        env["ANSIBLE_VAULT_IDENTITY_LIST"] = identity_list
    cmd = [PLAYBOOK, "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
           str(play), "-e", f"postgresql_password_dir={tmp_path / 'secrets'}",
           "-e", f"redis_password_dir={tmp_path / 'secrets'}", *extra]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    published = (tmp_path / "published").read_text().splitlines() if proc.returncode == 0 else []
    return proc.returncode, proc.stdout + proc.stderr, published, env


def test_generated_passwords_are_kept_private_git_ignored_and_stable(tmp_path):
    rc, out, (pg, redis, monitor), _ = _run(tmp_path)
    assert rc == 0, out
    secrets = tmp_path / "secrets"
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    assert (secrets / ".gitignore").read_text() == "*\n"
    for name, password in (("postgresql-open_webui", pg), ("redis-open-webui", redis), ("redis-llm-monitor", monitor)):
        path = secrets / name
        assert path.read_text().strip() == password, name
        assert oct(path.stat().st_mode & 0o777) == "0o600", name
        assert len(password) == 32 and password.isalnum(), name  # goes into a URL as it is
        assert password not in out
    assert len({pg, redis, monitor}) == 3
    rc, out, again, _ = _run(tmp_path)
    assert rc == 0, out
    assert again == [pg, redis, monitor]


def test_operator_passwords_win_and_nothing_is_written(tmp_path):
    rc, out, published, _ = _run(tmp_path, "-e", "postgresql_password=Operator-Pg-Password-1",
                                 "-e", "redis_password=Operator-Redis-Password-1",
                                 "-e", "redis_monitor_password=Operator-Monitor-Password-1")
    assert rc == 0, out
    assert published == ["Operator-Pg-Password-1", "Operator-Redis-Password-1", "Operator-Monitor-Password-1"]
    assert not (tmp_path / "secrets").exists()
    assert "Operator-Pg-Password-1" not in out


def test_vault_id_keeps_only_encrypted_files(tmp_path):
    (tmp_path / "vault-pass").write_text("correct horse battery staple\n")
    rc, out, (pg, redis, monitor), env = _run(tmp_path, "-e", "postgresql_password_vault_id=ops",
                                     "-e", "redis_password_vault_id=ops",
                                     identity_list=f"ops@{tmp_path / 'vault-pass'}")
    assert rc == 0, out
    secrets = tmp_path / "secrets"
    for name, password in (("postgresql-open_webui", pg), ("redis-open-webui", redis), ("redis-llm-monitor", monitor)):
        vault = secrets / (name + ".vault")
        assert vault.read_text().startswith("$ANSIBLE_VAULT;1.2;AES256;ops\n")
        assert oct(vault.stat().st_mode & 0o777) == "0o600"
        assert not (secrets / name).exists(), "a plain copy was written as well"
        view = subprocess.run([str(BIN / "ansible-vault"), "view", str(vault)], env=env, capture_output=True,
                              text=True)
        assert view.returncode == 0 and view.stdout.strip() == password, view.stderr
