"""llm_fetch: safe names from SHA256SUMS, https only, resumed downloads, checksum refusals.

The downloads run against a real local HTTP server (a thread in the test) that honours Range
requests like a CDN, can ignore them, and can cut a response half-way; the module runs in-process
with its real opener (ansible.module_utils.urls.open_url).
"""

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import Request, urlopen

import llm_fetch as fetch_module
import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes
from ansible.module_utils.llm_fetch import (
    FetchError,
    build_files,
    check_name,
    check_url,
    download,
    parse_sha256sums,
)

BLOB = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes, not a multiple of the chunk size
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def _answer(self, head):
        srv = self.server
        srv.requests.append((self.command, self.path, self.headers.get("Range")))
        body = srv.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(body))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))
        else:
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        if head:
            return
        if srv.cut_after is not None:
            self.wfile.write(part[: srv.cut_after])
            srv.cut_after = None
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {"model.bin": BLOB, "LICENSE": b"Apache-2.0\n"}
    srv.requests = []
    srv.honour_range = True
    srv.cut_after = None
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = "http://127.0.0.1:%d" % srv.server_address[1]
    yield srv
    srv.shutdown()
    srv.server_close()


def _opener(url, headers, timeout, method):
    return urlopen(Request(url, headers=headers, method=method), timeout=timeout)


def _gets(srv):
    return [(path, rng) for method, path, rng in srv.requests if method == "GET"]


# --- names and URLs ---------------------------------------------------------------------------


def test_sha256sums_lines_give_names_and_checksums():
    text = "%s  model-00001-of-00002.safetensors\n%s *sub/config.json\n\n" % ("a" * 64, "B" * 64)
    assert parse_sha256sums(text) == [
        ("model-00001-of-00002.safetensors", "a" * 64),
        ("sub/config.json", "b" * 64),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "../../etc/cron.d/x",
        "a/../../b",
        "",
        " ",
        ".hidden",
        "a//b",
        "a/",
        "we ird.bin",
        "a\\b",
        "x;rm -rf",
    ],
)
def test_sha256sums_name_that_could_leave_the_model_folder_is_refused_naming_the_line(name):
    text = "%s  ok.bin\n%s  %s\n" % ("a" * 64, "b" * 64, name)
    with pytest.raises(FetchError) as err:
        parse_sha256sums(text)
    assert "SHA256SUMS line 2" in str(err.value)
    assert "not a safe relative path" in str(err.value) or "not '<64 hex digits>" in str(err.value)


def test_sha256sums_malformed_or_duplicate_lines_are_refused():
    with pytest.raises(FetchError, match="line 1 .*not '<64 hex digits>"):
        parse_sha256sums("abc  model.bin\n")
    with pytest.raises(FetchError, match="line 2 .*listed twice"):
        parse_sha256sums("%s  a.bin\n%s  a.bin\n" % ("a" * 64, "b" * 64))
    with pytest.raises(FetchError, match="lists no files"):
        parse_sha256sums("\n\n")


def test_safe_names_pass():
    for name in (
        "LICENSE",
        "model.safetensors",
        "onnx/model_q4.onnx",
        "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
    ):
        assert check_name(name, "x") == name


def test_plain_http_is_refused_naming_the_variable_unless_allowed():
    with pytest.raises(FetchError, match="model_store_http_allow_insecure: true"):
        check_url("http://mirror.lan/model.bin", False, "model_store_http_url")
    assert check_url("http://mirror.lan/m", True, "v") == "http://mirror.lan/m"
    assert check_url("https://mirror.lan/m", False, "v") == "https://mirror.lan/m"
    with pytest.raises(FetchError, match="must be an https URL"):
        check_url("ftp://mirror.lan/m", True, "v")


def test_hub_listing_entries_are_accepted_as_they_are():
    files = build_files(
        [
            {"rfilename": "model.safetensors", "size": 10, "lfs": {"sha256": "C" * 64}},
            {"rfilename": "config.json", "size": 2},
        ],
        base_url="https://hf.example/r/resolve/abc",
    )
    assert files[0] == {
        "name": "model.safetensors",
        "sha256": "c" * 64,
        "size": 10,
        "url": "https://hf.example/r/resolve/abc/model.safetensors",
    }
    assert files[1]["sha256"] is None
    with pytest.raises(FetchError, match=r"files\[0\].*'\.\./x'"):
        build_files([{"rfilename": "../x"}], base_url="https://hf.example")


# --- downloads --------------------------------------------------------------------------------


def test_full_download_matches_its_checksum(server, tmp_path):
    part = tmp_path / "p" / "model.bin"
    seen = []
    got = download(
        _opener,
        server.url + "/model.bin",
        str(part),
        {},
        10,
        BLOB_SHA,
        on_bytes=lambda pos, n: seen.append(pos),
    )
    assert got == {"sha256": BLOB_SHA, "size": len(BLOB), "resumed_from": 0}
    assert part.read_bytes() == BLOB
    assert seen[0] == 0 and seen[-1] == len(BLOB)
    assert _gets(server) == [("/model.bin", None)]


def test_partial_file_is_resumed_with_a_range_request(server, tmp_path):
    part = tmp_path / "model.bin"
    part.write_bytes(BLOB[:300000])
    got = download(_opener, server.url + "/model.bin", str(part), {}, 10, BLOB_SHA)
    assert got["resumed_from"] == 300000
    assert part.read_bytes() == BLOB
    assert _gets(server) == [("/model.bin", "bytes=300000-")]


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    server.honour_range = False
    part = tmp_path / "model.bin"
    part.write_bytes(BLOB[:300000])
    got = download(_opener, server.url + "/model.bin", str(part), {}, 10, BLOB_SHA)
    assert got["resumed_from"] == 0
    assert part.read_bytes() == BLOB


def test_corrupt_partial_is_fetched_again_from_zero(server, tmp_path):
    part = tmp_path / "model.bin"
    part.write_bytes(b"\xff" * 1000)  # left by another revision of the file
    got = download(_opener, server.url + "/model.bin", str(part), {}, 10, BLOB_SHA)
    assert got["resumed_from"] == 0 and part.read_bytes() == BLOB
    assert _gets(server) == [("/model.bin", "bytes=1000-"), ("/model.bin", None)]


def test_complete_partial_answered_416_is_kept(server, tmp_path):
    part = tmp_path / "model.bin"
    part.write_bytes(BLOB)
    got = download(_opener, server.url + "/model.bin", str(part), {}, 10, BLOB_SHA)
    assert got == {"sha256": BLOB_SHA, "size": len(BLOB), "resumed_from": len(BLOB)}


def test_checksum_mismatch_removes_the_download_and_fails(server, tmp_path):
    part = tmp_path / "model.bin"
    with pytest.raises(
        FetchError, match="SHA-256 is %s but the listing says %s" % (BLOB_SHA, "0" * 64)
    ):
        download(_opener, server.url + "/model.bin", str(part), {}, 10, "0" * 64)
    assert not part.exists()


def test_cut_connection_keeps_the_partial_and_the_next_call_resumes(server, tmp_path):
    part = tmp_path / "model.bin"
    server.cut_after = 200000
    with pytest.raises(FetchError, match="the next run resumes"):
        download(_opener, server.url + "/model.bin", str(part), {}, 10, BLOB_SHA)
    assert part.stat().st_size == 200000
    got = download(_opener, server.url + "/model.bin", str(part), {}, 10, BLOB_SHA)
    assert got["resumed_from"] == 200000 and part.read_bytes() == BLOB
    assert _gets(server)[-1] == ("/model.bin", "bytes=200000-")


def test_http_error_names_the_url(server, tmp_path):
    with pytest.raises(FetchError, match="GET %s/missing.bin: HTTP 404" % server.url):
        download(_opener, server.url + "/missing.bin", str(tmp_path / "m"), {}, 10)


# --- the module, in-process with its real opener ----------------------------------------------


def _run(monkeypatch, capsys, args, check_mode=False):
    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check_mode)}
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps(payload)))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    with pytest.raises(SystemExit):
        fetch_module.main()
    return json.loads(capsys.readouterr().out)


def _sums():
    return "%s  model.bin\n%s  LICENSE\n" % (BLOB_SHA, hashlib.sha256(b"Apache-2.0\n").hexdigest())


def test_module_downloads_into_partial_then_places_files_and_cleans_up(
    server, tmp_path, monkeypatch, capsys
):
    root = tmp_path / "models"
    dest, partial = root / "m", root / ".partial" / "m"
    (partial).mkdir(parents=True)
    (partial / "model.bin").write_bytes(BLOB[:100000])  # an interrupted earlier run
    args = {
        "sums": _sums(),
        "base_url": server.url,
        "allow_insecure": True,
        "dest": str(dest),
        "partial_dir": str(partial),
        "mode": "0640",
    }
    res = _run(monkeypatch, capsys, args)
    assert res["changed"] is True, res
    assert [(f["name"], f["action"]) for f in res["files"]] == [
        ("model.bin", "resumed"),
        ("LICENSE", "downloaded"),
    ]
    assert res["total_bytes"] == len(BLOB) + 11 and res["fetched_bytes"] == len(BLOB) - 100000 + 11
    assert (dest / "model.bin").read_bytes() == BLOB
    assert oct((dest / "model.bin").stat().st_mode & 0o777) == "0o640"
    assert not (root / ".partial").exists()  # no leftovers, not even the progress file
    assert res["sha256sums"] == _sums()
    # Second run: every file is in place with its checksum, nothing is fetched.
    server.requests.clear()
    res = _run(monkeypatch, capsys, args)
    assert res["changed"] is False and [f["action"] for f in res["files"]] == ["kept", "kept"]
    assert server.requests == []


def test_module_refuses_unsafe_names_and_plain_http_before_writing(
    server, tmp_path, monkeypatch, capsys
):
    args = {
        "sums": "%s  ../../etc/passwd\n" % BLOB_SHA,
        "base_url": server.url,
        "allow_insecure": True,
        "dest": str(tmp_path / "m"),
        "partial_dir": str(tmp_path / "p"),
    }
    res = _run(monkeypatch, capsys, args)
    assert (
        res["failed"] and "SHA256SUMS line 1" in res["msg"] and "'../../etc/passwd'" in res["msg"]
    )
    res = _run(monkeypatch, capsys, dict(args, sums=_sums(), allow_insecure=False))
    assert res["failed"] and "model_store_http_allow_insecure" in res["msg"]
    assert not (tmp_path / "m").exists() and not (tmp_path / "p").exists()


def test_module_checksum_mismatch_fails_and_leaves_no_file(server, tmp_path, monkeypatch, capsys):
    server.files["model.bin"] = BLOB[::-1]  # the mirror serves other bytes than its SHA256SUMS says
    args = {
        "sums": _sums(),
        "base_url": server.url,
        "allow_insecure": True,
        "dest": str(tmp_path / "m"),
        "partial_dir": str(tmp_path / "p"),
    }
    res = _run(monkeypatch, capsys, args)
    assert res["failed"] and "SHA-256 is" in res["msg"] and BLOB_SHA in res["msg"]
    assert not (tmp_path / "m" / "model.bin").exists()
    assert not (tmp_path / "p" / "model.bin").exists()


def test_module_probe_reads_sizes_and_check_mode_writes_nothing(
    server, tmp_path, monkeypatch, capsys
):
    res = _run(
        monkeypatch,
        capsys,
        {"sums": _sums(), "base_url": server.url, "allow_insecure": True, "probe": True},
    )
    assert res["changed"] is False and res["total_bytes"] == len(BLOB) + 11
    assert [m for m, _, _ in server.requests] == ["HEAD", "HEAD"]
    res = _run(
        monkeypatch,
        capsys,
        {
            "sums": _sums(),
            "base_url": server.url,
            "allow_insecure": True,
            "dest": str(tmp_path / "m"),
            "partial_dir": str(tmp_path / "p"),
        },
        check_mode=True,
    )
    assert res["changed"] is True and [f["action"] for f in res["files"]] == [
        "download",
        "download",
    ]
    assert not os.path.exists(tmp_path / "m") and not os.path.exists(tmp_path / "p")
