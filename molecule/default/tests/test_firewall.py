"""The host firewall (roles/firewall) on a host converged with site.yml.

The ruleset is read back as nftables JSON (`nft -j`) and compared with what the role's defaults and this
scenario's host_vars ask for: input policy drop, exactly the expected ports accepted, each from exactly the
expected peers. Then real traffic from this machine through podman's published ports: 443 gets in, a port a
process listens on but the firewall does not open (18080, published as 127.0.0.1:2481) does not, and the
firewall's own drop counter sees it.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

HOST = os.environ.get("LLM_FRONT_HOST", "llm-default")
testinfra_hosts = [f"podman://{HOST}"]

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
SCENARIO = Path(__file__).resolve().parents[1]
TABLE = "llm_bundle"
PROBE_PORT = 18080  # listened on by the test, never opened by the firewall; molecule.yml publishes it
PROBE_UNIT = "llm-firewall-probe"


def firewall_vars() -> dict:
    """The role's defaults with this scenario's host_vars over them (what the converge used)."""
    values = yaml.safe_load((REPO / "roles/firewall/defaults/main.yml").read_text())
    host_vars = SCENARIO / "host_vars" / f"{HOST}.yml"
    if host_vars.exists():
        values.update({k: v for k, v in (yaml.safe_load(host_vars.read_text()) or {}).items()
                       if k.startswith("firewall_")})
    return values


def expected_accepts(v: dict) -> dict:
    """{(proto, port): frozenset of sources, or None for everyone} the variables ask for."""
    out = {("tcp", v["firewall_ssh_port"]): frozenset(v["firewall_ssh_from"]) or None,
           ("tcp", v["firewall_http_port"]): None, ("tcp", v["firewall_https_port"]): None,
           ("udp", 546): frozenset({"fe80::/10"})}  # DHCPv6 replies from the link's server
    for rule in v["firewall_allow"]:
        out[(rule.get("proto") or "tcp", rule["port"])] = frozenset(rule["from"])
    return out


# --- reading `nft -j` ---------------------------------------------------------------------------------------

def _values(right) -> list:
    """The values a match compares with: a set's elements, a prefix as a/len, a plain value."""
    if isinstance(right, dict) and "set" in right:
        return [x for item in right["set"] for x in _values(item)]
    if isinstance(right, dict) and "prefix" in right:
        return [f'{right["prefix"]["addr"]}/{right["prefix"]["len"]}']
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return [f"{low}-{high}"]
    return [right]


def chains(ruleset: dict) -> dict:
    """{chain name: chain object} of the bundle's table."""
    return {item["chain"]["name"]: item["chain"] for item in ruleset["nftables"]
            if "chain" in item and item["chain"]["table"] == TABLE}


def rules(ruleset: dict, chain: str) -> list:
    return [item["rule"] for item in ruleset["nftables"]
            if "rule" in item and item["rule"]["table"] == TABLE and item["rule"]["chain"] == chain]


def accepts(ruleset: dict) -> dict:
    """{(proto, port): frozenset of sources, or None for everyone} of the input chain's port rules.

    A rule counts when it ends in accept and matches a tcp/udp destination port; its `ip saddr` / `ip6 saddr`
    matches are its sources (the same port may appear in an IPv4 and an IPv6 rule: the sources add up). A port
    accepted from everyone by one rule and from some peers by another is reported as everyone.
    """
    out = {}
    for rule in rules(ruleset, "input"):
        exprs = rule["expr"]
        if not exprs or "accept" not in exprs[-1]:
            continue
        ports, proto, sources = [], None, None
        for expr in exprs:
            match = expr.get("match")
            if not match or "payload" not in match["left"]:
                continue
            payload = match["left"]["payload"]
            if payload.get("field") == "dport" and payload.get("protocol") in ("tcp", "udp"):
                proto, ports = payload["protocol"], _values(match["right"])
            elif payload.get("field") == "saddr" and payload.get("protocol") in ("ip", "ip6"):
                sources = set(sources or ()) | set(_values(match["right"]))
        for port in ports:
            key = (proto, port)
            if sources is None or (key in out and out[key] is None):
                out[key] = None
            else:
                out[key] = frozenset(out.get(key) or ()) | frozenset(sources)
    return out


def drop_counter(ruleset: dict) -> int:
    """Packets the input chain's last rule (the counter before the drop policy) has seen."""
    last = rules(ruleset, "input")[-1]
    counters = [e["counter"] for e in last["expr"] if "counter" in e]
    assert counters and last.get("comment") == "dropped by the policy", last
    return counters[0]["packets"]


def ruleset(host) -> dict:
    import json

    return json.loads(host.check_output(f"nft -j list table inet {TABLE}"))


# --- the ruleset --------------------------------------------------------------------------------------------

def test_nftables_is_enabled_and_active(host):
    service = host.service("nftables")
    assert service.is_enabled
    assert host.run("systemctl is-active nftables").stdout.strip() == "active"


def test_policies_input_and_forward_drop_output_accepts(host):
    found = {name: (c.get("hook"), c.get("policy")) for name, c in chains(ruleset(host)).items()}
    assert found == {"input": ("input", "drop"),
                     "forward": ("forward", firewall_vars()["firewall_forward_policy"]),
                     "output": ("output", "accept")}


def test_accepted_ports_and_peers_are_exactly_the_configured_ones(host):
    assert accepts(ruleset(host)) == expected_accepts(firewall_vars())


def test_scenario_exercises_restricted_peers():
    # The host_vars restrict SSH and add a peer-only port; otherwise the comparison above proves less.
    v = firewall_vars()
    assert v["firewall_ssh_from"] and v["firewall_allow"]


def test_return_traffic_loopback_and_neighbour_discovery_are_accepted(host):
    text = host.check_output(f"nft list chain inet {TABLE} input")
    assert "ct state established,related accept" in text
    assert 'iif "lo" accept' in text
    for kind in ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert", "packet-too-big"):
        assert kind in text


def test_nftables_conf_flushes_nothing_and_includes_the_bundle_table(host):
    conf = host.file("/etc/nftables.conf").content_string
    statements = [line.strip() for line in conf.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert not any("flush ruleset" in line for line in statements), statements
    assert 'include "/etc/nftables.d/*.nft"' in statements
    assert host.file("/etc/nftables.d/llm-bundle.nft").exists


@pytest.mark.parametrize("action", ["reload", "restart"])
def test_other_tables_survive_a_reload_and_a_restart(host, action):
    """podman's (and anybody's) tables must outlive the bundle's reloads and nftables restarts."""
    host.check_output("nft add table inet llm_test_other")
    try:
        host.check_output(f"systemctl {action} nftables")
        assert host.run("nft list table inet llm_test_other").rc == 0, f"{action} removed another table"
        assert host.run(f"nft list table inet {TABLE}").rc == 0, f"the bundle's table is gone after {action}"
    finally:
        host.run("nft delete table inet llm_test_other")


# --- real traffic through the published ports ---------------------------------------------------------------

def _published(port: int):
    out = subprocess.run(["podman", "port", HOST, f"{port}/tcp"], capture_output=True, text=True).stdout.split()
    return out[0].rsplit(":", 1) if out else None


def _connect(address: str, port: int, timeout: float = 3.0) -> str:
    """connected, refused or timeout (a dropped SYN)."""
    try:
        with socket.create_connection((address, int(port)), timeout=timeout):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"


@pytest.fixture
def probe_listener(host):
    """A process listening on PROBE_PORT on every address of the host, stopped afterwards."""
    host.run(f"systemctl stop {PROBE_UNIT}")
    host.check_output(f"systemd-run --unit={PROBE_UNIT} --quiet python3 -m http.server {PROBE_PORT} --bind 0.0.0.0")
    try:
        for _ in range(30):
            if host.socket(f"tcp://0.0.0.0:{PROBE_PORT}").is_listening:
                break
            time.sleep(1)
        else:
            pytest.fail(f"python3 -m http.server never listened on {PROBE_PORT}")
        yield
    finally:
        host.run(f"systemctl stop {PROBE_UNIT}")


def test_published_https_gets_in_but_an_unopened_listening_port_is_dropped(host, probe_listener):
    rootless = subprocess.run(["podman", "info", "--format", "{{.Host.Security.Rootless}}"],
                              capture_output=True, text=True).stdout.strip()
    if rootless == "true":
        pytest.skip("rootless podman forwards published ports from inside the container (loopback)")
    https, probe = _published(443), _published(PROBE_PORT)
    assert https and probe, "molecule.yml publishes 443 and %d" % PROBE_PORT
    # The listener answers on the host itself (loopback is accepted): what blocks it below is the firewall.
    inside = host.run(f"python3 -c \"import urllib.request; print(urllib.request.urlopen("
                      f"'http://127.0.0.1:{PROBE_PORT}/', timeout=10).status)\"")
    assert inside.stdout.strip() == "200", inside.stderr
    before = drop_counter(ruleset(host))
    assert _connect(*https) == "connected"
    assert _connect(*probe) == "timeout", f"port {PROBE_PORT} is reachable from outside the host"
    assert drop_counter(ruleset(host)) > before, "the bundle's table did not count the dropped SYN"
