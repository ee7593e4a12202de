"""The scrape jobs of a host that monitors itself (plugins/filter/llm_monitoring.py)."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("llm_monitoring", REPO / "plugins" / "filter" / "llm_monitoring.py")
llm_monitoring = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(llm_monitoring)

SETTINGS = {"engine_key_file": "/etc/prometheus/llm-engine.key", "node_port": 9100, "nginx_port": 9113,
            "nginx_log_port": 3903}


def test_llamacpp_host_scrapes_its_engine_node_and_nginx_on_loopback():
    hv = {"web1": {"llm_backends": [{"name": "llamacpp", "base_url": "http://127.0.0.1:8081/v1"}]}}
    assert llm_monitoring.llm_monitoring_jobs(hv, "web1", SETTINGS) == [
        {"name": "llm_engine", "scheme": "http", "metrics_path": "/metrics",
         "bearer_token_file": "/etc/prometheus/llm-engine.key",
         "targets": [{"address": "127.0.0.1:8081", "host": "web1"}]},
        {"name": "node", "targets": [{"address": "127.0.0.1:9100", "host": "web1"}]},
        {"name": "nginx", "targets": [{"address": "127.0.0.1:9113", "host": "web1"}]},
        {"name": "nginx_log", "targets": [{"address": "127.0.0.1:3903", "host": "web1"}]},
    ]


def test_engine_port_follows_the_base_url_and_nginx_exporter_can_be_off():
    hv = {"gpu1": {"llm_backends": [{"base_url": "http://[::1]:8000/v1"}]}}
    jobs = llm_monitoring.llm_monitoring_jobs(hv, "gpu1", dict(SETTINGS, nginx_port=0, nginx_log_port=0))
    assert [j["name"] for j in jobs] == ["llm_engine", "node"]
    assert jobs[0]["targets"] == [{"address": "[::1]:8000", "host": "gpu1"}]


@pytest.mark.parametrize("backends, needle", [
    ([], "gpu1 has no engine (llm_backends is empty)"),
    ([{"base_url": "unix:/run/engine.sock"}], "is not an http(s) URL"),
])
def test_a_host_without_a_usable_engine_url_is_named(backends, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        llm_monitoring.llm_monitoring_jobs({"gpu1": {"llm_backends": backends}}, "gpu1", SETTINGS)


def test_check_mode_without_a_registered_engine_leaves_the_engine_job_out():
    jobs = llm_monitoring.llm_monitoring_jobs({"web1": {}}, "web1", dict(SETTINGS, require_engine=False))
    assert [j["name"] for j in jobs] == ["node", "nginx", "nginx_log"]


FLEET = dict(SETTINGS, engine_port=9443, engine_ca_file="/etc/prometheus/llm-fleet-ca.crt",
             engine_server_name="llm-engine.fleet.internal")


def test_fleet_monitoring_host_scrapes_every_host_on_its_private_address():
    # llm_fleet_layout.peers of the monitoring host: a front+engine, an engine only, the datastore (no engine).
    peers = [{"name": "a", "address": "10.0.0.1", "engine": True, "front": True, "datastore": False},
             {"name": "g", "address": "fd00::7", "engine": True, "front": False, "datastore": False},
             {"name": "d", "address": "10.0.0.9", "engine": False, "front": False, "datastore": True}]
    # The monitoring host's own llm_backends (its loopback engine) do not matter in a fleet.
    hv = {"a": {"llm_backends": [{"base_url": "http://127.0.0.1:8081/v1"}]}}
    settings = dict(FLEET, peers=peers, postgres_port=9187, redis_port=9121)
    assert llm_monitoring.llm_monitoring_jobs(hv, "a", settings) == [
        {"name": "llm_engine", "scheme": "https", "metrics_path": "/metrics",
         "bearer_token_file": "/etc/prometheus/llm-engine.key", "ca_file": "/etc/prometheus/llm-fleet-ca.crt",
         "server_name": "llm-engine.fleet.internal",
         "targets": [{"address": "10.0.0.1:9443", "host": "a"}, {"address": "[fd00::7]:9443", "host": "g"}]},
        {"name": "node", "targets": [{"address": "10.0.0.1:9100", "host": "a"},
                                     {"address": "[fd00::7]:9100", "host": "g"},
                                     {"address": "10.0.0.9:9100", "host": "d"}]},
        {"name": "nginx", "targets": [{"address": "10.0.0.1:9113", "host": "a"},
                                      {"address": "[fd00::7]:9113", "host": "g"},
                                      {"address": "10.0.0.9:9113", "host": "d"}]},
        {"name": "nginx_log", "targets": [{"address": "10.0.0.1:3903", "host": "a"},
                                          {"address": "[fd00::7]:3903", "host": "g"},
                                          {"address": "10.0.0.9:3903", "host": "d"}]},
        {"name": "postgresql", "targets": [{"address": "10.0.0.9:9187", "host": "d"}]},
        {"name": "redis", "targets": [{"address": "10.0.0.9:9121", "host": "d"}]},
    ]
