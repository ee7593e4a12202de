"""Behaviour of a host converged with site.yml in CPU mode."""

import os
from pathlib import Path

import pytest

HOST = "llm-default"
testinfra_hosts = [f"podman://{HOST}"]

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))


def test_proxy_ca_is_trusted_by_the_system_store(host):
    # The base role pushed this machine's CAs (a TLS proxy's, say) into the system store. The host is air-gapped
    # here (test_offline.py), so the store is read, not used: molecule/fleet's hosts reach PyPI through it.
    store = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    assert cas, "this machine trusts no extra CA (base_extra_ca_certificates of the demo inventory)"
    for ca in cas:
        body = "".join(ca.read_text().split("-----")[2].split())
        assert body[:200] in "".join(store.split()), f"{ca.name} is not in the host's CA store"


@pytest.mark.parametrize("path,mode", [("/opt/llm", 0o755), ("/var/lib/llm", 0o755), ("/etc/llm", 0o750)])
def test_bundle_directories(host, path, mode):
    d = host.file(path)
    assert d.is_directory
    assert d.group == "llm"
    assert d.mode == mode


def test_model_staging_left_no_partial_downloads(host):
    # model_store fetches into model_store_root/.partial/<name> and removes it once every file is in place.
    assert host.file("/var/lib/llm/models").is_directory
    assert not host.file("/var/lib/llm/models/.partial").exists
