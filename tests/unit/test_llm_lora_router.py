"""The llamacpp role's LoRA router (roles/llamacpp/files/llm_lora_router.py) between real sockets.

The upstream is a small HTTP server in this process that answers like llama-server (model list,
JSON, a server-sent event stream in chunks) and records what it received; molecule/default checks
the router in front of the real llama-server."""

import http.client
import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location(
    "llm_lora_router", REPO / "roles" / "llamacpp" / "files" / "llm_lora_router.py")
router = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(router)

BASE = "Qwen2.5-7B-Instruct"
ADAPTERS = ["support", "legal"]


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Upstream.seen.append(("GET", self.path, dict(self.headers), b""))
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": BASE, "object": "model", "created": 1700000000, "owned_by": "llamacpp"}]})
        elif self.path == "/health":
            self._json(503, {"error": {"message": "Loading model"}})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Upstream.seen.append(("POST", self.path, dict(self.headers), body))
        if json.loads(body or b"{}").get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for n in range(3):
                event = b"data: {\"n\": %d}\n\n" % n
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")
            return
        self._json(200, {"object": "chat.completion", "model": BASE})

    def _json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def stack():
    Upstream.seen = []
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = {"listen_host": "127.0.0.1", "listen_port": 0, "upstream_host": "127.0.0.1",
              "upstream_port": upstream.server_address[1], "base_model": BASE,
              "adapters": ADAPTERS}
    server = router.serve(config)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], upstream
    server.shutdown()
    upstream.shutdown()


def request(port, method, path, payload=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps(payload).encode() if payload is not None else None
    conn.request(method, path, body=body, headers=dict(headers or {}))
    response = conn.getresponse()
    return response.status, response.read(), response


def test_a_request_naming_an_adapter_carries_its_lora_field(stack):
    port, _ = stack
    status, _, _ = request(port, "POST", "/v1/chat/completions",
                           {"model": "legal", "messages": [{"role": "user", "content": "hi"}]},
                           {"Authorization": "Bearer k"})
    assert status == 200
    method, path, headers, body = Upstream.seen[-1]
    sent = json.loads(body)
    assert (method, path, sent["model"]) == ("POST", "/v1/chat/completions", "legal")
    assert sent["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert headers["Authorization"] == "Bearer k"  # llama-server checks the key itself
    assert int(headers["Content-Length"]) == len(body)


def test_a_base_model_request_turns_every_adapter_off(stack):
    # Said explicitly: without the field llama-server would reuse a prompt cached under an adapter.
    port, _ = stack
    request(port, "POST", "/v1/completions", {"model": BASE, "prompt": "x"})
    assert json.loads(Upstream.seen[-1][3])["lora"] == [{"id": 0, "scale": 0.0},
                                                        {"id": 1, "scale": 0.0}]


def test_a_body_that_is_not_a_json_object_passes_unchanged(stack):
    port, _ = stack
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/tokenize", body=b"not json", headers={"Content-Length": "8"})
    conn.getresponse().read()
    assert Upstream.seen[-1][3] == b"not json"
    assert router.with_adapter(b"[1, 2]", ADAPTERS) is None


def test_the_model_list_shows_each_adapter_after_the_base_model(stack):
    port, _ = stack
    status, body, response = request(port, "GET", "/v1/models")
    assert status == 200
    models = json.loads(body)["data"]
    assert [m["id"] for m in models] == [BASE, "support", "legal"]
    assert models[1] == {"id": "support", "object": "model", "created": 1700000000,
                         "owned_by": "llamacpp", "parent": BASE, "root": BASE}
    assert int(response.getheader("Content-Length")) == len(body)


def test_changing_the_adapters_global_scales_is_refused(stack):
    port, _ = stack
    status, body, _ = request(port, "POST", "/lora-adapters", [{"id": 0, "scale": 1}])
    assert status == 403
    assert "name an adapter in the request's model field" in json.loads(body)["error"]["message"]
    assert all(path != "/lora-adapters" for _, path, _, _ in Upstream.seen)


def test_other_answers_pass_through_with_their_status(stack):
    port, _ = stack
    status, body, _ = request(port, "GET", "/health")
    assert (status, json.loads(body)) == (503, {"error": {"message": "Loading model"}})


def test_a_stream_is_relayed_event_by_event(stack):
    port, _ = stack
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/chat/completions",
                 body=json.dumps({"model": "support", "stream": True}).encode(),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    started = time.monotonic()
    first = response.read1(65536)
    first_after = time.monotonic() - started
    rest = response.read()
    # the upstream sends an event every 0.3 s: the first arrives before the last is written
    assert first.startswith(b"data: {\"n\": 0}") and first_after < 0.5
    assert (first + rest).count(b"data: ") == 3


def test_no_upstream_is_a_502_that_says_so(stack):
    port, upstream = stack
    upstream.shutdown()
    upstream.server_close()
    status, body, _ = request(port, "GET", "/v1/models")
    assert status == 502
    assert json.loads(body)["error"]["message"].startswith("llama-server did not answer")


def test_the_config_is_checked():
    with pytest.raises(ValueError, match="distinct names"):
        router.load_config_data({"listen_port": 1, "upstream": "http://127.0.0.1:2",
                                 "base_model": BASE, "adapters": ["a", "a"]})
    with pytest.raises(ValueError, match="upstream must be http://HOST:PORT"):
        router.load_config_data({"listen_port": 1, "upstream": "https://x",
                                 "base_model": BASE, "adapters": ["a"]})
