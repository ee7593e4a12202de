"""The firewall role: its preflight module, its nftables table as rendered, and site.yml's preflight.

The table file is rendered like the template module does (Jinja with trim_blocks and Ansible's
tests) for several variable sets; the rules are read back from the text and compared with what
the variables ask for. Where `nft` is installed and may talk to the kernel, `nft -c -f` checks
each rendering too (root with CAP_NET_ADMIN; skipped otherwise).
"""

import re
import shutil
import subprocess

import jinja2
import pytest
import yaml
from ansible.plugins.test.core import TestModule as AnsibleTests

import firewall_check
from conftest import REPO

ROLE = REPO / "roles" / "firewall"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
ROLE_VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
TEMPLATE_VARS = {"ansible_managed": "Ansible managed", "_firewall_table": ROLE_VARS["_firewall_table"],
                 "_firewall_include_dir": ROLE_VARS["_firewall_include_dir"]}


# --- the preflight module ----------------------------------------------------------------------

def check(ssh_port=22, ssh_from=(), allow=(), check_client=True, env=None):
    return firewall_check.check(ssh_port, list(ssh_from), list(allow), check_client, env or {})


def test_no_ssh_session_checks_only_the_variables():
    assert check(ssh_from=["10.0.0.0/8"]) == {"client": "", "client_port": 0, "covered": None}


def test_controller_inside_the_ssh_networks_passes():
    env = {"SSH_CONNECTION": "10.1.2.3 50000 10.9.9.9 22"}
    assert check(ssh_from=["192.0.2.0/24", "10.0.0.0/8"], env=env) == \
        {"client": "10.1.2.3", "client_port": 22, "covered": True}


def test_empty_ssh_list_covers_every_controller():
    env = {"SSH_CLIENT": "2001:db8::7 50000 22"}
    assert check(env=env)["covered"] is True


def test_controller_outside_the_ssh_networks_is_refused_with_the_fix():
    env = {"SSH_CONNECTION": "198.51.100.4 50000 10.9.9.9 22"}
    with pytest.raises(firewall_check.CheckError) as err:
        check(ssh_from=["10.0.0.0/8", "2001:db8::/32"], env=env)
    assert str(err.value).startswith(
        "the controller connects from 198.51.100.4, which is not in firewall_ssh_from "
        "(10.0.0.0/8, 2001:db8::/32): the firewall would lock it out. Add 198.51.100.4")


def test_ipv4_controller_is_not_covered_by_an_ipv6_network_and_vice_versa():
    with pytest.raises(firewall_check.CheckError):
        check(ssh_from=["::/0"], env={"SSH_CLIENT": "10.1.2.3 50000 22"})
    with pytest.raises(firewall_check.CheckError):
        check(ssh_from=["0.0.0.0/0"], env={"SSH_CLIENT": "2001:db8::1 50000 22"})


def test_ipv4_mapped_controller_address_counts_as_ipv4():
    env = {"SSH_CLIENT": "::ffff:10.1.2.3 50000 22"}
    assert check(ssh_from=["10.0.0.0/8"], env=env)["client"] == "10.1.2.3"


def test_controller_on_another_port_is_refused():
    env = {"SSH_CONNECTION": "10.1.2.3 50000 10.9.9.9 2222"}
    with pytest.raises(firewall_check.CheckError) as err:
        check(ssh_port=22, env=env)
    assert "reaches SSH on port 2222 of this host but firewall_ssh_port is 22" in str(err.value)
    assert check(ssh_port=2222, env=env)["covered"] is True


def test_lockout_check_can_be_turned_off_but_still_reports():
    env = {"SSH_CONNECTION": "198.51.100.4 50000 10.9.9.9 2222"}
    assert check(ssh_from=["10.0.0.0/8"], check_client=False, env=env) == \
        {"client": "198.51.100.4", "client_port": 2222, "covered": False}


@pytest.mark.parametrize("ssh_from,needle", [
    (["10.0.0.300/8"], "firewall_ssh_from: '10.0.0.300/8' is not an IPv4 or IPv6 address or network"),
    (["10.0.0.1/8"], "firewall_ssh_from: '10.0.0.1/8' has host bits set: write 10.0.0.0/8"),
    (["10.0.0.0/8", "10.1.0.0/16"], "firewall_ssh_from: 10.0.0.0/8 and 10.1.0.0/16 overlap"),
    (["2001:db8::/32", "2001:db8::1"], "firewall_ssh_from: 2001:db8::/32 and 2001:db8::1/128 overlap"),
    (["example.org"], "firewall_ssh_from: 'example.org' is not an IPv4 or IPv6 address"),
])
def test_bad_ssh_networks_are_named(ssh_from, needle):
    with pytest.raises(firewall_check.CheckError) as err:
        check(ssh_from=ssh_from)
    assert needle in str(err.value)


@pytest.mark.parametrize("rule,needle", [
    ({"port": 0, "from": ["10.0.0.0/8"]}, "firewall_allow[1]: port must be 1-65535, got 0"),
    ({"port": 9100, "proto": "sctp", "from": ["10.0.0.0/8"]}, "proto must be tcp or udp"),
    ({"port": 9100, "from": []}, "firewall_allow[1] (port 9100): from must list at least one"),
    ({"port": 9100}, "from must list at least one"),
    ({"port": 9100, "from": ["10.0.0.0/33"]}, "firewall_allow[1] (port 9100) from: '10.0.0.0/33'"),
    ({"port": 9100, "from": ["10.0.0.0/8"], "comment": 'say "hi"'}, "without double quotes"),
    ({"port": 9100, "from": ["10.0.0.0/8"], "comment": "x" * 129}, "at most 128 bytes"),
])
def test_bad_allow_entries_are_named(rule, needle):
    good = {"port": 9100, "proto": "tcp", "from": ["10.0.0.0/8"], "comment": "node exporter"}
    with pytest.raises(firewall_check.CheckError) as err:
        check(allow=[good, rule])
    assert needle in str(err.value)


def test_module_reads_the_ssh_session_from_its_environment(run_module, monkeypatch):
    monkeypatch.setenv("SSH_CONNECTION", "192.0.2.9 41000 192.0.2.1 22")
    monkeypatch.delenv("SSH_CLIENT", raising=False)
    out = run_module(firewall_check, {"ssh_port": 22, "ssh_from": ["192.0.2.0/24"]})
    assert (out["changed"], out["client"], out["covered"]) == (False, "192.0.2.9", True)
    out = run_module(firewall_check, {"ssh_port": 22, "ssh_from": ["10.0.0.0/8"]})
    assert out["failed"] is True
    assert "192.0.2.9, which is not in firewall_ssh_from" in out["msg"]


# --- the rendered table ------------------------------------------------------------------------

def render(name: str, **overrides) -> str:
    """Render like the template module: trim_blocks, Ansible's tests, undefined names fail."""
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.tests.update(AnsibleTests().tests())
    variables = {**DEFAULTS, **TEMPLATE_VARS, **overrides}
    return env.from_string((ROLE / "templates" / name).read_text()).render(**variables)


def chain(text: str, name: str) -> list:
    """The statements of one chain of the bundle's table (comments and blank lines dropped)."""
    body = re.search(r"^\tchain %s \{\n(.*?)^\t\}" % name, text, re.M | re.S)
    assert body, "no chain %s" % name
    return [line.strip() for line in body.group(1).splitlines()
            if line.strip() and not line.strip().startswith("#")]


def accepted(text: str) -> dict:
    """{(proto, port): sources} of the input chain's port rules; sources None = from anywhere."""
    out = {}
    for line in chain(text, "input"):
        m = re.fullmatch(r'(?:(ip6?) saddr (\{ [^}]+ \}|\S+) )?(tcp|udp)(?: sport \d+ \3)? dport '
                         r'(\{ [^}]+ \}|\d+) accept(?: comment "[^"]*")?', line)
        if not m:
            continue
        family, sources, proto, ports = m.groups()
        for port in re.findall(r"\d+", ports):
            entry = out.setdefault((proto, int(port)), set() if sources else None)
            if sources:
                assert entry is not None, "port %s is open to everyone and restricted" % port
                entry.update(re.findall(r"[0-9a-fA-F:.]+(?:/\d+)?", sources))
    return out


#: Variable sets rendered (and checked by nft where it can run).
CASES = {
    "defaults": {},
    "restricted": {
        "firewall_ssh_port": 2222,
        "firewall_ssh_from": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"],
        "firewall_http_port": 8080, "firewall_https_port": 8443,
        "firewall_allow": [
            {"port": 9100, "proto": "tcp", "from": ["10.0.0.0/8", "fd00::/8"], "comment": "node exporter"},
            {"port": 8125, "proto": "udp", "from": ["2001:db8::/32"]},
        ],
        "firewall_forward_policy": "accept",
    },
    "same_web_ports": {"firewall_http_port": 443, "firewall_https_port": 443},
}


def test_defaults_open_ssh_http_https_to_everyone_and_nothing_else():
    text = render("llm-bundle.nft.j2")
    assert accepted(text) == {("tcp", 22): None, ("tcp", 80): None, ("tcp", 443): None,
                              ("udp", 546): {"fe80::/10"}}
    assert chain(text, "input")[0] == "type filter hook input priority filter; policy drop;"
    assert chain(text, "forward") == ["type filter hook forward priority filter; policy drop;"]
    assert chain(text, "output") == ["type filter hook output priority filter; policy accept;"]


def test_restricted_variables_give_exactly_the_listed_peers():
    text = render("llm-bundle.nft.j2", **CASES["restricted"])
    assert accepted(text) == {
        ("tcp", 2222): {"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"},
        ("tcp", 8080): None, ("tcp", 8443): None,
        ("tcp", 9100): {"10.0.0.0/8", "fd00::/8"},
        ("udp", 8125): {"2001:db8::/32"},
        ("udp", 546): {"fe80::/10"},
    }
    rules = chain(text, "input")
    # IPv4 sources only in `ip saddr`, IPv6 only in `ip6 saddr`, the comment kept.
    assert 'ip saddr { 10.0.0.0/8, 192.0.2.7 } tcp dport 2222 accept comment "SSH"' in rules
    assert 'ip6 saddr { 2001:db8::/32 } tcp dport 2222 accept comment "SSH"' in rules
    assert 'ip6 saddr { fd00::/8 } tcp dport 9100 accept comment "node exporter"' in rules
    assert 'ip6 saddr { 2001:db8::/32 } udp dport 8125 accept comment "firewall_allow 8125/udp"' in rules
    assert not [r for r in rules if r.startswith("ip saddr") and "8125" in r]
    assert chain(text, "forward") == ["type filter hook forward priority filter; policy accept;"]


def test_one_web_port_is_listed_once():
    assert 'tcp dport { 443 } accept comment "HTTP, HTTPS (nginx)"' in \
        chain(render("llm-bundle.nft.j2", **CASES["same_web_ports"]), "input")


def test_input_chain_keeps_return_traffic_loopback_and_neighbour_discovery():
    rules = chain(render("llm-bundle.nft.j2"), "input")
    assert rules[1:4] == ["ct state established,related accept", "ct state invalid drop",
                          'iif "lo" accept']
    icmpv6 = next(r for r in rules if r.startswith("icmpv6 type"))
    for kind in ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert", "packet-too-big"):
        assert kind in icmpv6
    assert rules[-1] == 'counter comment "dropped by the policy"'


def test_table_file_replaces_only_its_own_table():
    text = render("llm-bundle.nft.j2")
    statements = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    table = TEMPLATE_VARS["_firewall_table"]
    assert statements[:3] == ["table inet %s" % table, "delete table inet %s" % table,
                              "table inet %s {" % table]
    assert "flush ruleset" not in statements and not [s for s in statements if s.startswith("flush")]


def test_nftables_conf_includes_the_folder_and_flushes_nothing():
    text = render("nftables.conf.j2")
    statements = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert statements == ['include "%s/*.nft"' % TEMPLATE_VARS["_firewall_include_dir"]]


def test_the_rule_reader_sees_a_rule_that_widens_access():
    # Guards the reader itself: an extra open port must change what it returns.
    text = render("llm-bundle.nft.j2").replace(
        'accept comment "SSH"', 'accept comment "SSH"\n\t\ttcp dport 18080 accept')
    assert ("tcp", 18080) in accepted(text)


def _nft_can_check():
    nft = shutil.which("nft")
    if not nft:
        return None
    probe = subprocess.run([nft, "-c", "-f", "-"], input="table inet llm_probe\n",
                           capture_output=True, text=True)
    return nft if probe.returncode == 0 else None


NFT = _nft_can_check()


@pytest.mark.skipif(NFT is None, reason="nft is not installed or may not talk to the kernel here")
@pytest.mark.parametrize("case", sorted(CASES))
def test_nft_accepts_the_rendered_table(tmp_path, case):
    path = tmp_path / ("%s.nft" % case)
    path.write_text(render("llm-bundle.nft.j2", **CASES[case]))
    proc = subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(NFT is None, reason="nft is not installed or may not talk to the kernel here")
def test_nft_refuses_a_broken_rendering(tmp_path):
    # The check can fail: an unknown ICMPv6 type makes nft refuse the file.
    path = tmp_path / "broken.nft"
    path.write_text(render("llm-bundle.nft.j2").replace("nd-neighbor-solicit", "nd-neighbour-solicit"))
    assert subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True).returncode != 0


# --- site.yml: the preflight play stops a lockout before any host is touched ---------------------

def test_site_preflight_stops_when_the_controller_would_be_locked_out(tmp_path, monkeypatch):
    from test_site_preflight import PLAYBOOK, _offline_model, _site

    if PLAYBOOK is None:
        pytest.skip("ansible-playbook not installed")
    model = _offline_model(tmp_path)  # preflight sizes the model: no Hub from here
    # The local connection hands this process's environment to the module: it stands for the
    # SSH session a remote host would see.
    monkeypatch.setenv("SSH_CONNECTION", "198.51.100.4 50000 192.0.2.1 22")
    rc, out = _site(tmp_path, '{"firewall_ssh_from": ["10.0.0.0/8"]}', tags="preflight")
    assert rc != 0, out
    assert "the controller connects from 198.51.100.4, which is not in firewall_ssh_from" in out, out
    assert "PLAY [Deploy the LLM stack]" not in out, out
    rc, out = _site(tmp_path, model, '{"firewall_ssh_from": ["198.51.100.0/24"]}', tags="preflight")
    assert rc == 0, out
    assert "PLAY [Deploy the LLM stack]" in out, out


def test_site_preflight_names_a_bad_allow_entry(tmp_path, monkeypatch):
    from test_site_preflight import PLAYBOOK, _site

    if PLAYBOOK is None:
        pytest.skip("ansible-playbook not installed")
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.delenv("SSH_CLIENT", raising=False)
    rc, out = _site(tmp_path, '{"firewall_allow": [{"port": 9100, "from": ["10.0.0.1/8"]}]}',
                    tags="preflight")
    assert rc != 0, out
    assert "firewall_allow[0] (port 9100) from: '10.0.0.1/8' has host bits set: write 10.0.0.0/8" in out, out
    assert "PLAY [Deploy the LLM stack]" not in out, out
