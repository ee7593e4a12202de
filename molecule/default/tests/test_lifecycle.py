"""Lifecycle (README "Backups and restore"): site.yml backs up Open WebUI's data before it changes Open WebUI's
version (its migrations only go forward). The backup/restore round trip and the uninstall are in test_faults.py,
where the interrupted runs re-install the host."""

import os
import re
import sys
from pathlib import Path

HOST = os.environ.get("LLM_FRONT_HOST", "llm-default")
testinfra_hosts = [f"podman://{HOST}"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_faults import BACKUPS, _backups, playbook  # noqa: E402  the fault suite's helpers

SITE_PACKAGES = "/opt/llm/open-webui/lib/python3.11/site-packages"


def test_site_backs_up_before_open_webuis_version_changes(host):
    # The venv made to look like an older Open WebUI (its dist-info renamed; the install stamp is untouched, so
    # the venv itself is not rebuilt): the install step backs up first, naming the version it installs. (The same
    # version backs up nothing: molecule's idempotence run would show a change.)
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
    assert re.search(rf"Backup of {HOST}:\s+{BACKUPS}/{re.escape(new[0])}", out), out[-3000:]
