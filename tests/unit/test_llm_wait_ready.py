"""llm_wait_ready: waits for a real local HTTP server; gives up early on a unit that keeps dying (systemctl's
output as `systemctl show` prints it for a crash-looping Type=simple unit)."""

import http.server
import subprocess
import threading

import llm_wait_ready
import pytest


@pytest.fixture
def server():
    """A local server answering 503 to its first `state['fail']` requests, then 200."""
    state = {"fail": 2, "seen": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["seen"] += 1
            code = 503 if state["seen"] <= state["fail"] else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/health", state
    httpd.shutdown()


def test_waits_through_503_until_200(server):
    url, state = server
    ready, result, reason = llm_wait_ready.wait(url, [200], timeout=30, interval=1, request_timeout=5,
                                                sleep=lambda s: None)
    assert ready and reason == ""
    assert result["status"] == 200 and state["seen"] == 3


def test_times_out_with_the_last_status(server):
    url, state = server
    state["fail"] = 10**6
    ticks = iter(range(0, 1000, 5))
    ready, result, reason = llm_wait_ready.wait(url, [200], timeout=20, interval=5, request_timeout=5,
                                                clock=lambda: next(ticks), sleep=lambda s: None)
    assert not ready
    assert reason == f"{url} did not answer 200 within 20 s (last: status 503)"


def test_nothing_listening_is_no_answer():
    status, error = llm_wait_ready.poll("http://127.0.0.1:9/health", 2)
    assert status == -1 and error


SHOW = "ActiveState={a}\nSubState={s}\nNRestarts={n}\nResult={r}\n"


def _recorded(states):
    """`systemctl show` outputs in turn, as subprocess.run would return them."""
    outputs = iter(states)

    def run(argv, **kwargs):
        assert argv[:3] == ["systemctl", "show", "open-webui"]
        return subprocess.CompletedProcess(argv, 0, stdout=next(outputs), stderr="")
    return lambda unit: llm_wait_ready.unit_state(unit, run=run)


def test_a_unit_that_keeps_restarting_is_given_up_before_the_timeout():
    states = [SHOW.format(a="active", s="running", n=4, r="success")] + [
        SHOW.format(a="activating", s="auto-restart", n=4 + i, r="exit-code") for i in range(1, 10)]
    ready, result, reason = llm_wait_ready.wait("http://127.0.0.1:9/health", [200], timeout=600, interval=5,
                                                request_timeout=1, unit="open-webui", max_restarts=3,
                                                state_of=_recorded(states), sleep=lambda s: None)
    assert not ready
    assert result["restarts"] == 3 and result["unit_state"] == "activating/auto-restart"
    assert reason.startswith("open-webui is activating/auto-restart (result exit-code) after 3 restart(s)")


def test_a_failed_unit_is_given_up_at_once():
    states = [SHOW.format(a="active", s="running", n=0, r="success"),
              SHOW.format(a="failed", s="failed", n=0, r="exit-code")]
    ready, result, reason = llm_wait_ready.wait("http://127.0.0.1:9/health", [200], timeout=600, interval=5,
                                                request_timeout=1, unit="open-webui",
                                                state_of=_recorded(states), sleep=lambda s: None)
    assert not ready and result["restarts"] == 0 and "is failed/failed (result exit-code)" in reason


def test_show_output_is_parsed():
    state = _recorded([SHOW.format(a="active", s="running", n=7, r="success")])("open-webui")
    assert state == {"ActiveState": "active", "SubState": "running", "NRestarts": 7, "Result": "success"}
