"""TEST STAND-IN ONLY: a minimal OpenAI-compatible server on 127.0.0.1:8000, used by molecule/front until an
engine role lands. Never deployed by the bundle. Key from the STANDIN_KEY environment variable."""
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = os.environ["STANDIN_KEY"]
MODEL = os.environ.get("STANDIN_MODEL", "tiny-standin")
COUNT = {"n": 0}


class H(BaseHTTPRequestHandler):
    def _send(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self):
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._send(401, {"error": {"message": "Unauthorized"}})
            return False
        return True

    def do_GET(self):
        if self.path == "/metrics":
            return self._send(200, f"vllm:request_success_total {COUNT['n']}\n", "text/plain")
        if self.path == "/health":
            return self._send(200, "")
        if not self._authorized():
            return
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "standin"}]})
        self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if not self._authorized():
            return
        if self.path == "/v1/chat/completions":
            COUNT["n"] += 1
            msg = {"role": "assistant", "content": "stand-in reply"}
            if body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL,
                         "choices": [{"index": 0, "delta": msg, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
                return
            return self._send(200, {"id": "c", "object": "chat.completion", "created": int(time.time()), "model": MODEL,
                                    "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                                    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
        self._send(404, {"error": "not found"})


ThreadingHTTPServer(("127.0.0.1", 8000), H).serve_forever()
