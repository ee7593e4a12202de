"""Air-gapped host (issue: offline bundle; README "Air-gapped hosts"): molecule/default's host sits on an INTERNAL
podman network (tests/testhost/offline-network.sh: no masquerade, no default route; only the controller reaches it,
over SSH and the loopback-published ports) and converges site.yml with llm_offline: true from the bundle made by
playbooks/offline-bundle.yml (make setup: $LLM_BUNDLE_CACHE/offline-bundle-molecule).

Proof that nothing tried to leave: the host's DNS server is the controller's address on that network, where the chain
LLM-OFFLINE counts (and rejects) every connection the host starts; its counter must still be 0 after the converge,
the idempotence run and every other check of the scenario (this module runs last, conftest.py). The host's journal and
Ansible's log of every run must hold no failed name lookup or unreachable network either.
"""

import hashlib
import os
import re
import subprocess
from pathlib import Path

from test_front import HOST, REPO

testinfra_hosts = [f"podman://{HOST}"]

BUNDLE = Path(os.environ.get("LLM_BUNDLE_CACHE", "/var/cache/llm-bundle")) / "offline-bundle-molecule"
# A name lookup or a route out that failed (the fault suite's own failures, a download breaking on the host's loopback,
# are not of this kind).
FAILED_LOOKUP = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Could not resolve host|Network is unreachable"
    r"|No address associated with hostname|getaddrinfo failed|dns error",
    re.IGNORECASE,
)


def attempts():
    """Connections the host started since the scenario's prepare step (counted on the controller)."""
    return int(subprocess.run(["bash", str(REPO / "tests/testhost/offline-network.sh"), "attempts"],
                              capture_output=True, text=True, check=True).stdout.strip())


# First in this module: the checks below make lookups of their own.
def test_nothing_tried_to_leave(host):
    assert attempts() == 0, f"the host started {attempts()} connection(s) towards the outside (kernel log: llm-offline attempt)"
    journal = host.check_output("journalctl --no-pager -o cat | LC_ALL=C tr -cd '\\11\\12\\40-\\176'")
    assert not FAILED_LOOKUP.findall(journal), [line for line in journal.splitlines() if FAILED_LOOKUP.search(line)][:10]
    log_path = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "ansible.log"
    if log_path.exists():
        log = log_path.read_text(errors="replace")
        assert "llm_offline" in log or "offline" in log
        assert not FAILED_LOOKUP.search(log), [line for line in log.splitlines() if FAILED_LOOKUP.search(line)][:10]


def test_host_has_no_route_out(host):
    routes = host.check_output("ip -4 route")
    assert "default" not in routes, routes
    # The Debian archive and the package index: neither a name nor a route. The lookup is an attempt the controller
    # counts (the count above can see one).
    before = attempts()
    assert host.run("getent hosts deb.debian.org").rc != 0
    assert attempts() > before
    probe = host.run("timeout 20 python3 -c \"import socket; socket.create_connection(('151.101.0.223', 443), 5)\"")
    assert probe.rc != 0 and "unreachable" in probe.stderr.lower(), probe.stderr


def test_apt_uses_only_the_bundle(host):
    sources = host.check_output("ls /etc/apt/sources.list.d/; test ! -e /etc/apt/sources.list && echo no-sources-list")
    assert sources.split() == ["llm-offline.sources", "no-sources-list"], sources
    policy = host.check_output("apt-cache policy nginx")
    assert "file:/opt/llm/offline/debs ./" in policy, policy
    assert "deb.debian.org" not in policy
    # The repository's signature is checked with the bundle's own key: apt reads it without complaint.
    update = host.run("apt-get -o Debug::NoLocking=1 update")
    assert update.rc == 0 and "W:" not in update.stdout + update.stderr, update.stdout + update.stderr
    pushed = host.file("/opt/llm/offline/debs/.llm-pushed").content_string.strip()
    assert pushed == subprocess.run(["sha256sum", str(BUNDLE / "debs" / "InRelease")], capture_output=True,
                                    text=True, check=True).stdout.split()[0]


def test_venvs_and_models_came_from_the_bundle(host):
    listing = host.file("/opt/llm/wheelhouse/.llm-wheelhouse-listing").content_string.split("\n")
    wheels = sorted(p.name for p in (BUNDLE / "wheels").iterdir() if p.name.endswith(".whl"))
    assert sorted(line.split()[0] for line in listing if line.strip()) == wheels
    for name in ("open-webui", "uv"):
        assert host.file(f"/opt/llm/{name}").is_directory
    # model_store's marker names what it staged: the bundle's folders (controller source, their SHA256SUMS).
    for bundle_dir, host_dir in (("tiny-qwen2.5-instruct-gguf", "tiny-qwen2.5-instruct-gguf"),
                                 ("adapters/tiny-lora-gguf", "adapters/tiny-lora"),
                                 ("embeddings/tiny-embed", "embeddings/tiny-embed")):
        sums = (BUNDLE / "models" / bundle_dir / "SHA256SUMS").read_text().rstrip("\n")
        marker = host.file(f"/var/lib/llm/models/{host_dir}/.model_store-staged").content_string.strip()
        assert marker == "controller " + hashlib.sha256(sums.encode()).hexdigest(), (host_dir, marker)
