"""Backups and restore of Open WebUI's data (README "Backups and restore"), on the converged host while it serves:
playbooks/backup.yml writes a checksummed, root-only backup without stopping Open WebUI; a chat is deleted;
playbooks/restore.yml is refused while open-webui runs (nothing changes), and with open_webui_restore_stop=true it
stops the service, puts the backup back, starts it, and the deleted chat is listed again. site.yml takes a backup
before it changes Open WebUI's version."""

import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

HOST = os.environ.get("LLM_FRONT_HOST", "llm-default")
testinfra_hosts = [f"podman://{HOST}"]

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_faults import curl, playbook  # noqa: E402  the fault suite's helpers
from test_front import PERSISTENCE_TITLE, env_value  # noqa: E402

BACKUPS = "/var/backups/llm/open-webui"


def _token(host):
    body = {"email": env_value(host, "WEBUI_ADMIN_EMAIL"),
            "password": (REPO / ".secrets" / HOST / "open-webui-admin").read_text().strip()}
    deadline = time.time() + 90  # nginx limits sign-ins (10 a minute): wait for the bucket
    while True:
        status, text = curl("/api/v1/auths/signin", "POST", body=body)
        if status != 429 or time.time() > deadline:
            break
        time.sleep(7)
    assert status == 200, text[:300]
    return {"Authorization": "Bearer " + json.loads(text)["token"]}


def _titles(auth):
    status, text = curl("/api/v1/chats/list", headers=auth)
    assert status == 200, text[:300]
    return [c["title"] for c in json.loads(text)]


def _backups(host):
    with host.sudo():
        return host.check_output(f"ls -1 {BACKUPS} 2>/dev/null || true").split()


def test_backup_and_restore_bring_a_deleted_chat_back(host):
    auth = _token(host)
    title = f"backup check {uuid.uuid4().hex[:8]}"
    status, text = curl("/api/v1/chats/new", "POST", headers=auth,
                        body={"chat": {"title": title, "models": [], "messages": []}})
    assert status == 200, text[:300]
    chat_id = json.loads(text)["id"]
    before = _backups(host)

    rc, out, _, _ = playbook("playbooks/backup.yml")
    assert rc == 0, out[-3000:]
    new = [b for b in _backups(host) if b not in before]
    assert len(new) == 1 and new[0].endswith("-manual"), (before, new)
    path = f"{BACKUPS}/{new[0]}"
    assert re.search(rf"Backup of {HOST}:\s+{re.escape(path)}", out), out[-3000:]
    with host.sudo():
        folder = host.file(path)
        assert (folder.user, folder.mode, host.file(BACKUPS).mode) == ("root", 0o700, 0o700)
        sums = host.run(f"cd {path} && sha256sum -c SHA256SUMS")
        assert sums.rc == 0 and "webui.db: OK" in sums.stdout and "config.tar.gz: OK" in sums.stdout, sums.stdout
    assert host.service("open-webui").is_running, "the backup stopped Open WebUI"

    status, text = curl(f"/api/v1/chats/{chat_id}", "DELETE", headers=auth)
    assert status == 200, text[:300]
    assert title not in _titles(auth)

    # Under a running Open WebUI: refused, nothing changed.
    rc, out, changed, _ = playbook("playbooks/restore.yml")
    assert rc != 0 and re.search(r"open-webui\s+runs\s+on", out) and "open_webui_restore_stop=true" in out, \
        out[-3000:]
    assert changed == 0 and host.service("open-webui").is_running
    assert title not in _titles(auth)

    rc, out, changed, _ = playbook("playbooks/restore.yml", "-e", "open_webui_restore_stop=true")
    assert rc == 0, out[-3000:]
    assert re.search(rf"from\s+{re.escape(path)}", out), out[-3000:]
    assert host.service("open-webui").is_running
    titles = _titles(auth)
    assert title in titles and PERSISTENCE_TITLE in titles, titles
    with host.sudo():
        aside = host.check_output("ls -1 /var/lib/llm/open-webui").split()
    assert any(n.startswith("webui.db.before-restore-") for n in aside), aside


SITE_PACKAGES = "/opt/llm/open-webui/lib/python3.11/site-packages"


def test_site_backs_up_before_open_webuis_version_changes(host):
    # The venv made to look like an older Open WebUI (its dist-info renamed; the install stamp is untouched, so
    # the venv itself is not rebuilt): the install step backs up first, naming the version it installs.
    installed = host.check_output(f"ls -d {SITE_PACKAGES}/open_webui-*.dist-info").strip()
    version = re.search(r"open_webui-(.+)\.dist-info$", installed).group(1)
    before = _backups(host)
    assert host.run(f"mv {installed} {SITE_PACKAGES}/open_webui-0.0.1.dist-info").rc == 0
    try:
        rc, out, _, _ = playbook("site.yml", "--tags", "open_webui_install")
    finally:
        assert host.run(f"mv {SITE_PACKAGES}/open_webui-0.0.1.dist-info {installed}").rc == 0
    assert rc == 0, out[-3000:]
    new = [b for b in _backups(host) if b not in before]
    assert [b.split("-", 1)[1] for b in new] == [f"before-open-webui-{version}"], new
    assert re.search(rf"Backup of {HOST}:\s+{BACKUPS}/{new[0]}", out), out[-3000:]
    # The same version installed: no backup.
    rc, out, _, _ = playbook("site.yml", "--tags", "open_webui_install")
    assert rc == 0, out[-3000:]
    assert sorted(_backups(host)) == sorted(before + new)
