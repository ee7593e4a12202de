"""The Grafana dashboards of roles/monitoring (files/grafana/*.json, written by tests/docs/grafana_dashboards.py):
the committed files are the generator's output, every query is PromQL that promtool accepts (as a recording rule,
with Grafana's variables filled in), every series they read is one the bundle collects, and the datasource is the
one the role provisions."""

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "roles" / "monitoring" / "files" / "grafana"
DASHBOARDS = ("llm-fleet.json", "llm-host.json")
_spec = importlib.util.spec_from_file_location("grafana_dashboards", REPO / "tests" / "docs" / "grafana_dashboards.py")
generator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generator)

# What the bundle's jobs collect (README "Monitoring"): the engines, the GPU collector, node-exporter, mtail, the
# blackbox probe and Prometheus' own up.
KNOWN = re.compile(r"^(vllm:|llamacpp:|llm_gpu_|llm_plan_|node_|probe_|llm_nginx_responses_total$|up$)")
FUNCTIONS = {"sum", "max", "min", "count", "rate", "increase", "histogram_quantile", "time", "or", "and", "unless"}


def _exprs(name):
    board = json.loads((FOLDER / name).read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def test_committed_dashboards_are_the_generators_output(tmp_path):
    generator.main(tmp_path)
    for name in DASHBOARDS:
        assert (tmp_path / name).read_text() == (FOLDER / name).read_text(), (
            "%s drifted: run python3 tests/docs/grafana_dashboards.py" % name)


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_query_is_promql(name, promtool, tmp_path):
    exprs = [e.replace("$__rate_interval", "1m").replace("$host", "llm-host-1") for e in _exprs(name)]
    assert len(exprs) >= 15
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": "dashboard:query_%d" % i, "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: %d rules found" % len(exprs) in proc.stdout


@pytest.mark.parametrize("name", DASHBOARDS)
def test_queries_read_only_series_the_bundle_collects(name):
    seen = set()
    for expr in _exprs(name):
        body = re.sub(r"\{[^}]*\}", "", expr)                    # label matchers
        body = re.sub(r"\b(by|on)\s*\([^)]*\)", "", body)        # grouping labels
        body = re.sub(r"\[[^\]]*\]", "", body)                    # ranges
        series = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", body)) - FUNCTIONS
        unknown = sorted(n for n in series if not KNOWN.match(n))
        assert series and unknown == [], (expr, unknown)
        seen |= series
    # The engines of both kinds, the GPU collector, nginx's status codes and the probe are all on the board.
    for needle in ("vllm:kv_cache_usage_perc", "llamacpp:tokens_predicted_total", "llm_gpu_memory_used_bytes",
                   "llm_nginx_responses_total", "probe_ssl_earliest_cert_expiry", "node_filesystem_avail_bytes"):
        assert needle in seen, needle


def test_per_host_dashboard_selects_one_host_and_fleet_every_host():
    host = json.loads((FOLDER / "llm-host.json").read_text())
    fleet = json.loads((FOLDER / "llm-fleet.json").read_text())
    assert [v["name"] for v in host["templating"]["list"]] == ["host"]
    assert all('host="$host"' in e for e in _exprs("llm-host.json"))
    assert fleet["templating"]["list"] == [] and not any("$host" in e for e in _exprs("llm-fleet.json"))
    assert {host["uid"], fleet["uid"]} == {"llm-host", "llm-fleet"}


def test_dashboards_use_the_provisioned_datasource():
    provisioned = yaml.safe_load((REPO / "roles" / "monitoring" / "templates" / "grafana-datasource.yml.j2")
                                 .read_text().replace("{{ monitoring_prometheus_port }}", "9090"))
    uid = provisioned["datasources"][0]["uid"]
    for name in DASHBOARDS:
        board = json.loads((FOLDER / name).read_text())
        assert {p["datasource"]["uid"] for p in board["panels"]} == {uid}
