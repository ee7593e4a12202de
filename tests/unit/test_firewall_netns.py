"""The firewall role's table with real traffic, in two network namespaces joined by a veth pair.

A "server" namespace loads the rendered table with `nft -f` (as nftables.service does) and listens on
SSH, HTTP, HTTPS, a peer-only port and a port the firewall never opens; a "client" namespace with an
allowed and a foreign address on each of IPv4 and IPv6 connects to each. IPv6 only works when
neighbour discovery passes the input chain. The molecule scenario's reader of `nft -j` output
(molecule/default/tests/test_firewall.py) is checked against the same loaded ruleset here.

Needs root, `ip` (iproute2) and `nft` on PATH; skipped otherwise (nft is not installed on every
development machine). Nothing outside the two namespaces it creates is touched.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from test_firewall import render

NFT, IP = shutil.which("nft"), shutil.which("ip")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not NFT or not IP,
    reason="needs root, nft and ip (iproute2) to build network namespaces")

SRV, CLI = "llmfw-srv-%d" % os.getpid(), "llmfw-cli-%d" % os.getpid()
SERVER4, ALLOWED4, FOREIGN4 = "10.99.0.1", "10.99.0.2", "10.99.0.3"
SERVER6, ALLOWED6, FOREIGN6 = "fd99::1", "fd99::2", "fd99::3"
UNOPENED = 18080
VARS = {
    "firewall_ssh_from": [ALLOWED4, ALLOWED6],
    "firewall_allow": [{"port": 9100, "proto": "tcp", "from": [ALLOWED4, ALLOWED6], "comment": "peer only"}],
}
PORTS = [22, 80, 443, 9100, UNOPENED]

SERVE = r"""
import socket, sys, threading
def serve(port):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port)); s.listen(16)
    while True:
        s.accept()[0].close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CONNECT = r"""
import json, socket, sys, threading
out = {}
def probe(src, dst, port):
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam); s.settimeout(2); s.bind((src, 0))
    try:
        s.connect((dst, port)); r = "connected"
    except ConnectionRefusedError:
        r = "refused"
    except OSError:
        r = "timeout"
    s.close(); out["%s>%s:%d" % (src, dst, port)] = r
threads = [threading.Thread(target=probe, args=(a, b, int(p))) for a, b, p in json.loads(sys.argv[1])]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(out))
"""


def ns(name, *cmd, **kw):
    return subprocess.run([IP, "netns", "exec", name, *cmd], capture_output=True, text=True, **kw)


def run(*cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, "%s: %s" % (" ".join(cmd), proc.stderr)
    return proc.stdout


def _reader():
    spec = importlib.util.spec_from_file_location(
        "molecule_default_test_firewall", REPO / "molecule/default/tests/test_firewall.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    made = []
    server = None
    try:
        for name in (SRV, CLI):
            run(IP, "netns", "add", name)
            made.append(name)
        run(IP, "link", "add", "llmfw-s", "netns", SRV, "type", "veth", "peer", "name", "llmfw-c",
            "netns", CLI)
        for name, dev, addrs in ((SRV, "llmfw-s", [SERVER4]), (CLI, "llmfw-c", [ALLOWED4, FOREIGN4])):
            for a in addrs:
                run(IP, "-n", name, "addr", "add", a + "/24", "dev", dev)
            for a in {SRV: [SERVER6], CLI: [ALLOWED6, FOREIGN6]}[name]:
                run(IP, "-n", name, "addr", "add", a + "/64", "dev", dev, "nodad")
            run(IP, "-n", name, "link", "set", dev, "up")
            run(IP, "-n", name, "link", "set", "lo", "up")
        server = subprocess.Popen([IP, "netns", "exec", SRV, sys.executable, "-c", SERVE,
                                   *map(str, PORTS)], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        table = tmp_path_factory.mktemp("nft") / "llm-bundle.nft"
        table.write_text(render("llm-bundle.nft.j2", **VARS))
        yield table
    finally:
        if server:
            server.kill()
            server.wait()
        for name in made:
            subprocess.run([IP, "netns", "delete", name], capture_output=True)


def probe(pairs):
    proc = ns(CLI, sys.executable, "-c", CONNECT, json.dumps(pairs), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def load(table):
    proc = ns(SRV, NFT, "-f", str(table))
    assert proc.returncode == 0, proc.stderr


def ruleset():
    proc = ns(SRV, NFT, "-j", "list", "table", "inet", "llm_bundle")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def expected(src, port):
    allowed = src in (ALLOWED4, ALLOWED6)
    return "connected" if port in (80, 443) or (port in (22, 9100) and allowed) else "timeout"


def test_traffic_gets_in_only_where_the_rules_say(lab):
    pairs = [(src, dst, port) for src, dst in ((ALLOWED4, SERVER4), (FOREIGN4, SERVER4),
                                               (ALLOWED6, SERVER6), (FOREIGN6, SERVER6))
             for port in PORTS]
    # Without the firewall every port answers every address: the harness itself works.
    assert set(probe(pairs).values()) == {"connected"}
    load(lab)
    # Forget the neighbours the first round learnt: IPv6 must now find them through the firewall.
    for name in (SRV, CLI):
        run(IP, "-n", name, "neigh", "flush", "all")
    counted_before = _reader().drop_counter(ruleset())
    got = probe(pairs)
    assert got == {"%s>%s:%d" % p: expected(p[0], p[2]) for p in pairs}
    assert _reader().drop_counter(ruleset()) > counted_before


def test_reloading_replaces_only_the_bundle_table(lab):
    load(lab)
    run(IP, "netns", "exec", SRV, NFT, "add", "table", "inet", "someone_else")
    run(IP, "netns", "exec", SRV, NFT, "add", "chain", "inet", "llm_bundle", "stray")
    load(lab)  # the table exists now: "delete table" must not fail, the stray chain must go
    tables = run(IP, "netns", "exec", SRV, NFT, "list", "tables").split("\n")
    assert "table inet someone_else" in tables and "table inet llm_bundle" in tables
    assert "stray" not in {c["name"] for c in _reader().chains(ruleset()).values()}


def test_molecule_reader_of_nft_json_matches_the_variables(lab):
    load(lab)
    reader = _reader()
    values = {**reader.yaml.safe_load((REPO / "roles/firewall/defaults/main.yml").read_text()), **VARS}
    found = reader.accepts(ruleset())
    assert found == reader.expected_accepts(values)
    assert found[("tcp", 22)] == {ALLOWED4, ALLOWED6} and found[("tcp", 443)] is None
    policies = {n: c["policy"] for n, c in reader.chains(ruleset()).items()}
    assert policies == {"input": "drop", "forward": "drop", "output": "accept"}


def test_molecule_reader_sees_a_port_opened_to_everyone(lab):
    # The reader can fail: a rule opening the unopened port shows up in what it returns.
    load(lab)
    run(IP, "netns", "exec", SRV, NFT, "insert", "rule", "inet", "llm_bundle", "input",
        "tcp", "dport", str(UNOPENED), "accept")
    try:
        assert _reader().accepts(ruleset())[("tcp", UNOPENED)] is None
    finally:
        load(lab)
