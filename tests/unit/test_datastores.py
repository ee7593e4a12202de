"""plugins/filter/llm_datastores.py: PostgreSQL's tuning formula and the peer networks of pg_hba.conf.

The formula (roles/postgresql/README.md, "Tuning"):
    shared_buffers_mb       = memtotal_mb // 16, within 128 .. 8192
    effective_cache_size_mb = max(memtotal_mb // 4, 512)
    max_connections         = max(replicas * 30 + 20, 100)
"""

import pytest
from llm_datastores import llm_networks, llm_postgresql_tuning


def test_16_gb_host_with_one_replica():
    # memtotal_mb of a 16 GB machine as Linux reports it (the kernel keeps some for itself).
    assert llm_postgresql_tuning(15995, 1) == {
        "shared_buffers_mb": 999, "effective_cache_size_mb": 3998, "max_connections": 100}


def test_128_gib_host_with_four_replicas():
    assert llm_postgresql_tuning(128824, 4) == {
        "shared_buffers_mb": 8051, "effective_cache_size_mb": 32206, "max_connections": 140}


def test_large_host_and_fleet_hit_the_cap_and_grow_connections():
    assert llm_postgresql_tuning(515000, 10) == {
        "shared_buffers_mb": 8192, "effective_cache_size_mb": 128750, "max_connections": 320}


def test_small_host_keeps_postgresql_minimums():
    # A 1 GB test container: PostgreSQL's default 128 MB buffers, the 512 MB planner floor.
    assert llm_postgresql_tuning(1024, "2") == {
        "shared_buffers_mb": 128, "effective_cache_size_mb": 512, "max_connections": 100}


@pytest.mark.parametrize("memory,replicas,needle", [
    (0, 1, "ansible_facts['memtotal_mb'] must be at least 1, got 0"),
    ("lots", 1, "ansible_facts['memtotal_mb'] must be a whole number of at least 1, got 'lots'"),
    (16000, 0, "postgresql_open_webui_replicas must be at least 1, got 0"),
    (16000, True, "postgresql_open_webui_replicas must be a whole number of at least 1, got True"),
])
def test_bad_inputs_name_the_variable(memory, replicas, needle):
    with pytest.raises(ValueError) as err:
        llm_postgresql_tuning(memory, replicas)
    assert needle in str(err.value)


def test_peers_become_cidr_networks_for_pg_hba():
    assert llm_networks(["10.0.0.7", "10.0.1.0/24", "fd00::7", "[fd00::8]", "fd00:1::/64"]) == [
        "10.0.0.7/32", "10.0.1.0/24", "fd00::7/128", "fd00::8/128", "fd00:1::/64"]
    assert llm_networks([]) == [] and llm_networks(None) == []


@pytest.mark.parametrize("bad", ["10.0.0.1/24", "db.example.com", "10.0.0.0/33"])
def test_peer_that_is_no_network_is_refused(bad):
    with pytest.raises(ValueError) as err:
        llm_networks([bad])
    assert repr(bad) in str(err.value)
