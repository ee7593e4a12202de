"""Serve llama-server's LoRA adapters as models of their own (the llamacpp role's LoRA router).

llama-server loads every adapter at start (--lora-scaled FILE:0, not applied) and applies
one per request only when the request body says so ("lora": [{"id": i, "scale": s}]); its
/v1/models lists the base model alone. This router listens where clients expect llama-server
(llamacpp_host:llamacpp_port) and forwards everything to it on a loopback port, with two changes:

- a POST with a JSON body gets "lora" set: the adapter its "model" names at scale 1, every
  other at 0 (all at 0 for the base model);
- GET /v1/models and /models list each adapter after the base model ("parent": the base).

POST /lora-adapters is refused (403): it would change the adapters' scales for every client.
Everything else (health, metrics, streaming answers, the API key check) passes through
untouched; answers are streamed as they come (server-sent events keep their pace).

Standard library only: it runs with the host's python3, no venv. Config: one JSON file (argv[1])
with listen_host, listen_port, upstream ("http://127.0.0.1:PORT"), base_model and adapters (the
names, in the order of --lora). No secret passes through its config or its command line.
"""

import http.client
import json
import socketserver
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

# Headers that describe one connection, not the message (RFC 9110 7.6.1); never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization"}
MODEL_LISTS = ("/v1/models", "/models")
REFUSED = {("POST", "/lora-adapters")}
MAX_BODY = 64 * 1024 * 1024  # the largest request body read (a long chat with tools is ~1 MiB)
UPSTREAM_TIMEOUT = 3600  # seconds one read from llama-server may take (a long generation)


def load_config(path):
    with open(path, encoding="utf-8") as handle:
        return load_config_data(json.load(handle))


def load_config_data(config):
    upstream = urllib.parse.urlsplit(config["upstream"])
    if upstream.scheme != "http" or not upstream.hostname or not upstream.port:
        raise ValueError("upstream must be http://HOST:PORT, got %r" % config["upstream"])
    adapters = list(config["adapters"])
    if not adapters or len(set(adapters)) != len(adapters):
        raise ValueError("adapters must be a list of distinct names, got %r" % adapters)
    return {"listen_host": config.get("listen_host", "127.0.0.1"),
            "listen_port": int(config["listen_port"]),
            "upstream_host": upstream.hostname, "upstream_port": upstream.port,
            "base_model": config["base_model"], "adapters": adapters}


def with_adapter(body, adapters):
    """The JSON object body with "lora" set: the adapter it names at 1, every other at 0 (all at
    0 for the base model); None for a body that is not a JSON object.

    Every request says its adapters, the base model's too: llama-server clears a slot's cached
    prompt when the adapters change between two requests that list them, but a request without
    the field reuses a prompt cached under another adapter (its answer would be the adapter's).
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    model = data.get("model")
    chosen = adapters.index(model) if model in adapters else -1
    data["lora"] = [{"id": i, "scale": 1.0 if i == chosen else 0.0} for i in range(len(adapters))]
    return json.dumps(data).encode("utf-8")


def with_adapter_models(body, base_model, adapters):
    """The model list with one entry per adapter after the base model's; None if not a list."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return None
    base = next((m for m in data["data"] if isinstance(m, dict) and m.get("id") == base_model),
                None)
    created = base.get("created", int(time.time())) if base else int(time.time())
    owned_by = base.get("owned_by", "llamacpp") if base else "llamacpp"
    listed = {m.get("id") for m in data["data"] if isinstance(m, dict)}
    for name in adapters:
        if name not in listed:
            data["data"].append({"id": name, "object": "model", "created": created,
                                 "owned_by": owned_by, "parent": base_model, "root": base_model})
    return json.dumps(data).encode("utf-8")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with the clients (nginx, Open WebUI)
    server_version = "llm-lora-router"
    config = None  # set by serve()

    def log_message(self, format, *args):  # noqa: A002  BaseHTTPRequestHandler's signature
        pass  # llama-server logs the requests; no access log here (no bodies, no keys)

    def do_GET(self):
        self._forward()

    def do_HEAD(self):
        self._forward()

    def do_POST(self):
        self._forward()

    def do_PUT(self):
        self._forward()

    def do_DELETE(self):
        self._forward()

    def do_OPTIONS(self):
        self._forward()

    def _reply(self, status, payload):
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body of %d bytes is over %d" % (length, MAX_BODY))
        return self.rfile.read(length) if length else b""

    def _forward(self):
        cfg = self.config
        path = urllib.parse.urlsplit(self.path).path
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._reply(413, {"error": {"code": 413, "message": str(exc), "type": "too_large"}})
            return
        if (self.command, path) in REFUSED:
            self._reply(403, {"error": {"code": 403, "type": "forbidden", "message":
                                        "the adapters' global scales are fixed; name an adapter "
                                        "in the request's model field instead"}})
            return
        if self.command == "POST" and body:
            body = with_adapter(body, cfg["adapters"]) or body
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() not in ("content-length", "host")}
        headers["Host"] = "%s:%d" % (cfg["upstream_host"], cfg["upstream_port"])
        if body or self.command in ("POST", "PUT"):
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(cfg["upstream_host"], cfg["upstream_port"],
                                              timeout=UPSTREAM_TIMEOUT)
        try:
            try:
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
            except OSError as exc:
                self._reply(502, {"error": {"code": 502, "type": "unavailable_error",
                                            "message": "llama-server did not answer: %s" % exc}})
                return
            if self.command == "GET" and path in MODEL_LISTS and response.status == 200:
                payload = response.read()
                payload = with_adapter_models(payload, cfg["base_model"], cfg["adapters"]) \
                    or payload
                self.send_response(response.status)
                self._copy_headers(response)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            self._stream(response)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; closing upstream stops the generation
        finally:
            upstream.close()

    def _copy_headers(self, response):
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)

    def _stream(self, response):
        """Relay the answer as it arrives: chunked to the client unless its length is known."""
        length = response.getheader("Content-Length")
        self.send_response(response.status)
        self._copy_headers(response)
        if self.command == "HEAD" or response.status in (204, 304):
            self.send_header("Content-Length", length or "0")
            self.end_headers()
            return
        if length is not None:
            self.send_header("Content-Length", length)
            self.end_headers()
            while True:
                piece = response.read(65536)
                if not piece:
                    return
                self.wfile.write(piece)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            piece = response.read1(65536)
            if not piece:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True  # a stuck client does not hold the service's stop
    allow_reuse_address = True


def serve(config):
    handler = type("ConfiguredHandler", (Handler,), {"config": config})
    server = Server((config["listen_host"], config["listen_port"]), handler)
    print("llm-lora-router on %s:%d -> %s:%d, adapters: %s"
          % (config["listen_host"], config["listen_port"], config["upstream_host"],
             config["upstream_port"], ", ".join(config["adapters"])), flush=True)
    return server


def main(argv):
    if len(argv) != 2:
        print("usage: llm_lora_router.py CONFIG.json", file=sys.stderr)
        return 2
    server = serve(load_config(argv[1]))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
