"""Behaviour of a host converged with site.yml in CPU mode."""

import pytest

testinfra_hosts = ["podman://llm-default"]


def test_proxy_ca_is_trusted_by_the_system_store(host):
    # The base role pushed this machine's proxy CA: TLS to PyPI through the proxy verifies.
    cmd = host.run("python3 -c \"import urllib.request; print(urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=30).status)\"")
    assert cmd.rc == 0, cmd.stderr
    assert cmd.stdout.strip() == "200"


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
