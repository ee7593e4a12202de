"""The generated admin password kept encrypted by ansible-vault (open_webui_admin_password_vault_id).

Runs the open_webui role's real secrets tasks on this machine (local connection) with a vault id from
ANSIBLE_VAULT_IDENTITY_LIST, twice, and reads the result back with ansible-vault itself.
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

VAULT_PASSWORD = "correct horse battery staple\n"

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: open_webui
        tasks_from: secrets
    - name: Hand the chosen password to the test
      ansible.builtin.copy:
        content: "{{{{ open_webui_admin_password_effective }}}}"
        dest: {out}
        mode: "0600"
      no_log: true
"""


def _playbook(tmp_path, play_text, name, vault_id, identity_list, *extra):
    """Run play_text on this machine with the vault ids of identity_list: (rc, output, environment)."""
    play = tmp_path / name
    play.write_text(play_text)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CACHE_PLUGIN="memory", ANSIBLE_LOCAL_TEMP=str(tmp_path / "t"),
               ANSIBLE_VAULT_IDENTITY_LIST=identity_list, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    cmd = [PLAYBOOK, "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
           str(play), "-e", f"open_webui_admin_password_dir={tmp_path / 'secrets'}",
           "-e", f"open_webui_admin_password_vault_id={vault_id}", *extra]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr, env


def _run(tmp_path, vault_id):
    (tmp_path / "cfg").mkdir(exist_ok=True)
    return _playbook(tmp_path, PLAY.format(out=tmp_path / "chosen"), "play.yml", vault_id,
                     f"ops@{tmp_path / 'vault-pass'}", "-e", f"open_webui_config_dir={tmp_path / 'cfg'}")


def _generate_encrypted(tmp_path):
    """A first run with vault id ops (password file vault-pass): (output, environment, the .vault file)."""
    (tmp_path / "vault-pass").write_text(VAULT_PASSWORD)
    (tmp_path / "secrets").mkdir(mode=0o700)
    rc, out, env = _run(tmp_path, "ops")
    assert rc == 0, out
    return out, env, tmp_path / "secrets" / "open-webui-admin.vault"


def test_generated_password_is_kept_encrypted_with_the_vault_id(tmp_path):
    out, env, vault = _generate_encrypted(tmp_path)
    chosen = (tmp_path / "chosen").read_text()
    assert len(chosen) == 32 and chosen.isalnum()
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.2;AES256;ops\n")
    assert chosen not in vault.read_text() and chosen not in out
    assert oct(vault.stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "secrets" / "open-webui-admin").exists(), "a plain copy was written as well"
    view = subprocess.run([str(BIN / "ansible-vault"), "view", str(vault)], env=env, capture_output=True, text=True)
    assert view.returncode == 0 and view.stdout.strip() == chosen, view.stderr

    # Second run: the same password, the file untouched.
    before = vault.read_text()
    rc, out, _ = _run(tmp_path, "ops")
    assert rc == 0, out
    assert (tmp_path / "chosen").read_text() == chosen
    assert vault.read_text() == before


def test_without_a_vault_id_the_password_is_plain_and_private(tmp_path):
    (tmp_path / "vault-pass").write_text("unused\n")
    (tmp_path / "secrets").mkdir(mode=0o700)
    rc, out, _ = _run(tmp_path, "")
    assert rc == 0, out
    plain = tmp_path / "secrets" / "open-webui-admin"
    assert plain.read_text().strip() == (tmp_path / "chosen").read_text()
    assert oct(plain.stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "secrets" / "open-webui-admin.vault").exists()


PREFLIGHT_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: open_webui
        tasks_from: preflight
"""


def _preflight(tmp_path, vault_id, identity_list):
    rc, out, _ = _playbook(tmp_path, PREFLIGHT_PLAY, "preflight.yml", vault_id, identity_list)
    return rc, out


def test_preflight_refuses_a_vault_id_ansible_vault_does_not_have(tmp_path):
    (tmp_path / "vault-pass").write_text(VAULT_PASSWORD)
    rc, out = _preflight(tmp_path, "opz", f"ops@{tmp_path / 'vault-pass'}")
    assert rc != 0, out
    assert "open_webui_admin_password_vault_id 'opz': ansible-vault has no vault id opz" in out
    assert "ANSIBLE_VAULT_IDENTITY_LIST=opz@" in out
    assert not (tmp_path / "secrets").exists(), "preflight changed the controller"
    # The configured id passes, still without writing anything.
    rc, out = _preflight(tmp_path, "ops", f"ops@{tmp_path / 'vault-pass'}")
    assert rc == 0, out
    assert "changed=0" in out and not (tmp_path / "secrets").exists()


def test_preflight_refuses_a_vault_file_the_configured_ids_cannot_open(tmp_path):
    _, _, vault = _generate_encrypted(tmp_path)
    before = vault.read_text()
    (tmp_path / "vault-pass").write_text("a different password\n")
    rc, out = _preflight(tmp_path, "ops", f"ops@{tmp_path / 'vault-pass'}")
    assert rc != 0, out
    assert f"ansible-vault cannot decrypt {vault}" in out
    assert vault.read_text() == before
    (tmp_path / "vault-pass").write_text(VAULT_PASSWORD)
    rc, out = _preflight(tmp_path, "ops", f"ops@{tmp_path / 'vault-pass'}")
    assert rc == 0, out
