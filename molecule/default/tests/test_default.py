"""Behaviour of a host converged with site.yml in CPU mode."""

import os
import sys
from pathlib import Path

import pytest

HOST = "llm-default"
testinfra_hosts = [f"podman://{HOST}"]

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(REPO / "tests" / "helpers"))
import host_http  # noqa: E402  the tests' one HTTP helper


def test_proxy_ca_is_trusted_by_the_system_store(host):
    # The base role pushed this machine's proxy CA: TLS to PyPI through the proxy verifies.
    status, _, err = host_http.request(HOST, "https://pypi.org/simple/pip/", timeout=30)
    assert status == 200, err


def test_debian_sources_enable_non_free_components(host):
    sources = host.file("/etc/apt/sources.list.d/debian.sources")
    assert sources.contains("Components: main contrib non-free non-free-firmware")
    assert not host.file("/etc/apt/sources.list").exists


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
