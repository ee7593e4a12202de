"""Behaviour of a Debian 13 (trixie) host converged with base, python_runtime and nginx."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HOST = "llm-trixie"
testinfra_hosts = [f"podman://{HOST}"]

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(REPO / "tests" / "helpers"))
import host_http  # noqa: E402  the tests' one HTTP helper


def test_host_is_debian_13(host):
    assert host.system_info.distribution == "debian"
    assert host.system_info.codename == "trixie"


def test_debian_sources_are_trixie_with_non_free(host):
    sources = host.file("/etc/apt/sources.list.d/debian.sources")
    assert sources.contains("Suites: trixie trixie-updates")
    assert sources.contains("Suites: trixie-security")
    assert sources.contains("Components: main contrib non-free non-free-firmware")
    # apt reads them: the non-free index of trixie was downloaded.
    assert host.run("ls /var/lib/apt/lists/ | grep -q 'trixie_non-free_binary'").rc == 0


def test_proxy_ca_is_trusted_by_the_system_store(host):
    status, _, err = host_http.request(HOST, "https://pypi.org/simple/pip/", timeout=30)
    assert status == 200, err


@pytest.mark.parametrize("path,mode", [("/opt/llm", 0o755), ("/var/lib/llm", 0o755), ("/etc/llm", 0o750)])
def test_bundle_directories(host, path, mode):
    d = host.file(path)
    assert d.is_directory
    assert d.group == "llm"
    assert d.mode == mode


def test_uv_venv_on_the_distribution_python(host):
    assert host.run("uv --version").stdout.split()[1] == "0.13.9"
    cmd = host.run("/opt/llm/probe/bin/python -c 'import sys, packaging; print(sys.version_info[:2], packaging.__version__)'")
    assert cmd.rc == 0, cmd.stderr
    assert cmd.stdout.strip() == "(3, 13) 25.0"


def test_nginx_serves_tls_and_redirects_http(host):
    assert host.service("nginx").is_running
    assert host.service("nginx").is_enabled
    status, _, err = host_http.request(HOST, "https://127.0.0.1/", options=["insecure"])
    # No Open WebUI on this host: nginx answers 502 over TLS (the handshake and the site work).
    assert status == 502, err
    status, _, headers = host_http.request(HOST, "http://127.0.0.1/")
    assert status == 301
    assert re.search(r"(?im)^location: https://", headers), headers
    _, _, headers = host_http.request(HOST, "https://127.0.0.1/", options=["insecure", "head"])
    headers = headers.lower()
    assert "server: nginx\n" in headers, "server_tokens should hide the version"
    assert "strict-transport-security: max-age=" in headers


def test_no_api_location_without_an_engine(host):
    conf = host.run("nginx -T 2>/dev/null").stdout
    assert "location /v1/" not in conf


def test_nginx_config_has_no_warnings(host):
    # Debian 13 ships nginx 1.26: the site uses `http2 on;` (not the deprecated `listen ... http2`) and
    # sets server_tokens per server (the distribution's nginx.conf sets it at http level).
    with host.sudo():
        check = host.run("nginx -t")
    assert check.rc == 0, check.stderr
    assert "[warn]" not in check.stderr
    assert "[emerg]" not in check.stderr
    conf = host.file("/etc/nginx/conf.d/llm-bundle.conf").content_string
    assert "http2 on;" in conf
    assert "ssl http2" not in conf


def _uninstall(*extra):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    proc = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
                           str(REPO / "playbooks/uninstall.yml"), *extra],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    recap = re.search(rf"^{HOST}\s+:\s+ok=\d+\s+changed=(\d+)", out, re.M)
    return proc.returncode, out, int(recap.group(1)) if recap else None


def _dpkg_state(host, package):
    """dpkg's two-letter state: rc (removed, configuration left); "un" or nothing: neither installed nor left."""
    state = host.run(f"dpkg-query --show --showformat='${{db:Status-Abbrev}}' {package}").stdout.strip()
    return "" if state == "un" else state


def test_uninstall_then_purge_leaves_nothing_of_the_bundle(host):
    # Last: a plain uninstall keeps the data and leaves nginx's configuration (dpkg state rc); the purge after it
    # removes /var/lib/llm, /etc/llm, /var/backups/llm and the configuration the first run left; a second purge
    # changes nothing.
    host.run("mkdir -p /var/backups/llm && touch /var/lib/llm/keep-me /var/backups/llm/keep-me")
    rc, out, changed = _uninstall()
    assert rc == 0 and changed > 0, out[-3000:]
    assert _dpkg_state(host, "nginx") == "" and _dpkg_state(host, "nginx-common") == "rc"
    for kept in ("/var/lib/llm/keep-me", "/etc/llm", "/var/backups/llm/keep-me", "/etc/nginx"):
        assert host.file(kept).exists, kept
    rc, out, changed = _uninstall("-e", "llm_uninstall_purge=true")
    assert rc == 0 and changed > 0, out[-3000:]
    assert re.search(r"Purged:\s+/var/lib/llm,\s+/etc/llm,\s+/var/backups/llm", out), out[-3000:]
    for gone in ("/var/lib/llm", "/etc/llm", "/var/backups/llm", "/opt/llm", "/etc/nginx"):
        assert not host.file(gone).exists, gone
    assert _dpkg_state(host, "nginx-common") == ""
    listening = {line.split()[3].rsplit(":", 1)[1] for line in host.check_output("ss -Htln").splitlines()}
    assert listening <= {"22"}, listening
    rc, out, changed = _uninstall("-e", "llm_uninstall_purge=true")
    assert rc == 0 and changed == 0, f"a second purge changed {changed}:\n{out[-3000:]}"
