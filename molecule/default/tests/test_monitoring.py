"""Monitoring of a single host (README "Monitoring"): Prometheus, Alertmanager, the blackbox exporter, node-exporter
and nginx-exporter on the host's loopback, scraping the engine's /metrics with the engine key.

- every scrape target answers (engine, node, nginx, blackbox probe of the HTTPS site, Prometheus, Alertmanager);
- a chat through nginx moves the engine's counter as Prometheus reads it;
- `systemctl stop` of the engine: LlmEngineDown is active in Alertmanager within the rule's `for:` plus two scrape
  intervals (and a rule evaluation), and leaves it after the engine is started again;
- no monitoring port answers from outside the host; the engine key is in a file for Prometheus only.
"""

import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

HOST = os.environ.get("LLM_FRONT_HOST", "llm-default")
testinfra_hosts = [f"podman://{HOST}"]

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(REPO / "tests" / "helpers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_faults import curl, seconds, wait_serving  # noqa: E402  the fault suite's helpers

import host_http  # noqa: E402  the tests' one HTTP helper

PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
RULES = "/etc/prometheus/rules/llm-alerts.rules.yml"  # as deployed: monitoring_alert_for may change a `for:`
# Loopback ports of the monitoring stack: Prometheus, Alertmanager, blackbox, node-exporter, nginx-exporter,
# nginx's stub_status, mtail.
PORTS = (9090, 9093, 9115, 9100, 9113, 8091, 3903)


def prom(path):
    status, body = host_http.request_json(HOST, PROMETHEUS + path, timeout=30)
    assert status == 200, body
    return body["data"]


def query(expr):
    """The instant vector of a PromQL expression: {host label: value}."""
    return {r["metric"].get("host", ""): float(r["value"][1])
            for r in prom("/api/v1/query?query=" + quote(expr))["result"]}


def scrape_interval(host):
    text = host.file("/etc/prometheus/prometheus.yml").content_string
    return seconds(re.search(r"^\s+scrape_interval:\s*(\S+)", text, re.M).group(1))


def active_alerts(name):
    status, body = host_http.request(HOST, ALERTMANAGER + "/api/v2/alerts?active=true&silenced=false", timeout=30)[:2]
    assert status == 200, body
    return [a for a in json.loads(body) if a["labels"].get("alertname") == name]


def test_every_target_is_scraped(host):
    want = {"llm_engine", "node", "nginx", "nginx_log", "blackbox_https", "prometheus", "alertmanager"}
    deadline = time.time() + 4 * scrape_interval(host) + 30
    while True:
        targets = prom("/api/v1/targets?state=active")["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if set(health) >= want and all(h == "up" for h in health.values()) or time.time() > deadline:
            break
        time.sleep(3)
    assert set(health) >= want, f"jobs scraped: {sorted(health)}"
    assert all(h == "up" for h in health.values()), [(t["labels"]["job"], t["lastError"]) for t in targets
                                                      if t["health"] != "up"]
    assert all(t["labels"].get("host") == HOST for t in targets), [t["labels"] for t in targets]
    # The blackbox probe went all the way through nginx's TLS, and sees the certificate's expiry.
    assert query('probe_success{job="blackbox_https"}') == {HOST: 1.0}
    days = (query('probe_ssl_earliest_cert_expiry{job="blackbox_https"}')[HOST] - time.time()) / 86400
    assert 14 < days < 830, days
    # The plan's figures and nginx's counters are there for the rules.
    assert query("llm_plan_queue_threshold")[HOST] >= 1
    assert query("nginx_up") == {HOST: 1.0}


def test_a_chat_moves_the_engine_counter(host, api_key):
    expr = 'sum by (host) ({__name__=~"llamacpp:tokens_predicted_total|vllm:generation_tokens_total"})'
    before = query(expr).get(HOST)
    assert before is not None, "no token counter of the engine in Prometheus"
    model = json.loads(curl("/v1/models", headers={"Authorization": f"Bearer {api_key}"})[1])["data"][0]["id"]
    status, text = curl("/v1/chat/completions", "POST", headers={"Authorization": f"Bearer {api_key}"},
                        body={"model": model, "max_tokens": 8,
                              "messages": [{"role": "user", "content": "Count to five."}]}, timeout=120)
    assert status == 200, text[:300]
    deadline = time.time() + 3 * scrape_interval(host) + 10
    after = before
    while after <= before and time.time() < deadline:
        time.sleep(3)
        after = query(expr).get(HOST, before)
    assert after > before, f"the engine's token counter stayed at {before} after a chat"


def test_engine_down_alert_fires_and_resolves(host, engine, api_key, engine_base):
    rules = yaml.safe_load(host.file(RULES).content_string)
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "LlmEngineDown")
    budget = seconds(rule["for"].replace("m", "min")) + 2 * scrape_interval(host) + 30  # + one evaluation
    assert active_alerts("LlmEngineDown") == []
    assert host.run(f"systemctl stop {engine}").rc == 0
    try:
        start = time.time()
        while not active_alerts("LlmEngineDown") and time.time() - start < budget:
            time.sleep(5)
        fired = time.time() - start
        alerts = active_alerts("LlmEngineDown")
        assert alerts, f"LlmEngineDown not active in Alertmanager {budget:.0f} s after the engine stopped"
        assert alerts[0]["labels"]["host"] == HOST and alerts[0]["labels"]["severity"] == "critical"
        assert "runbook" in alerts[0]["annotations"]
        print(f"LlmEngineDown active {fired:.0f} s after systemctl stop (budget {budget:.0f} s)")
    finally:
        assert host.run(f"systemctl start {engine}").rc == 0
    wait_serving(api_key, engine_base, 600, f"{engine} after systemctl start")
    start = time.time()
    while active_alerts("LlmEngineDown") and time.time() - start < 2 * scrape_interval(host) + 60:
        time.sleep(5)
    assert active_alerts("LlmEngineDown") == [], "LlmEngineDown still active after the engine serves again"


def test_monitoring_listens_on_loopback_only(host):
    listening = host.check_output("ss -Htln")
    for port in PORTS:
        addresses = re.findall(rf"^\S+\s+\d+\s+\d+\s+(\S+):{port}\s", listening, re.M)
        assert addresses == ["127.0.0.1"], f"port {port}: {addresses}"
    # And from outside the host (this machine, over the podman network): nothing answers.
    address = host.check_output("hostname -I").split()[0]
    for port in PORTS:
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((address, port)) != 0, f"{address}:{port} answers from outside the host"


def test_engine_key_is_for_prometheus_only(host, api_key):
    key = host.file("/etc/prometheus/llm-engine.key")
    assert (key.user, key.group, key.mode) == ("root", "prometheus", 0o640)
    assert key.content_string.strip() == api_key
    config = host.file("/etc/prometheus/prometheus.yml").content_string
    assert api_key not in config and "credentials_file: \"/etc/prometheus/llm-engine.key\"" in config
    assert api_key not in host.check_output("cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '")


@pytest.mark.parametrize("unit, user", [("prometheus", "prometheus"), ("prometheus-alertmanager", "prometheus"),
                                        ("prometheus-blackbox-exporter", "prometheus"),
                                        ("prometheus-node-exporter", "prometheus"),
                                        ("prometheus-nginx-exporter", "prometheus"), ("mtail", "mtail")])
def test_monitoring_units_run_as_their_users(host, unit, user):
    assert host.service(unit).is_running and host.service(unit).is_enabled
    assert host.check_output(f"systemctl show -p User --value {unit}") == user


def test_nginx_status_codes_reach_prometheus(host):
    # mtail counts the HTTPS site's access log by status (LlmHttp5xx's series): two API calls without the key raise
    # the 401 count as Prometheus reads it.
    expr = 'sum(llm_nginx_responses_total{job="nginx_log",status="401"})'
    before = query(expr).get("", 0.0)
    for _ in range(2):
        status = host_http.request(HOST, "https://localhost/v1/chat/completions", timeout=30, options=["insecure"],
                                   body={"model": "x", "messages": [{"role": "user", "content": "x"}]})[0]
        assert status == 401, status
    deadline = time.time() + 3 * scrape_interval(host) + 15
    while query(expr).get("", 0.0) < before + 2 and time.time() < deadline:
        time.sleep(3)
    assert query(expr).get("", 0.0) >= before + 2, (before, query(expr))


def test_prometheus_and_alertmanager_uis_need_the_login(host):
    # Through nginx's HTTPS site only (README "Monitoring"): /prometheus/ and /alertmanager/ ask for the login whose
    # password was generated on the controller; the host keeps its hash alone, readable by nginx.
    import base64
    password = (REPO / ".secrets" / HOST / "monitoring-web").read_text().strip()
    assert oct((REPO / ".secrets" / HOST / "monitoring-web").stat().st_mode & 0o777) == "0o600"
    login = host.file("/etc/nginx/llm-monitoring.htpasswd")
    assert (login.user, login.group, login.mode) == ("root", "www-data", 0o640)
    assert login.content_string.startswith("monitoring:$6$") and password not in login.content_string

    def get(path, user="monitoring", secret=password):
        headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()} if user else {}
        return host_http.request(HOST, "https://localhost" + path, headers=headers, timeout=30,
                                 cacert="/etc/nginx/tls/server.crt")[:2]

    for path in ("/prometheus/-/ready", "/alertmanager/-/ready", "/prometheus/api/v1/alerts"):
        assert get(path, user="")[0] == 401, path
        assert get(path, secret=password + "x")[0] == 401, path
        status, body = get(path)
        assert status == 200, (path, body)
    # The UI (Debian's Prometheus ships the classic one): /prometheus/ leads to it, its links keep the prefix
    # (Prometheus knows its external URL).
    status, page = get("/prometheus/")
    assert status == 302, (status, page[:300])
    status, page = get("/prometheus/classic/graph")
    assert status == 200 and "<title>Prometheus" in page, page[:300]
    assert 'src="/prometheus/classic/static/' in page, page[:1000]
    flags = json.loads(get("/prometheus/api/v1/status/flags")[1])["data"]
    assert flags["web.external-url"] == "https://localhost/prometheus/", flags["web.external-url"]
    status, body = get("/alertmanager/api/v2/status")
    assert status == 200 and json.loads(body)["config"]["original"], body[:300]


def test_prometheus_alert_page_in_a_browser(host):
    # What an operator sees: Prometheus' alert page through nginx's /prometheus/ in a real browser (Debian's chromium),
    # signed in with the monitoring login: its scripts and API calls work under the prefix and list the bundle's rules.
    # Screenshot: .cache/reports/prometheus-alerts.png (roles/monitoring/prometheus-alerts.png in the README).
    import shutil
    import subprocess

    from playwright.sync_api import sync_playwright

    ports = subprocess.run(["podman", "port", HOST, "443/tcp"], capture_output=True, text=True).stdout.split()
    assert ports, f"{HOST} publishes no HTTPS port (molecule.yml published_ports)"
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (make host-packages)"
    password = (REPO / ".secrets" / HOST / "monitoring-web").read_text().strip()
    shots = REPO / ".cache" / "reports"
    shots.mkdir(parents=True, exist_ok=True)
    url = f"https://localhost:{ports[0].rsplit(':', 1)[1]}/prometheus/classic/alerts"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            # (Without credentials Chromium stops at the 401 with ERR_INVALID_AUTH_CREDENTIALS; the 401 itself is
            # checked over curl in test_prometheus_and_alertmanager_uis_need_the_login.)
            page = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 1000},
                                       http_credentials={"username": "monitoring", "password": password}).new_page()
            page.set_default_timeout(60_000)
            assert page.goto(url, wait_until="networkidle").status == 200
            page.get_by_text("LlmEngineDown").first.wait_for()
            shown = page.locator("body").inner_text()
            page.screenshot(path=str(shots / "prometheus-alerts.png"), full_page=False)
        finally:
            browser.close()
    rules = re.findall(r"^\s+- alert: (\w+)", host.file(RULES).content_string, re.M)
    assert rules and all(rule in shown for rule in rules), [r for r in rules if r not in shown]
