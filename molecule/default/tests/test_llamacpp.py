"""llama.cpp's llama-server in CPU mode, from the debian12-cpu .deb, serving the tiny Qwen2.5 GGUF Q4_K_M with the
slots and context of the host's plan (the plan report playbooks/plan.yml wrote on the controller).

Runs on the default scenario's host (site.yml, the engine behind Open WebUI and nginx). `bash tests/bench/serving.sh
llamacpp` converges molecule/llamacpp (the serving roles alone), whose verify runs this module too (a link):
LLM_FRONT_HOST names the host.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HOST = os.environ.get("LLM_FRONT_HOST", "llm-default")
testinfra_hosts = [f"podman://{HOST}"]

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(REPO / "tests" / "helpers"))
import host_http  # noqa: E402  the tests' one HTTP helper

PORT = 8081
BACKEND_PORT = 8082  # llama-server behind the LoRA router
BASE = f"http://127.0.0.1:{PORT}"
MODEL = "tiny-qwen2.5-instruct"
LORA = "tiny-lora"
ADAPTER_FILE = "/var/lib/llm/models/adapters/tiny-lora/tiny-qwen2.5-instruct-lora-f16.gguf"
PACKAGE_DIR = "/opt/llm/packages/llama-server/debian12-cpu"
# The scenario's own plan report (molecule.yml: LLM_PLAN_REPORT_DIR; scenarios run at once in `make test`); `make
# demo`'s is the repo's.
REPORT = Path(os.environ.get("LLM_PLAN_REPORT_DIR") or REPO / ".cache" / "reports") / "llm-plan.md"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def plan():
    """{'slots', 'per_slot', 'pool'} of this host, from the plan report's table row."""
    row = re.search(rf"^\| {re.escape(HOST)} \|.*\| llamacpp \| (\d+) \|.*\| (\d+) seqs, KV (\d+) tok \|$",
                    REPORT.read_text(), re.M)
    assert row, f"no llamacpp plan for {HOST} in {REPORT}"
    return {"per_slot": int(row.group(1)), "slots": int(row.group(2)), "pool": int(row.group(3))}


@pytest.fixture(scope="module")
def api_key(host):
    with host.sudo():
        key = host.file("/etc/llm/api-key").content_string.strip()
    assert len(key) >= 32
    return key


def curl(host, path, key=None, body=None, timeout=120):
    """(status, parsed JSON or raw text) of a request made on the host itself; the key travels on stdin."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    status, text, _ = host_http.request(HOST, BASE + path, headers=headers, body=body, timeout=timeout)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _q(s):
    return "'" + s.replace("'", "'\"'\"'") + "'"


AUTH_FILE = "/root/.llamacpp-test-auth"


def write_auth_file(host, api_key):
    """The key as a curl header file on the host (curl -H @file): never on a command line."""
    host.run(f"install -m 600 /dev/null {AUTH_FILE} && printf 'Authorization: Bearer %s\\n' {_q(api_key)} > {AUTH_FILE}")


def test_service_is_enabled_and_running_as_its_own_user(host):
    svc = host.service("llamacpp")
    assert svc.is_enabled
    assert svc.is_running
    pid = int(host.check_output("systemctl show --property MainPID --value llamacpp"))
    status = host.file(f"/proc/{pid}/status").content_string
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
    assert uid == int(host.check_output("id -u llamacpp")) != 0
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), "NoNewPrivileges is not in force"
    assert re.search(r"^Seccomp:\s+2$", status, re.M), "the system call filter is not in force"
    assert host.user("llamacpp").group == "llm"


def listeners(host, port):
    """Local addresses of the TCP listeners on port (ss cannot name their processes in the podman test host)."""
    return {line.split()[3] for line in host.check_output(f"ss -H -ltn 'sport = :{port}'").splitlines()}


def main_pid(host, unit):
    return int(host.check_output(f"systemctl show --property MainPID --value {unit}"))


def test_listens_on_loopback_only(host, api_key):
    # the API port is the LoRA router's (the inventory lists an adapter), llama-server sits behind it
    assert listeners(host, PORT) == {f"127.0.0.1:{PORT}"}
    assert listeners(host, BACKEND_PORT) == {f"127.0.0.1:{BACKEND_PORT}"}
    status, text, _ = host_http.request(HOST, f"http://127.0.0.1:{BACKEND_PORT}/v1/models",
                                        headers={"Authorization": f"Bearer {api_key}"})
    assert status == 200 and [m["id"] for m in json.loads(text)["data"]] == [MODEL], text[:500]


def test_models_needs_the_key(host, api_key):
    assert curl(host, "/v1/models")[0] == 401
    assert curl(host, "/v1/models", "wrong-key")[0] == 401
    status, body = curl(host, "/v1/models", api_key)
    assert status == 200
    assert [m["id"] for m in body["data"]] == [MODEL, LORA]
    assert body["data"][1]["parent"] == MODEL


def test_the_lora_router_runs_sandboxed_as_the_engines_user(host):
    svc = host.service("llamacpp-lora-router")
    assert svc.is_enabled and svc.is_running
    status = host.file(f"/proc/{main_pid(host, 'llamacpp-lora-router')}/status").content_string
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
    assert uid == int(host.check_output("id -u llamacpp")) != 0
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert re.search(r"^Seccomp:\s+2$", status, re.M)
    unit = host.check_output("systemctl cat llamacpp")
    assert f"--lora-scaled {ADAPTER_FILE}:0 " in unit, unit
    assert f"--port {BACKEND_PORT} " in unit


def completion(host, api_key, model):
    status, body = curl(host, "/v1/completions", api_key, {
        "model": model, "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0,
        "seed": 7, "ignore_eos": True})
    assert status == 200, body
    return body["choices"][0]["text"]


def test_a_completion_naming_the_adapter_differs_from_the_base_models(host, api_key):
    base = completion(host, api_key, MODEL)
    adapted = completion(host, api_key, LORA)
    assert adapted != base, (base, adapted)
    # greedy and seeded: the same again, and the base model's answer after the adapter's is the base's
    # (llama-server would reuse the prompt it cached under the adapter if the router left "lora" out)
    assert completion(host, api_key, LORA) == adapted
    assert completion(host, api_key, MODEL) == base


def test_no_client_can_change_the_adapters_for_everyone(host, api_key):
    status, body = curl(host, "/lora-adapters", api_key, [{"id": 0, "scale": 1}])
    assert status == 403, body
    # llama-server's own view (its loopback port): the adapter stays loaded at scale 0
    status, body = host_http.request(HOST, f"http://127.0.0.1:{BACKEND_PORT}/lora-adapters",
                                     headers={"Authorization": f"Bearer {api_key}"})[:2]
    assert status == 200 and [a["scale"] for a in json.loads(body)] == [0.0], body


def test_health_answers_without_the_key(host):
    status, body = curl(host, "/health")
    assert (status, body) == (200, {"status": "ok"})


def test_metrics_are_prometheus_text_behind_the_key(host, api_key):
    assert curl(host, "/metrics")[0] == 401
    status, body = curl(host, "/metrics", api_key)
    assert status == 200
    assert "# TYPE llamacpp:prompt_tokens_total counter" in body
    assert "llamacpp:requests_processing" in body


def test_server_runs_the_planned_slots_and_pool(host, api_key, plan):
    assert plan["slots"] >= 2, plan  # test_two_requests_are_decoded_together needs two
    status, body = curl(host, "/props", api_key)
    assert status == 200, body
    assert body["total_slots"] == plan["slots"]
    assert body["default_generation_settings"]["n_ctx"] == plan["per_slot"]
    unit = host.check_output("systemctl cat llamacpp")
    assert f"--ctx-size {plan['pool']} " in unit and f"--parallel {plan['slots']} " in unit, unit
    # the GGUF's own chat template (Qwen2.5's ChatML, which renders tools) through --jinja
    assert "<|im_start|>" in body["chat_template"] and "tools" in body["chat_template"]


def test_chat_completion_is_openai_json(host, api_key):
    status, body = curl(host, "/v1/chat/completions", api_key,
                        {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8})
    assert status == 200, body
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert isinstance(message["content"], str)
    assert body["usage"]["prompt_tokens"] > 0
    assert 0 < body["usage"]["completion_tokens"] <= 8


def test_chat_completion_with_tools_and_tool_choice_auto_succeeds(host, api_key):
    # What Open WebUI sends from the browser: its tools with tool_choice auto.
    status, body = curl(host, "/v1/chat/completions", api_key,
                        {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}],
                         "max_tokens": 8, "tools": TOOLS, "tool_choice": "auto"})
    assert status == 200, body
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] > 0


def test_streamed_chat_with_tools_succeeds(host, api_key):
    # Open WebUI streams its replies: the same request with stream true answers server-sent events.
    status, body = curl(host, "/v1/chat/completions", api_key,
                        {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}],
                         "max_tokens": 8, "tools": TOOLS, "tool_choice": "auto", "stream": True})
    assert status == 200, body
    events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["object"] == "chat.completion.chunk"


def test_streamed_chat_without_tools_succeeds(host, api_key):
    status, body = curl(host, "/v1/chat/completions", api_key,
                        {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}],
                         "max_tokens": 8, "stream": True})
    assert status == 200, body
    events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_a_slot_gets_an_http_error_not_an_empty_reply(host, api_key, plan, stream):
    # What broke the browser chat with llama-cpp-python: an over-long prompt must come back as an
    # error Open WebUI can show.
    long_text = " ".join("word%d" % i for i in range(plan["per_slot"] + 64))  # a token or more a word
    body = {"model": MODEL, "messages": [{"role": "user", "content": long_text}], "max_tokens": 8, "stream": stream}
    # Too long for a line of curl's config: the body goes to a file on the host (no secret in it).
    subprocess.run(["podman", "exec", "-i", HOST, "sh", "-c", "cat > /tmp/llamacpp-long.json"],
                   input=json.dumps(body), text=True, check=True, timeout=60)
    status, text, _ = host_http.request(HOST, BASE + "/v1/chat/completions", "POST",
                                        {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
                                        options=['data-binary = "@/tmp/llamacpp-long.json"'])
    host.run("rm -f /tmp/llamacpp-long.json")
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    assert 400 <= status < 500, (status, body)
    error = body["error"] if isinstance(body, dict) else json.loads(body)["error"]
    assert "context" in error["message"].lower() or "exceed" in error["message"].lower(), error


def test_two_requests_are_decoded_together(host, api_key):
    # Continuous batching: two long generations started together occupy two slots at once.
    # The key travels in a header file (curl -H @file), never on a command line.
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Count"}],
                       "max_tokens": 3000, "ignore_eos": True})
    write_auth_file(host, api_key)
    one = (f"curl -s -o /dev/null -m 120 -H @{AUTH_FILE} "
           "-H 'Content-Type: application/json' --data-binary %s %s/v1/chat/completions"
           % (_q(body), BASE))
    host.run("rm -f /tmp/llamacpp-two.done; ( %s & %s & wait; touch /tmp/llamacpp-two.done ) "
             ">/dev/null 2>&1 &" % (one, one))
    busy = 0
    deadline = time.time() + 60
    while time.time() < deadline and busy < 2:
        status, slots = curl(host, "/slots", api_key, timeout=10)
        assert status == 200, slots
        busy = max(busy, sum(1 for slot in slots if slot.get("is_processing")))
    deadline = time.time() + 150
    while time.time() < deadline and not host.file("/tmp/llamacpp-two.done").exists:
        time.sleep(1)
    host.run(f"rm -f {AUTH_FILE}")
    assert busy >= 2, "never saw two slots processing at once"


def test_a_restart_with_a_request_in_flight_does_not_wait_for_the_stop_timeout(host, api_key):
    # llama-server's first SIGTERM cancels every request and then waits for their clients, which a client still
    # waiting for its answer (here the LoRA router's connection) never ends: the stop hung for TimeoutStopSec (60 s)
    # and ended in SIGKILL. The unit's ExecStop gives it 5 s, then systemd's SIGTERM (its second) ends it at once.
    # One shell on the host: the restart follows the first sight of a busy slot within milliseconds.
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Count"}],
                       "max_tokens": 3500, "ignore_eos": True})
    write_auth_file(host, api_key)
    script = f"""
        auth='-H @{AUTH_FILE}'
        cursor=$(journalctl -u llamacpp -n0 --show-cursor | sed -n 's/^-- cursor: //p')
        curl -s -o /dev/null -w '%{{http_code}}' -m 120 $auth -H 'Content-Type: application/json' \\
          --data-binary {_q(body)} {BASE}/v1/chat/completions > /tmp/llamacpp-inflight.code &
        client=$!
        busy=no
        for _ in $(seq 400); do
          if curl -s -m 5 $auth {BASE}/slots | grep -Eq '"is_processing": ?true'; then busy=yes; break; fi
          sleep 0.02
        done
        start=$(date +%s%N)
        systemctl restart llamacpp
        echo "busy=$busy took_ms=$(( ($(date +%s%N) - start) / 1000000 ))"
        wait $client
        echo "client=$(cat /tmp/llamacpp-inflight.code)"
        journalctl -u llamacpp --after-cursor "$cursor" --no-pager -o cat
    """
    out = host.check_output("bash -c %s", script)
    # This start counts towards the unit's start limit (5 in 10 min) that later checks' restarts share: reset it.
    host.run(f"rm -f {AUTH_FILE} /tmp/llamacpp-inflight.code; systemctl reset-failed llamacpp")
    deadline = time.time() + 120
    while time.time() < deadline and curl(host, "/health", timeout=10)[0] != 200:
        time.sleep(1)
    facts = dict(re.findall(r"\b(busy|took_ms|client)=(\S*)", out))
    assert facts.get("busy") == "yes", f"no slot was busy before the restart:\n{out[-3000:]}"
    assert facts.get("client") != "200", f"the request was answered: it was not in flight at the restart\n{out[-3000:]}"
    assert "'stop-sigterm' timed out" not in out and "signal SIGKILL" not in out, \
        f"systemd had to kill llama-server:\n{out[-3000:]}"
    assert int(facts["took_ms"]) < 30000, f"the restart took {facts['took_ms']} ms:\n{out[-3000:]}"
    assert curl(host, "/health", timeout=10)[0] == 200, "llama-server did not come back after the restart"


def test_api_key_is_on_no_command_line_and_in_no_unit(host, api_key):
    with host.sudo():
        cmdlines = host.check_output("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; true")
        assert "llama-server" in cmdlines
        assert api_key not in cmdlines
        unit = host.check_output("systemctl cat llamacpp")
        assert api_key not in unit
        assert "--api-key-file %d/api-key" in unit and "LoadCredential=api-key:" in unit
        assert "--api-key " not in unit
        assert api_key not in host.check_output("systemctl show llamacpp")
        # (the process environment itself cannot be read here: root in the test host has no
        # CAP_SYS_PTRACE; `systemctl show` covers Environment= and the unit carries no key file)
        assert "EnvironmentFile" not in unit
        key = host.file("/etc/llm/llamacpp.key")
        assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
        assert key.content_string.strip() == api_key
        assert not host.file("/etc/llm/llamacpp.env").exists
        key_file = host.file("/etc/llm/api-key")
        assert (key_file.user, key_file.group, key_file.mode) == ("root", "llm", 0o640)


def _converge_log():
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ansible.log")
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_api_key_is_not_in_the_converge_output(api_key):
    log = _converge_log()
    assert "Generate one token" in log, "the log does not cover the converge"
    assert api_key not in log


def test_package_came_from_the_controller_installed_and_held_nothing_compiled(host):
    debs = host.check_output(f"ls {PACKAGE_DIR}").split()
    assert debs == ["llm-llama-server_0.3.36-2+debian12.cpu_amd64.deb"]
    pkg = host.package("llm-llama-server")
    assert pkg.is_installed and pkg.version == "0.3.36-2+debian12.cpu"
    assert "llm-llama-server" in host.check_output("apt-mark showhold").split()
    info = host.file("/opt/llm/llama.cpp/BUILD-INFO").content_string
    assert "variant: debian12-cpu" in info.splitlines()
    assert "-DGGML_CUDA=on" not in info
    # the binary finds its private libraries (RUNPATH), nothing is missing
    assert "not found" not in host.check_output("ldd /opt/llm/llama.cpp/bin/llama-server")
    assert host.file("/opt/llm/llama.cpp/bin/llama-quantize").mode == 0o755
    # No compiler or build tool on the host: the package was not built here.
    for tool in ("cmake", "gcc", "cc", "c++", "nvcc"):
        assert host.run(f"command -v {tool}").rc != 0, f"{tool} is installed on the host"
    assert not host.file("/opt/llm/llamacpp-build").exists
    assert not host.file("/opt/llm/llamacpp").exists  # no llama-cpp-python venv


def test_model_staging_left_no_partial_downloads_and_private_files(host):
    # model_store fetches into model_store_root/.partial/<name> and removes it once every file is in place;
    # the GGUF folder is root:llm 0750 with 0640 files.
    d = "/var/lib/llm/models/tiny-qwen2.5-instruct-gguf"
    assert not host.file("/var/lib/llm/models/.partial").exists
    with host.sudo():
        files = host.check_output(f"find {d} -type f -printf '%u:%g:%m %P\\n'").splitlines()
    assert any(line.endswith(".gguf") for line in files), files
    assert all(line.startswith("root:llm:640 ") for line in files), files
    assert host.file(d).mode == 0o750 and host.file(d).group == "llm"
