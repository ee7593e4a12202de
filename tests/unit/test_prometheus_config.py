"""roles/monitoring's prometheus.yml template, rendered with the jobs the llm_monitoring_jobs filter makes for a single
host and for a fleet's monitoring host, passes Debian 12's `promtool check config` (which also opens the token file a
job names). The role runs the same check on the host before the file replaces the live one."""

import importlib.util
import json
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "monitoring"
_spec = importlib.util.spec_from_file_location("llm_monitoring", REPO / "plugins" / "filter" / "llm_monitoring.py")
llm_monitoring = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(llm_monitoring)


def _render(tmp_path, jobs, probes):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["to_json"] = json.dumps
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    text = env.from_string((ROLE / "templates" / "prometheus.yml.j2").read_text()).render(
        dict(defaults, ansible_managed="test", inventory_hostname="mon1", monitoring_jobs=jobs,
             monitoring_https_probes=probes))
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    return path, yaml.safe_load(text)


def _check(promtool, path):
    proc = subprocess.run([promtool, "check", "config", "--syntax-only", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    full = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    return full


@pytest.fixture()
def files(tmp_path):
    key, ca = tmp_path / "llm-engine.key", tmp_path / "llm-engine-ca.crt"
    key.write_text("k" * 48 + "\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "ca.key"), "-out", str(ca), "-subj", "/CN=fleet CA",
                    "-days", "1"], check=True, capture_output=True)
    return {"engine_key_file": str(key), "node_port": 9100, "nginx_port": 9113, "nginx_log_port": 3903,
            "engine_ca_file": str(ca)}


def test_single_host_config_passes_promtool(promtool, tmp_path, files):
    hv = {"mon1": {"llm_backends": [{"base_url": "http://127.0.0.1:8081/v1"}]}}
    jobs = llm_monitoring.llm_monitoring_jobs(hv, "mon1", files)
    path, config = _render(tmp_path, jobs, [{"url": "https://127.0.0.1:443/health", "host": "mon1",
                                             "server_name": "chat.example.com", "ca_file": "/etc/nginx/tls/server.crt"}])
    full = _check(promtool, path)
    assert full.returncode == 0 and "SUCCESS" in full.stdout, full.stdout + full.stderr
    names = [j["job_name"] for j in config["scrape_configs"]]
    assert names == ["prometheus", "alertmanager", "llm_engine", "node", "nginx", "nginx_log", "blackbox_https"]
    engine = config["scrape_configs"][2]
    assert engine["authorization"] == {"credentials_file": files["engine_key_file"]}
    assert engine["static_configs"] == [{"targets": ["127.0.0.1:8081"], "labels": {"host": "mon1"}}]


def test_fleet_config_passes_promtool_and_scrapes_engines_over_tls(promtool, tmp_path, files):
    peers = [{"name": "a", "address": "10.0.0.1", "engine": True, "front": True, "datastore": True},
             {"name": "b", "address": "10.0.0.2", "engine": True, "front": True, "datastore": False}]
    jobs = llm_monitoring.llm_monitoring_jobs({}, "a", dict(files, peers=peers, engine_port=9443,
                                                            engine_server_name="llm-engine.fleet.internal",
                                                            postgres_port=9187, redis_port=9121))
    probes = [{"url": "https://10.0.0.%d:443/health" % n, "host": h, "server_name": "localhost", "ca_pem": "x"}
              for n, h in ((1, "a"), (2, "b"))]
    path, config = _render(tmp_path, jobs, probes)
    full = _check(promtool, path)
    assert full.returncode == 0 and "SUCCESS" in full.stdout, full.stdout + full.stderr
    # promtool opens the key file a job names (the role writes it first): without it the same file fails.
    Path(files["engine_key_file"]).unlink()
    missing = _check(promtool, path)
    assert missing.returncode != 0 and "llm-engine.key" in missing.stdout + missing.stderr, missing.stdout
    engine = next(j for j in config["scrape_configs"] if j["job_name"] == "llm_engine")
    assert engine["scheme"] == "https"
    assert engine["tls_config"] == {"ca_file": files["engine_ca_file"], "server_name": "llm-engine.fleet.internal"}
    assert [c["targets"][0] for c in engine["static_configs"]] == ["10.0.0.1:9443", "10.0.0.2:9443"]
    blackbox = next(j for j in config["scrape_configs"] if j["job_name"] == "blackbox_https")
    assert [c["labels"]["__param_module"] for c in blackbox["static_configs"]] == ["https_0", "https_1"]
    stores = {j["job_name"]: [c["targets"][0] for c in j["static_configs"]] for j in config["scrape_configs"]
              if j["job_name"] in ("postgresql", "redis")}
    assert stores == {"postgresql": ["10.0.0.1:9187"], "redis": ["10.0.0.1:9121"]}
