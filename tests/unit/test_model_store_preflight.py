"""model_store's preflight (run by site.yml before any change): https only, safe SHA256SUMS names,
disk room with the numbers, and no question to the source once the model is staged.

Runs the role's preflight tasks with ansible-playbook (local connection) against the local mirror
of test_llm_fetch.py.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_llm_fetch import BLOB, BLOB_SHA, server  # noqa: F401 (fixture)

from conftest import local_play

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")

PLAY = """
- hosts: all
  gather_facts: false
  vars:
    llm_plan: {quantization: bf16, model_repo: Qwen/Qwen2.5-7B-Instruct, model_revision: '', weights_bytes: 1000}
  tasks:
    - name: Model store preflight
      ansible.builtin.include_role:
        name: model_store
        tasks_from: preflight
"""


def _preflight(tmp_path, url, *extra):
    book = tmp_path / "play.yml"
    book.write_text(PLAY)
    inv, env = local_play(tmp_path)
    cmd = [
        PLAYBOOK,
        "-i",
        str(inv),
        str(book),
        "-e",
        "model_store_source=http",
        "-e",
        "model_store_http_url=%s" % url,
        "-e",
        "model_store_root=%s" % (tmp_path / "models"),
        "-e",
        "model_store_name=m",
    ]
    for e in extra:
        cmd += ["-e", e]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())  # messages are folded


def _sums(*names):
    return "".join("%s  %s\n" % (BLOB_SHA, name) for name in names)


def test_plain_http_mirror_is_refused_naming_the_variable(tmp_path, server):  # noqa: F811
    server.files["SHA256SUMS"] = _sums("model.bin").encode()
    rc, out = _preflight(tmp_path, server.url)
    assert rc != 0, out
    assert "model_store_http_url is plain http (%s)" % server.url in out, out
    assert "set model_store_http_allow_insecure: true" in out, out
    assert server.requests == [], "refused before asking the mirror"


def test_sha256sums_with_a_name_outside_the_model_folder_is_refused(tmp_path, server):  # noqa: F811
    server.files["SHA256SUMS"] = _sums("model.bin", "../../etc/cron.d/evil").encode()
    rc, out = _preflight(tmp_path, server.url, "model_store_http_allow_insecure=true")
    assert rc != 0, out
    assert (
        "SHA256SUMS line 2" in out and "'../../etc/cron.d/evil' is not a safe relative path" in out
    ), out


def test_disk_too_small_is_refused_with_the_numbers(tmp_path, server):  # noqa: F811
    server.files["SHA256SUMS"] = _sums("model.bin").encode()
    rc, out = _preflight(
        tmp_path,
        server.url,
        "model_store_http_allow_insecure=true",
        "model_store_disk_margin_bytes=%d" % (1 << 60),
    )
    assert rc != 0, out
    assert "Not enough disk for the model on h1: need 1073741824.0 GiB, have" in out, out
    assert "GiB on /" in out and "model_store_root %s" % (tmp_path / "models") in out, out


def test_bytes_an_interrupted_run_left_count_as_already_there(tmp_path, server):  # noqa: F811
    # A sparse 16 GiB partial (its size counts, it takes no disk) and a margin that fits only when it
    # is subtracted: need = file + margin - partial = free - 8 GiB; without the partial, free + 8 GiB.
    # (8 GiB either side: other jobs writing to the same disk meanwhile do not move the outcome.)
    server.files["SHA256SUMS"] = _sums("model.bin").encode()
    partial = tmp_path / "models" / ".partial" / "m"
    partial.mkdir(parents=True)
    with open(partial / "model.bin", "wb") as handle:
        handle.truncate(16 << 30)
    st = os.statvfs(tmp_path)
    margin = st.f_bavail * st.f_frsize - len(BLOB) + (8 << 30)
    rc, out = _preflight(
        tmp_path,
        server.url,
        "model_store_http_allow_insecure=true",
        "model_store_disk_margin_bytes=%d" % margin,
    )
    assert rc == 0, out
    assert ("HEAD", "/model.bin", None) in server.requests  # the size comes from the mirror
    os.unlink(partial / "model.bin")
    rc, out = _preflight(
        tmp_path,
        server.url,
        "model_store_http_allow_insecure=true",
        "model_store_disk_margin_bytes=%d" % margin,
    )
    assert rc != 0 and "Not enough disk for the model" in out, out


def test_staged_model_asks_the_mirror_nothing(tmp_path, server):  # noqa: F811
    server.files["SHA256SUMS"] = _sums("model.bin").encode()
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    (model / ".model_store-staged").write_text("http %s\n" % server.url)
    rc, out = _preflight(
        tmp_path,
        server.url,
        "model_store_http_allow_insecure=true",
        "model_store_disk_margin_bytes=%d" % (1 << 60),
    )
    assert rc == 0, out
    assert server.requests == [], out


def test_marker_identity_is_what_preflight_compares():
    # Guards the test above: the marker text it writes is the role's identity for source http.
    text = (REPO / "roles" / "model_store" / "vars" / "main.yml").read_text()
    assert "'http' -%}http {{ model_store_http_url }}" in text
    assert hashlib.sha256(BLOB).hexdigest() == BLOB_SHA
