"""The llama-cpp-python sdist the builder downloads (roles/llamacpp/tasks/sdist.yml).

The role's real tasks run on this machine against a local package index (simple API, HTML form,
relative links like a mirror's): the file is found, fetched and kept only when its SHA-256 is the
pinned one (llamacpp_sdist_sha256); a substituted file is refused and nothing is left in place.
"""

import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from conftest import REPO, local_play  # noqa: E402
from llm_index import index_file_url  # noqa: E402

SDIST = "llama_cpp_python-0.3.36.tar.gz"
PLAY = """
- hosts: h1
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: llamacpp
        tasks_from: sdist
"""


def test_index_link_from_html_is_resolved_against_the_page_and_loses_its_fragment():
    page = '<html><body><a href="../../files/ab/%s#sha256=00">%s</a>\n<a href="x-0.1.tar.gz">x</a>' % (SDIST, SDIST)
    url = index_file_url(page, "https://mirror.example/simple/llama-cpp-python/", SDIST)
    assert url == "https://mirror.example/files/ab/" + SDIST


def test_index_link_from_the_json_form():
    page = {"files": [{"filename": "llama_cpp_python-0.3.35.tar.gz", "url": "https://f.example/35.tar.gz"},
                      {"filename": SDIST, "url": "/packages/ec/e9/" + SDIST}]}
    assert index_file_url(page, "https://pypi.org/simple/llama-cpp-python/", SDIST) == \
        "https://pypi.org/packages/ec/e9/" + SDIST


def test_index_page_without_the_file_fails_naming_it():
    with pytest.raises(AnsibleFilterError, match="does not list %s" % SDIST):
        index_file_url("<a href='llama_cpp_python-0.3.35.tar.gz'>", "https://pypi.org/simple/llama-cpp-python/", SDIST)


@pytest.fixture()
def index(tmp_path):
    """A package index on 127.0.0.1 serving /simple/llama-cpp-python/ and the file it links to."""
    body = {"data": b"sdist bytes " * 1000}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/simple/llama-cpp-python/":
                data = ('<a href="../../packages/ec/%s#sha256=%s">%s</a>'
                        % (SDIST, hashlib.sha256(body["data"]).hexdigest(), SDIST)).encode()
                ctype = "text/html"
            elif self.path == "/packages/ec/" + SDIST:
                data, ctype = body["data"], "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/simple" % server.server_address[1], body
    server.shutdown()


def _run(tmp_path, index_url, sha256):
    inv, env = local_play(tmp_path, no_proxy="127.0.0.1", NO_PROXY="127.0.0.1")
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    extra = {"llamacpp_build_dir": str(tmp_path / "build"), "llm_python_index_url": index_url,
             "llamacpp_sdist_sha256": {"0.3.36": sha256}, "llamacpp_build_flavor": "cpu"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv), str(play),
                           "-e", json.dumps(extra)], cwd=str(REPO), env=env, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_sdist_is_fetched_from_the_index_and_kept_only_with_the_pinned_sha256(tmp_path, index):
    url, body = index
    good = hashlib.sha256(body["data"]).hexdigest()
    rc, out = _run(tmp_path, url, good)
    assert rc == 0, out
    placed = tmp_path / "build" / "sdist" / SDIST
    assert placed.read_bytes() == body["data"]
    # Re-run: the file is there with the right digest, the index is not read again.
    rc, out = _run(tmp_path, url, good)
    assert rc == 0 and "changed=0" in out, out

    # The index now serves another file under the same name: refused, the placed copy is not replaced by it.
    placed.unlink()
    body["data"] = b"substituted " * 1000
    rc, out = _run(tmp_path, url, good)
    assert rc != 0, out
    assert "SHA-256 is" in out and SDIST in out, out[-3000:]
    assert not placed.exists()


def test_a_version_without_a_pinned_sha256_is_refused_naming_the_variable(tmp_path, index):
    url, _ = index
    rc, out = _run(tmp_path, url, "")
    assert rc != 0
    assert "llamacpp_sdist_sha256 has no SHA-256 for llama-cpp-python 0.3.36" in out
    assert not (tmp_path / "build").exists()
