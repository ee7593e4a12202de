"""Lifecycle (README "Upgrades"): one venv per Open WebUI version under /opt/llm/open-webui and the link `current`
the unit runs; a version change builds beside the running venv, backs up, switches, and rolls back by itself when
the new version fails its readiness gate. The backup/restore round trip and the uninstall are in test_faults.py,
where the interrupted runs re-install the host.

The upgrade runs on data of its own (open_webui_data_dir=UPGRADE_DATA, fresh): the host's own database is already
on the newest schema. In order: Open WebUI FROM on that data, a chat made there; a release that dies at start,
rolled back to FROM; the real upgrade FROM -> the default release (it migrates the schema), the chat kept; then the
host back on its own data."""

import os
import re
import subprocess
import sys
from pathlib import Path

HOST = os.environ.get("LLM_FRONT_HOST", "llm-default")
testinfra_hosts = [f"podman://{HOST}"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "helpers"))
import yaml  # noqa: E402
from test_faults import (  # noqa: E402  the fault suite's helpers
    BACKUPS,
    PERSISTENCE_TITLE,
    REPO,
    _backups,
    admin_auth,
    chat_titles,
    curl,
    playbook,
)

from fake_release import console_release  # noqa: E402  test releases that die at start

ROOT = "/opt/llm/open-webui"
BROKEN = "99.0.0"
WHEELS = "/opt/llm/test-wheels"
#: The release before the default (its lock is in roles/python_runtime/files/locks): 0.12.0 -> 0.12.4 adds two
#: schema revisions (add_missing_auth_rows, add_apps).
FROM = "0.12.0"
#: The role's default release, the upgrade's target.
DEFAULT = yaml.safe_load((REPO / "roles/open_webui/defaults/main.yml").read_text())["open_webui_version"]
UPGRADE_DATA = "/var/lib/llm/open-webui-upgrade"
UPGRADE_TITLE = f"made on Open WebUI {FROM}"


def site_open_webui(*extra):
    """site.yml's Open WebUI steps on the upgrade's own data."""
    return playbook("site.yml", "--tags", "open_webui", "-e", f"open_webui_data_dir={UPGRADE_DATA}", *extra)


def schema(host, data_dir):
    """Alembic revision of the SQLite database in data_dir."""
    with host.sudo():
        return host.check_output(
            "python3 -c \"import sqlite3, sys; print(sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)"
            ".execute('select version_num from alembic_version').fetchone()[0])\" " + f"{data_dir}/webui.db").strip()


def _current(host):
    return host.check_output(f"readlink {ROOT}/current").strip()


def test_the_unit_runs_the_current_versions_venv(host):
    version = host.check_output(f"ls {ROOT}/current/lib/python3.11/site-packages | "
                                r"sed -n 's/^open_webui-\(.*\)\.dist-info$/\1/p'").strip()
    assert _current(host) == f"{ROOT}/{version}"
    exec_start = host.check_output("systemctl show open-webui -p ExecStart --value")
    assert f"path={ROOT}/current/bin/open-webui" in exec_start, exec_start


def test_an_earlier_release_serves_fresh_data_and_takes_a_chat(host):
    assert _current(host) == f"{ROOT}/{DEFAULT}"
    rc, out, _, _ = site_open_webui("-e", f"open_webui_version={FROM}")
    assert rc == 0, out[-4000:]
    assert _current(host) == f"{ROOT}/{FROM}"
    # The venv of the default release stays (the rollback target, open_webui_venv_keep=2).
    assert host.file(f"{ROOT}/{DEFAULT}/bin/open-webui").exists
    auth = admin_auth()
    status, text = curl("/api/v1/chats/new", "POST", headers=auth,
                        body={"chat": {"title": UPGRADE_TITLE, "models": [], "messages": []}})
    assert status == 200, text[:300]
    assert chat_titles(auth=auth) == [UPGRADE_TITLE]


def test_a_version_that_fails_its_gate_is_rolled_back_with_the_chats(host, tmp_path):
    # A release whose start fails: site.yml builds its venv beside the running one, backs up, switches, sees the
    # unit die (gives up after open_webui_start_restarts restarts, not after open_webui_start_timeout), switches
    # back, restores the backup and fails saying so.
    before, titles = _current(host), chat_titles()
    backups = _backups(host)
    wheel, lock = console_release(tmp_path, "open-webui", "open_webui", "open-webui", BROKEN)
    assert host.run(f"mkdir -p {WHEELS}").rc == 0
    subprocess.run(["podman", "cp", str(wheel), f"{HOST}:{WHEELS}/"], check=True, timeout=60)
    rc, out, _, _ = site_open_webui("-e", f"open_webui_version={BROKEN}", "-e", 'open_webui_torch_requirement=""',
                                    "-e", f"open_webui_venv_lock={lock}",
                                    "-e", f'{{"python_runtime_find_links": ["{WHEELS}"]}}')
    assert rc != 0, "the run passed although the new version never answered"
    assert re.search(rf"Open\s+WebUI\s+{BROKEN}\s+failed\s+its\s+readiness\s+gate\s+on\s+{HOST}", out), out[-4000:]
    assert "ROLLED BACK" in out and re.search(r"dies\s+at\s+start", out), out[-4000:]
    assert re.search(r"open-webui\s+is\s+\S+\s+\(result\s+[a-z-]+\)\s+after\s+\d\s+restart", out), out[-4000:]
    # Back where it was: the previous venv, serving, the same chats; the failed venv is gone.
    assert _current(host) == before
    assert host.service("open-webui").is_running
    assert not host.file(f"{ROOT}/{BROKEN}").exists
    assert curl("/health")[0] == 200
    assert chat_titles() == titles
    # The backup taken before the switch, named after the version it was for, is what came back.
    new = [b for b in _backups(host) if b not in backups]
    assert [b.split("-", 1)[1] for b in new] == [f"before-open-webui-{BROKEN}"], new
    assert re.search(rf"Backup of {HOST}:\s+{BACKUPS}/{re.escape(new[0])}", out), out[-4000:]
    assert re.search(rf"its\s+data\s+is\s+the\s+backup\s+taken\s+before\s+the\s+switch\s+\({BACKUPS}/{re.escape(new[0])}\)",
                     out), out[-4000:]
    with host.sudo():
        aside = host.check_output(f"ls -1 {UPGRADE_DATA}").split()
    assert any(n.startswith("webui.db.before-restore-") for n in aside), aside


def test_the_upgrade_migrates_the_schema_keeps_the_chat_and_prunes_old_venvs(host):
    # Beside the upgrade: an older venv (by mtime, beyond open_webui_venv_keep=2 with the current one and FROM's)
    # and the files of the bundle's first layout (one venv right in /opt/llm/open-webui), both removed once the
    # new version passed its gate.
    plant = (f"mkdir -p {ROOT}/0.11.0/bin {ROOT}/bin {ROOT}/lib/python3.11 && "
             f"touch {ROOT}/pyvenv.cfg {ROOT}/.llm-installed && touch -d '2 days ago' {ROOT}/0.11.0")
    assert host.run(plant).rc == 0
    before = schema(host, UPGRADE_DATA)
    backups = _backups(host)
    rc, out, _, _ = site_open_webui()
    assert rc == 0, out[-4000:]
    assert _current(host) == f"{ROOT}/{DEFAULT}"
    after = schema(host, UPGRADE_DATA)
    assert after != before and after == schema(host, "/var/lib/llm/open-webui"), (before, after)
    assert chat_titles() == [UPGRADE_TITLE]
    new = [b for b in _backups(host) if b not in backups]
    assert [b.split("-", 1)[1] for b in new] == [f"before-open-webui-{DEFAULT}"], new
    assert sorted(host.check_output(f"ls -A {ROOT}").split()) == sorted([FROM, DEFAULT, "current"])


def test_back_on_its_own_data_the_host_serves_its_chats(host):
    rc, out, _, _ = playbook("site.yml", "--tags", "open_webui")
    assert rc == 0, out[-4000:]
    titles = chat_titles()
    assert PERSISTENCE_TITLE in titles and UPGRADE_TITLE not in titles and curl("/health")[0] == 200
    # These runs were limited to --tags open_webui: the engine's key still reached Open WebUI's environment.
    with host.sudo():
        key = host.file("/etc/llm/api-key").content_string.strip()
        assert f'OPENAI_API_KEYS="{key}"' in host.file("/etc/llm/open-webui/open-webui.env").content_string
    assert host.run(f"rm -rf {UPGRADE_DATA} {WHEELS}").rc == 0
