"""The fleet layout filters (plugins/filter/llm_fleet.py): groups -> parts, weights, firewall peers."""

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("llm_fleet", REPO / "plugins" / "filter" / "llm_fleet.py")
llm_fleet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(llm_fleet)

PORTS = {"engine": 9443, "postgresql": 5432, "redis": 6379, "vector": 9444}


def _hv(address, plan=None, **extra):
    return {"ansible_facts": {"default_ipv4": {"address": address}}, "llm_plan": plan or {}, **extra}


def test_no_fleet_groups_keeps_every_host_an_island():
    topo = llm_fleet.llm_fleet_topology({"all": ["a", "b"], "llm_hosts": ["a", "b"]}, ["a", "b"])
    assert topo == {"fleet": False, "engines": [], "fronts": [], "datastore": "", "monitoring": "", "errors": []}
    layout = llm_fleet.llm_fleet_layout({}, topo, "a", {})
    assert layout["engine"] and layout["front"] and not layout["datastore"] and not layout["monitoring"]
    assert layout["engines"] == [] and layout["firewall_allow"] == [] and layout["peers"] == []


def test_datastore_defaults_to_the_first_front():
    topo = llm_fleet.llm_fleet_topology({"llm_engines": ["g1", "g2"], "llm_fronts": ["f1", "f2"]},
                                        ["f1", "f2", "g1", "g2"])
    assert topo["fleet"] and topo["datastore"] == "f1" and topo["monitoring"] == "f1" and topo["errors"] == []


def test_monitoring_host_may_be_named_and_is_no_stray():
    topo = llm_fleet.llm_fleet_topology({"llm_engines": ["g1"], "llm_fronts": ["f1"], "llm_monitoring": ["m1"]},
                                        ["f1", "g1", "m1"])
    assert topo["monitoring"] == "m1" and topo["errors"] == []


@pytest.mark.parametrize("groups, hosts, needle", [
    ({"llm_fronts": ["f1"]}, ["f1"], "llm_engines is empty"),
    ({"llm_engines": ["g1"]}, ["g1"], "llm_fronts is empty"),
    ({"llm_engines": ["g1"], "llm_fronts": ["f1"], "llm_datastore": ["d1", "d2"]}, ["g1", "f1", "d1", "d2"],
     "llm_datastore must hold one host"),
    ({"llm_engines": ["g1"], "llm_fronts": ["f1"], "llm_monitoring": ["m1", "m2"]}, ["g1", "f1", "m1", "m2"],
     "llm_monitoring must hold one host (Prometheus and Alertmanager of the fleet), it holds 2: m1, m2"),
    ({"llm_engines": ["g1"], "llm_fronts": ["f1"]}, ["g1", "f1", "stray"], "these are in none: stray"),
])
def test_impossible_layouts_are_named(groups, hosts, needle):
    errors = llm_fleet.llm_fleet_topology(groups, hosts)["errors"]
    assert any(needle in e for e in errors), errors


@pytest.mark.parametrize("plan, weight", [
    ({}, 1),
    ({"kv_cache_tokens": 4096}, 1),
    ({"kv_cache_tokens": 4097}, 2),
    # RTX 3060 12 GB Q4_K_M plan vs an H200's bf16 plan with two data-parallel copies (capped at 100).
    ({"kv_cache_tokens": 32768}, 8),
    ({"kv_cache_tokens": 229376, "data_parallel_size": 2}, 100),
])
def test_gateway_weight_follows_the_kv_cache(plan, weight):
    assert llm_fleet.llm_engine_weight(plan) == weight


def test_layout_of_a_front_engine_and_datastore_host():
    topo = llm_fleet.llm_fleet_topology({"llm_engines": ["a", "b"], "llm_fronts": ["a", "c"]}, ["a", "b", "c"])
    hv = {"a": _hv("10.0.0.1", {"kv_cache_tokens": 8192}),
          "b": _hv("10.0.0.2", {"kv_cache_tokens": 65536}, llm_gateway_weight=3),
          "c": {"llm_private_address": "10.0.1.9", "ansible_facts": {}}}
    a = llm_fleet.llm_fleet_layout(hv, topo, "a", PORTS)
    assert a["address"] == "10.0.0.1" and a["engine"] and a["front"] and a["datastore"]
    assert a["engines"] == [{"name": "a", "address": "10.0.0.1", "port": 9443, "weight": 2},
                            {"name": "b", "address": "10.0.0.2", "port": 9443, "weight": 3}]
    assert a["front_addresses"] == ["10.0.0.1", "10.0.1.9"]
    assert [(r["port"], r["from"]) for r in a["firewall_allow"]] == [
        (9443, ["10.0.0.1", "10.0.1.9"]), (5432, ["10.0.0.1", "10.0.1.9"]), (6379, ["10.0.0.1", "10.0.1.9"]),
        (9444, ["10.0.0.1", "10.0.1.9"])]
    b = llm_fleet.llm_fleet_layout(hv, topo, "b", PORTS)
    assert not b["front"] and b["engines"] == [] and b["datastore_address"] == "10.0.0.1"
    assert [r["port"] for r in b["firewall_allow"]] == [9443]
    c = llm_fleet.llm_fleet_layout(hv, topo, "c", PORTS)
    assert c["address"] == "10.0.1.9" and not c["engine"] and c["firewall_allow"] == []


def test_monitored_fleet_opens_exporters_and_engines_to_the_monitoring_host_only():
    # Monitoring host m (own host), front f, engine g; exporters on 9100, 9113 and 3903.
    topo = llm_fleet.llm_fleet_topology({"llm_engines": ["g"], "llm_fronts": ["f"], "llm_monitoring": ["m"]},
                                        ["f", "g", "m"])
    hv = {"f": _hv("10.0.0.1"), "g": _hv("10.0.0.2"), "m": _hv("10.0.0.3")}
    ports = dict(PORTS, exporters=[9100, 9113, 3903], datastore_exporters=[9187, 9121])
    g = llm_fleet.llm_fleet_layout(hv, topo, "g", ports)
    assert g["engine_clients"] == ["10.0.0.1", "10.0.0.3"] and g["monitoring_address"] == "10.0.0.3"
    assert [(r["port"], r["from"]) for r in g["firewall_allow"]] == [
        (9443, ["10.0.0.1", "10.0.0.3"]), (9100, ["10.0.0.3"]), (9113, ["10.0.0.3"]), (3903, ["10.0.0.3"])]
    assert not g["monitoring"] and g["peers"] == []
    # The datastore (the first front, f) also opens its PostgreSQL and Redis exporters to the monitoring host.
    f = llm_fleet.llm_fleet_layout(hv, topo, "f", ports)
    assert [(r["port"], r["from"]) for r in f["firewall_allow"]][-5:] == [
        (9100, ["10.0.0.3"]), (9113, ["10.0.0.3"]), (3903, ["10.0.0.3"]), (9187, ["10.0.0.3"]), (9121, ["10.0.0.3"])]
    m = llm_fleet.llm_fleet_layout(hv, topo, "m", ports)
    assert m["monitoring"] and m["peers"] == [
        {"name": "g", "address": "10.0.0.2", "engine": True, "front": False, "datastore": False},
        {"name": "f", "address": "10.0.0.1", "engine": False, "front": True, "datastore": True},
        {"name": "m", "address": "10.0.0.3", "engine": False, "front": False, "datastore": False}]
    # Monitoring off (no exporter ports): the engines stay the fronts' alone, nobody gets peers.
    off = llm_fleet.llm_fleet_layout(hv, topo, "g", PORTS)
    assert off["engine_clients"] == ["10.0.0.1"] and off["monitoring_address"] == ""
    assert [r["port"] for r in off["firewall_allow"]] == [9443]
    assert llm_fleet.llm_fleet_layout(hv, topo, "m", PORTS)["peers"] == []


def test_a_host_without_an_address_is_named():
    topo = llm_fleet.llm_fleet_topology({"llm_engines": ["a"], "llm_fronts": ["a"]}, ["a"])
    with pytest.raises(ValueError, match="set llm_private_address for it"):
        llm_fleet.llm_fleet_layout({"a": {"ansible_facts": {}}}, topo, "a", PORTS)


def _migrating_front(expression, seed, tmp_path):
    """Which host the fleet's migration expression (playbooks/tasks/fleet.yml) names, rendered by Ansible in a
    process with PYTHONHASHSEED=seed (Python's set order follows the string hashes)."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    ansible = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    hosts = ["llm-fleet-a", "llm-fleet-b", "llm-engine-c"]
    play = tmp_path / ("play-%d.yml" % seed)
    expr = expression.replace("ansible_play_hosts_all", "play_hosts_in_order")
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "vars": {
        "play_hosts_in_order": hosts, "llm_topology": {"fronts": ["llm-fleet-b", "llm-fleet-a"]}},
        "tasks": [{"ansible.builtin.debug": {"msg": "FIRST=" + expr}}]}]))
    env = dict(os.environ, PYTHONHASHSEED=str(seed), ANSIBLE_NOCOLOR="1", ANSIBLE_CACHE_PLUGIN="memory",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "t"))
    out = subprocess.run([ansible, "-i", "localhost,", "-c", "local", str(play)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return re.search(r"FIRST=([\w-]+)", out.stdout).group(1)


def test_the_first_front_of_the_play_migrates_whatever_the_hash_seed(tmp_path):
    # The first front of the first batch migrates Open WebUI's database; every other front starts with
    # ENABLE_DB_MIGRATIONS=False. `intersect` returns a set's order: with it, the first batch's front was told
    # not to migrate in about half the runs, and Open WebUI crashed on a database without tables.
    import yaml
    tasks = yaml.safe_load((REPO / "playbooks" / "tasks" / "fleet.yml").read_text())
    block = next(t for t in tasks if "block" in t and t.get("when") == "llm_fleet_layout.front")
    facts = next(t for t in block["block"] if "llm_fleet_migrations" in t.get("ansible.builtin.set_fact", {}))
    expression = facts["ansible.builtin.set_fact"]["llm_fleet_migrations"]
    inner = expression.strip()[2:-2].split("==", 1)[1].strip()
    for seed in (1, 2, 3, 4):
        assert _migrating_front("{{ " + inner + " }}", seed, tmp_path) == "llm-fleet-a", seed
    # The old expression, for the record: some seed picks llm-fleet-b.
    old = "{{ (ansible_play_hosts_all | intersect(llm_topology.fronts) | first) }}"
    assert {_migrating_front(old, seed, tmp_path) for seed in (1, 2, 3, 4)} == {"llm-fleet-a", "llm-fleet-b"}
