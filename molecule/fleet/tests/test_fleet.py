"""A fleet of two hosts (molecule/fleet): both engines and fronts, PostgreSQL, Redis and Chroma on the first."""

import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import pytest
import testinfra

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(REPO / "tests" / "helpers"))
import host_http  # noqa: E402  the tests' one HTTP helper
from fake_release import console_release  # noqa: E402  test releases that die at start

A, B = "llm-fleet-a", "llm-fleet-b"
HOSTS = {name: testinfra.get_host(f"podman://{name}") for name in (A, B)}
testinfra_hosts = [f"podman://{A}"]  # the checks pick their hosts themselves
MODEL = "tiny-qwen2.5-instruct"
ENDPOINT_PORT = 9443
VECTOR_PORT = 9444
GATEWAY = "http://127.0.0.1:8090"
KEY_FILE = "/etc/llm/llamacpp.key"
ENV_FILE = "/etc/llm/open-webui/open-webui.env"


def _address(name):
    return HOSTS[name].check_output("ip -4 -o route get 1.1.1.1 | sed -E 's/.* src ([0-9.]+).*/\\1/'").strip()


@pytest.fixture(scope="module")
def api_key():
    keys = {}
    for name, h in HOSTS.items():
        with h.sudo():
            keys[name] = h.file(KEY_FILE).content_string.strip()
    assert keys[A] == keys[B], "the engines of a fleet share one API key"
    return keys[A]


def _metric(name, metric="llamacpp:requests_processing"):
    """One counter of an engine's /metrics, read on the engine host over loopback."""
    h = HOSTS[name]
    with h.sudo():
        key = h.file(KEY_FILE).content_string.strip()
    status, text, _ = host_http.request(name, "http://127.0.0.1:8081/metrics",
                                        headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(metric + " ") or line.startswith(metric + "{"):
            return float(line.split()[-1])
    raise AssertionError(f"{metric} not in /metrics of {name}: {text[:500]}")


def _chat(front, key, headers=None, max_tokens=4):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": max_tokens}
    all_headers = {"Authorization": f"Bearer {key}", **(headers or {})}
    return host_http.request(front, GATEWAY + "/v1/chat/completions", headers=all_headers, body=body, timeout=120)


def test_hosts_reach_the_index_through_the_trusted_proxy_ca_and_use_debians_sources():
    # Online hosts (molecule/default's is air-gapped): the base role pushed this machine's proxy CA, so TLS to PyPI
    # through the proxy verifies; apt's sources are Debian's with the components the bundle needs.
    for name, host in HOSTS.items():
        status, _, err = host_http.request(name, "https://pypi.org/simple/pip/", timeout=30)
        assert status == 200, (name, err)
        sources = host.file("/etc/apt/sources.list.d/debian.sources")
        assert sources.contains("Components: main contrib non-free non-free-firmware"), name
        assert not host.file("/etc/apt/sources.list").exists, name
        assert not host.file("/etc/apt/sources.list.d/llm-offline.sources").exists, name


def test_requests_through_a_front_reach_both_engines(api_key):
    counter = "llamacpp:prompt_tokens_total"
    before = {n: _metric(n, counter) for n in HOSTS}
    for _ in range(24):
        status, text, _ = _chat(A, api_key)
        assert status == 200, text
    after = {n: _metric(n, counter) for n in HOSTS}
    assert all(after[n] > before[n] for n in HOSTS), (before, after)


def test_a_conversation_sticks_to_one_engine(api_key):
    counter = "llamacpp:prompt_tokens_total"
    for front in (A, B):
        conversation = str(uuid.uuid4())
        before = {n: _metric(n, counter) for n in HOSTS}
        for _ in range(8):
            status, text, _ = _chat(front, api_key, headers={"X-OpenWebUI-Chat-Id": conversation})
            assert status == 200, text
        after = {n: _metric(n, counter) for n in HOSTS}
        moved = [n for n in HOSTS if after[n] > before[n]]
        assert len(moved) == 1, (front, before, after)


def test_the_public_api_is_balanced_too(api_key):
    # Through nginx's HTTPS site of the second front, as an API client would call it.
    status, text, _ = host_http.request(B, "https://127.0.0.1/v1/chat/completions",
                                        headers={"Authorization": f"Bearer {api_key}"},
                                        body={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                              "max_tokens": 2}, timeout=120, options=["insecure"])
    assert status == 200, text


def test_engines_listen_on_the_private_address_with_tls_only():
    for name, h in HOSTS.items():
        addr = _address(name)
        sockets = h.check_output("ss -Htln")
        assert f"{addr}:{ENDPOINT_PORT}" in sockets, sockets
        assert "127.0.0.1:8081" in sockets and "0.0.0.0:8081" not in sockets, sockets


def test_engines_refuse_the_front_without_tls_or_key(api_key):
    target = _address(B)
    a = HOSTS[A]
    # Plain HTTP to the TLS endpoint: nginx refuses it.
    plain = a.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 http://{target}:{ENDPOINT_PORT}/v1/models")
    assert plain.stdout.strip() == "400", plain.stdout
    ca = "/etc/nginx/tls/fleet-ca.crt"
    tls = (f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 30 --cacert {ca} "
           f"--resolve llm-engine.fleet.internal:{ENDPOINT_PORT}:{target} "
           f"https://llm-engine.fleet.internal:{ENDPOINT_PORT}/v1/chat/completions "
           "-H 'Content-Type: application/json' "
           f"-d '{json.dumps({'model': MODEL, 'messages': [{'role': 'user', 'content': 'x'}], 'max_tokens': 1})}'")
    # TLS verified against the fleet CA, no key: the engine refuses it.
    no_key = a.run(tls)
    assert no_key.stdout.strip() == "401", no_key.stdout + no_key.stderr
    # The certificate is the fleet CA's: a client that trusts only the public CAs (Debian's Mozilla bundle, without
    # the fleet CA the fronts' base role adds to the system store) refuses it.
    # --capath to an empty folder: curl would also read the system's hashed /etc/ssl/certs.
    public = "cat /usr/share/ca-certificates/mozilla/*.crt > /tmp/public-cas.pem && mkdir -p /tmp/no-capath && "
    untrusted = a.run(public + tls.replace(f"--cacert {ca} ", "--cacert /tmp/public-cas.pem --capath /tmp/no-capath "))
    assert untrusted.rc == 60, untrusted.stdout + untrusted.stderr


def _from_here(commands):
    """Runs commands on this machine at once (each a probe that must time out); returns their CompletedProcess."""
    import subprocess
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    done = []
    for command, proc in zip(commands, procs):
        out, err = proc.communicate()
        done.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return done


def _curl(url, seconds=5):
    return ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", str(seconds), url]


def _from_host(name, urls, seconds=5):
    """curl's exit status for each URL, from the fleet host `name`, all at once."""
    script = " ".join(f"(curl -s -o /dev/null --max-time {seconds} {u}; echo \"$? {u}\") &" for u in urls) + " wait"
    out = HOSTS[name].run(script).stdout
    return {u: int(line.split()[0]) for line in out.splitlines() for u in urls if line.split()[1:] == [u]}


def test_engines_refuse_anything_but_the_fronts():
    # This machine (the podman bridge's gateway address) is no front: the engine hosts' firewalls drop it. The
    # probes run at once, each must time out (curl exit 28, no HTTP status).
    a = _address(A)
    probes = [_curl(f"https://{_address(name)}:{ENDPOINT_PORT}/health") for name in HOSTS]
    probes.append(_curl(f"https://{a}:{VECTOR_PORT}/api/v2/heartbeat"))  # the vector store
    probes.append(["timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{a}/5432"])  # PostgreSQL
    *https, db = _from_here(probes)
    for out in https:
        assert out.stdout.strip() == "000" and out.returncode == 28, out
    assert db.returncode != 0, "PostgreSQL must be closed to non-fronts"


PROMETHEUS = "http://127.0.0.1:9090"
EXPORTER_PORTS = (9100, 9113, 3903)  # node-exporter, nginx-exporter, mtail
DATASTORE_EXPORTER_PORTS = (9187, 9121)  # PostgreSQL's and Redis' exporters, on the datastore host (A)


def _prom(path):
    status, body = host_http.request_json(A, PROMETHEUS + path, timeout=30)
    assert status == 200, body
    return body["data"]


def test_the_monitoring_host_scrapes_every_host_of_the_fleet():
    # llm-fleet-a is the monitoring host (group llm_monitoring defaults to the first front): every job has a target
    # per fleet host, each up - the engines' /metrics through their TLS endpoints with the key, the exporters on the
    # private addresses, the blackbox probe of each front's HTTPS site.
    want = {("llm_engine", A), ("llm_engine", B), ("node", A), ("node", B), ("nginx", A), ("nginx", B),
            ("nginx_log", A), ("nginx_log", B), ("blackbox_https", A), ("blackbox_https", B), ("prometheus", A),
            ("alertmanager", A), ("postgresql", A), ("redis", A)}
    deadline = time.time() + 120
    while True:
        targets = _prom("/api/v1/targets?state=active")["activeTargets"]
        health = {(t["labels"]["job"], t["labels"].get("host")): t["health"] for t in targets}
        if set(health) == want and all(v == "up" for v in health.values()) or time.time() > deadline:
            break
        time.sleep(5)
    assert set(health) == want, sorted(health)
    assert all(v == "up" for v in health.values()), [(t["labels"], t["lastError"]) for t in targets
                                                      if t["health"] != "up"]
    engines = {t["labels"]["host"]: t["scrapeUrl"] for t in targets if t["labels"]["job"] == "llm_engine"}
    assert engines == {n: f"https://{_address(n)}:{ENDPOINT_PORT}/metrics" for n in HOSTS}, engines
    # The engines' own counters, as Prometheus has them: both engines served the chats of the tests above.
    result = _prom("/api/v1/query?query=" + "llamacpp%3Aprompt_tokens_total")["result"]
    served = {r["metric"]["host"]: float(r["value"][1]) for r in result}
    assert set(served) == set(HOSTS) and all(v > 0 for v in served.values()), served
    # The datastore's exporters reach PostgreSQL (peer authentication) and Redis (the monitoring ACL user).
    for up in ("pg_up", "redis_up"):
        result = _prom("/api/v1/query?query=" + up)["result"]
        assert [(r["metric"]["host"], r["value"][1]) for r in result] == [(A, "1")], (up, result)
    probes = _prom("/api/v1/query?query=" + "probe_success")["result"]
    assert {r["metric"]["host"]: r["value"][1] for r in probes} == {A: "1", B: "1"}, probes
    # One Prometheus for the fleet: the other host runs none.
    assert not HOSTS[B].package("prometheus").is_installed


def test_exporters_answer_the_monitoring_host_only():
    a, b = _address(A), _address(B)
    a_sockets, b_sockets = HOSTS[A].check_output("ss -Htln"), HOSTS[B].check_output("ss -Htln")
    for port in EXPORTER_PORTS:
        assert f"{b}:{port}" in b_sockets and f"0.0.0.0:{port}" not in b_sockets, b_sockets
        # The monitoring host reads the other host's exporters...
        ok = HOSTS[A].run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 http://{b}:{port}/metrics")
        assert ok.stdout.strip() == "200", (port, ok.stdout, ok.stderr)
    for port in DATASTORE_EXPORTER_PORTS:
        assert f"{a}:{port}" in a_sockets and f"0.0.0.0:{port}" not in a_sockets, a_sockets
    # ...the other host (a front and engine, but not the monitoring host) reaches none of the monitoring host's
    # (nor the datastore's exporters there)...
    urls = [f"http://{a}:{port}/metrics" for port in EXPORTER_PORTS + DATASTORE_EXPORTER_PORTS]
    denied = _from_host(B, urls)
    assert denied == {u: 28 for u in urls}, denied
    # ...and this machine (no fleet host) reaches neither host's.
    probes = [_curl(f"http://{addr}:{port}/metrics") for port in EXPORTER_PORTS for addr in (a, b)]
    for out in _from_here(probes):
        assert out.returncode == 28, out
    # The exporter's Redis user reads INFO but no key.
    with HOSTS[A].sudo():
        env = HOSTS[A].file("/etc/default/prometheus-redis-exporter")
        assert (env.user, env.mode) == ("root", 0o600)
        password = next(line.split("=", 1)[1] for line in env.content_string.splitlines()
                        if line.startswith("REDIS_PASSWORD="))
    cli = f"REDISCLI_AUTH={password} redis-cli --no-auth-warning --user llm-monitor "
    assert "redis_version" in HOSTS[A].check_output(cli + "INFO server")
    assert "NOPERM" in HOSTS[A].run(cli + "GET anything").stdout


def test_open_webui_runs_on_postgresql_and_redis():
    for name, h in HOSTS.items():
        with h.sudo():
            env = h.file(ENV_FILE).content_string
        assert 'DATABASE_URL="postgresql+psycopg://' in env, name
        assert 'WEBSOCKET_MANAGER="redis"' in env, name
        assert f'OPENAI_API_BASE_URLS="{GATEWAY}/v1"' in env, name
    with HOSTS[A].sudo():
        ka = HOSTS[A].file("/etc/llm/open-webui/secret-key").content_string
    with HOSTS[B].sudo():
        kb = HOSTS[B].file("/etc/llm/open-webui/secret-key").content_string
    assert ka == kb and len(ka.strip()) == 64
    assert HOSTS[A].service("postgresql").is_running and HOSTS[A].service("redis-server").is_running
    assert not HOSTS[B].package("postgresql").is_installed


def test_the_fronts_share_one_chroma_behind_tls_and_a_token():
    store = _address(A)
    a = HOSTS[A]
    # Both Open WebUI replicas connected to it when they started (their Chroma client checks the tenant then):
    # the endpoint logged their API calls answered 200, each from its front's address. Nothing else has called
    # the endpoint yet: read it before the curls below.
    with a.sudo():
        log = a.file("/var/log/nginx/llm-vector-endpoint.log").content_string
    for name in HOSTS:
        assert any(line.startswith(_address(name) + " ") and '"GET /api/v2/' in line and '" 200 ' in line
                   for line in log.splitlines()), (name, log[-2000:])
    for name, h in HOSTS.items():
        with h.sudo():
            env = h.file(ENV_FILE).content_string
        for line in (f'CHROMA_HTTP_HOST="{store}"', f'CHROMA_HTTP_PORT="{VECTOR_PORT}"', 'CHROMA_HTTP_SSL="true"',
                     'VECTOR_DB="chroma"', 'SSL_CERT_FILE="/etc/ssl/certs/ca-certificates.crt"'):
            assert line in env, (name, line)
    token = (REPO / ".secrets" / "fleet" / "chroma-token").read_text().strip()
    assert len(token) == 48
    url = f"https://{store}:{VECTOR_PORT}/api/v2/heartbeat"
    for name, h in HOSTS.items():
        # The system CA store (where base put the fleet CA) checks the certificate by the address.
        ok = h.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 -H 'Authorization: Bearer {token}' {url}")
        assert ok.stdout.strip() == "200", (name, ok.stdout, ok.stderr)
        bad = h.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 -H 'Authorization: Bearer x{token}' {url}")
        assert bad.stdout.strip() == "401", (name, bad.stdout)
        none = h.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {url}")
        assert none.stdout.strip() == "401", (name, none.stdout)
    # Chroma itself listens on loopback only, on the datastore host only.
    assert "127.0.0.1:8001" in a.check_output("ss -Htln") and a.service("llm-chroma").is_running
    assert f"{store}:8001" not in a.check_output("ss -Htln") and "0.0.0.0:8001" not in a.check_output("ss -Htln")
    assert ":8001" not in HOSTS[B].check_output("ss -Htln") and not HOSTS[B].service("llm-chroma").is_running


CHROMA = "/opt/llm/chroma"
BROKEN = "99.0.0"
WHEELS = "/opt/llm/test-wheels"


def test_a_chroma_release_that_fails_its_gate_is_rolled_back_with_its_data(tmp_path):
    # The datastore's steps alone (--tags datastore) with a Chroma release that dies at start: the venv is built
    # beside the running one, the data copied aside, the link switched; the heartbeat gate gives up after
    # chroma_start_restarts restarts, and the previous venv and the copied data come back.
    import subprocess
    a = HOSTS[A]
    before = a.check_output(f"readlink {CHROMA}/current").strip()
    assert before == f"{CHROMA}/1.5.9"
    wheel, lock = console_release(tmp_path, "chromadb", "chromadb", "chroma", BROKEN)
    assert a.run(f"mkdir -p {WHEELS}").rc == 0
    subprocess.run(["podman", "cp", str(wheel), f"{A}:{WHEELS}/"], check=True, timeout=60)
    rc, out = _site(f"chroma_version={BROKEN}", f"chroma_venv_lock={lock}",
                    f'{{"python_runtime_find_links": ["{WHEELS}"]}}', tags="datastore")
    assert rc != 0, "the run passed although the new Chroma never answered"
    assert re.search(rf"Chroma\s+{BROKEN}\s+failed\s+its\s+readiness\s+gate\s+on\s+{A}", out), out[-4000:]
    assert "ROLLED BACK" in out and re.search(r"dies\s+at\s+start", out), out[-4000:]
    assert a.check_output(f"readlink {CHROMA}/current").strip() == before
    assert not a.file(f"{CHROMA}/{BROKEN}").exists
    assert a.service("llm-chroma").is_running
    assert a.run("curl -sf --max-time 10 http://127.0.0.1:8001/api/v2/heartbeat").rc == 0
    with a.sudo():
        beside = a.check_output("ls -1 /var/lib/llm").split()
    assert f"chroma.before-chroma-{BROKEN}" in beside, beside
    assert any(n.startswith(f"chroma.failed-chroma-{BROKEN}-") for n in beside), beside


def test_an_open_webui_release_that_fails_on_a_front_names_the_dump_taken_before(tmp_path):
    # A fleet's front runs on PostgreSQL: before its version changes the datastore dumps the shared database
    # (<time>-before-open-webui-<version>), and the rollback's message names that dump (the database is not on the
    # front, so the front's own backup cannot bring it back).
    import subprocess
    a = HOSTS[A]
    wheel, lock = console_release(tmp_path, "open-webui", "open_webui", "open-webui", BROKEN)
    assert a.run(f"mkdir -p {WHEELS}").rc == 0
    subprocess.run(["podman", "cp", str(wheel), f"{A}:{WHEELS}/"], check=True, timeout=60)
    rc, out = _site(f"open_webui_version={BROKEN}", 'open_webui_torch_requirement=""',
                    f"open_webui_venv_lock={lock}", f'{{"python_runtime_find_links": ["{WHEELS}"]}}',
                    tags="open_webui", limit=A)
    assert rc != 0, "the run passed although the new version never answered"
    assert re.search(rf"Open\s+WebUI\s+{BROKEN}\s+failed\s+its\s+readiness\s+gate\s+on\s+{A}", out), \
        out[-4000:]
    dump = re.search(rf"restore\s+the\s+dump\s+taken\s+before\s+the\s+switch\s+\({A}:(/var/backups/llm/postgresql/"
                     rf"\S+-before-open-webui-{re.escape(BROKEN)}\.dump);", out)
    assert dump, out[-4000:]
    with a.sudo():
        assert a.run(f"cd /var/backups/llm/postgresql && sha256sum -c {dump.group(1).rsplit('/', 1)[1]}.sha256").rc == 0
    assert a.service("open-webui").is_running
    assert not a.file(f"/opt/llm/open-webui/{BROKEN}").exists
    # --tags open_webui kept the fleet's settings (tasks/fleet.yml is imported: it runs under every tag)
    with a.sudo():
        env = a.file(ENV_FILE).content_string
    assert 'DATABASE_URL="postgresql+psycopg://' in env and "OPENAI_API_BASE_URLS=\"http://127.0.0.1:8090/v1" in env


def _signin(front):
    pw = (REPO / ".secrets" / "fleet" / "open-webui-admin").read_text().strip()
    email = "admin@localhost"  # open_webui_admin_email with the demo's llm_server_name
    status, text, _ = host_http.request(front, "http://127.0.0.1:3000/api/v1/auths/signin",
                                        body={"email": email, "password": pw}, timeout=60)
    assert status == 200, text
    return json.loads(text)["token"]


def test_a_chat_made_on_one_front_is_seen_on_the_other():
    token_a = _signin(A)
    title = "fleet-" + uuid.uuid4().hex[:8]
    chat = {"chat": {"title": title, "messages": [], "history": {"messages": {}, "currentId": None}}}
    status, text, _ = host_http.request(A, "http://127.0.0.1:3000/api/v1/chats/new",
                                        headers={"Authorization": f"Bearer {token_a}"}, body=chat, timeout=60)
    assert status == 200, text
    chat_id = json.loads(text)["id"]
    # The session made on A is valid on B (one WEBUI_SECRET_KEY), and B reads the chat from PostgreSQL.
    status, text, _ = host_http.request(B, f"http://127.0.0.1:3000/api/v1/chats/{chat_id}",
                                        headers={"Authorization": f"Bearer {token_a}"}, timeout=60)
    assert status == 200, text
    assert json.loads(text)["chat"]["title"] == title


# A client inside front A: workers send streamed chats through the gateway, one after another with a pause, until
# the stop file appears or the bound is reached; then one JSON line: sent, failed, and the first errors.
LOOP = r'''
import json, os, sys, threading, time, urllib.request
url, key, model, bound, workers, stop = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
lock, stats = threading.Lock(), {"sent": 0, "failed": 0, "errors": []}
def one(i):
    body = json.dumps({"model": model, "stream": True, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "Hello %d" % i}]}).encode()
    req = urllib.request.Request(url, body, {"Authorization": "Bearer " + key, "Content-Type": "application/json",
                                             "X-LLM-Affinity": "conversation-%d" % (i % 16)})
    with urllib.request.urlopen(req, timeout=120) as r:
        data = r.read().decode()
    if r.status != 200 or "data: [DONE]" not in data:
        raise RuntimeError("status %s, stream without [DONE]: %r" % (r.status, data[-200:]))
def worker():
    while True:
        with lock:
            if stats["sent"] >= bound or (os.path.exists(stop) and stats["sent"] >= 200):
                return
            stats["sent"] += 1
            i = stats["sent"]
        try:
            one(i)
        except Exception as e:
            with lock:
                stats["failed"] += 1
                stats["errors"].append("%d: %s" % (i, e))
        time.sleep(0.5)
threads = [threading.Thread(target=worker) for _ in range(workers)]
[t.start() for t in threads]
[t.join() for t in threads]
stats["errors"] = stats["errors"][:10]
print(json.dumps(stats))
'''
STOP = "/tmp/llm-fleet-loop.stop"


def _site(*extra, timeout=1500, playbook="site.yml", tags=None, limit=None):
    import subprocess
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(REPO / playbook)]
    if tags:
        cmd += ["--tags", tags]
    if limit:
        cmd += ["--limit", limit]
    for e in extra:
        cmd += ["-e", e]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _start_loop(api_key, bound=2000, workers=4):
    import subprocess
    HOSTS[A].run(f"rm -f {STOP}")
    return subprocess.Popen(["podman", "exec", "-i", A, "python3", "-c", LOOP, GATEWAY + "/v1/chat/completions",
                             api_key, MODEL, str(bound), str(workers), STOP],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop_loop(proc):
    HOSTS[A].run(f"touch {STOP}")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _restarts(name):
    """When llama.cpp's current process started (changes with every restart)."""
    return HOSTS[name].check_output("systemctl show -p ExecMainStartTimestampMonotonic --value llamacpp")


def _listing(name, folder):
    return set(HOSTS[name].check_output(f"ls -1 {folder} 2>/dev/null || true").split())


def test_upgrade_restarting_every_engine_drops_no_request(api_key):
    # playbooks/upgrade.yml: backups first (each front's data, the datastore's dump), then site.yml's rollout one
    # host per batch. A changed engine setting (slots) restarts llama.cpp on every engine host, one at a time.
    started = {n: _restarts(n) for n in HOSTS}
    dumps = _listing(A, "/var/backups/llm/postgresql")
    fronts = {n: _listing(n, "/var/backups/llm/open-webui") for n in HOSTS}
    loop = _start_loop(api_key)
    try:
        rc, out = _site("llm_max_num_seqs=3", playbook="playbooks/upgrade.yml")
    finally:
        stats = _stop_loop(loop)
    assert rc == 0, out[-3000:]
    # One host per batch: the deploy play's first include (the fleet's Chroma token, tasks/fleet.yml) ran for one
    # host at a time, in order (the play's banner prints once, not per batch).
    deploy = out.split("PLAY [Deploy the LLM stack]", 1)[-1]
    batches = re.findall(r"^included: \S+/tasks/chroma-token\.yml for (.+)$", deploy, re.M)
    assert batches == [A, B], batches
    assert [n for n in _listing(A, "/var/backups/llm/postgresql") - dumps if n.endswith("-before-upgrade.dump")], \
        "no dump of the fleet's database before the upgrade"
    for n in HOSTS:
        assert [b for b in _listing(n, "/var/backups/llm/open-webui") - fronts[n] if b.endswith("-before-upgrade")], n
    assert all(_restarts(n) != started[n] for n in HOSTS), "every engine restarted"
    assert "Mark this engine down on every front" in out
    assert stats["sent"] >= 200 and stats["failed"] == 0, stats
    # Every engine is back in every gateway (the readiness gate returned it).
    for front in HOSTS:
        lines = HOSTS[front].check_output("cat /etc/nginx/llm-gateway/engines/*.conf")
        assert lines.count(" down;") == 0 and lines.count("server ") == 2, lines


def test_kill_9_of_one_engine_fails_at_most_its_requests_in_flight(api_key):
    b = HOSTS[B]
    pid = int(b.check_output("systemctl show -p MainPID --value llamacpp"))
    b.run(f"kill -9 {pid}")
    failures = []
    for i in range(12):
        status, text, _ = _chat(A, api_key, headers={"X-LLM-Affinity": f"after-kill-{i}"})
        if status != 200:
            failures.append((status, text[:200]))
    assert failures == [], failures
    # systemd brings the engine back, and the gateway uses it again after fail_timeout.
    deadline = time.time() + 120
    while time.time() < deadline:
        if b.run("systemctl is-active llamacpp").stdout.strip() == "active" and \
                int(b.check_output("systemctl show -p MainPID --value llamacpp")) != pid:
            break
        time.sleep(2)
    else:
        pytest.fail("llama.cpp did not come back on B")
