"""The offline bundle: its manifest (plugins/modules/llm_bundle_manifest.py), the model list the inventory needs
(plugins/filter/llm_offline.py) and playbooks/offline-bundle.yml itself, run twice against the demo inventory on this
controller: the second export downloads nothing and changes nothing, and `sha256sum -c MANIFEST.sha256` passes.

The playbook test exports into its own bundle ($LLM_BUNDLE_CACHE/offline-bundle-unit), never into the one molecule's
air-gapped host installs from (offline-bundle-molecule, which `make setup` makes): `make test` runs this beside
molecule default, and an export that found a newer package in the archive (a security update published in the
meantime) re-signed that bundle's index between default's converge and its idempotence run. A missing unit bundle
starts as a copy of molecule's (or empty); the first export brings it up to date, the second must change nothing.
"""

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import llm_bundle_manifest as manifest
import pytest
from llm_offline import (
    ROLE_DEBS,
    llm_offline_debs,
    llm_offline_missing,
    llm_offline_missing_wheels,
    llm_offline_models,
)

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LLM_BUNDLE_CACHE", "/var/cache/llm-bundle"))


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_manifest_lists_every_file_with_kind_name_version_and_is_checked_by_sha256sum(tmp_path):
    deb = write(tmp_path / "debs" / "nginx_1.22.1-9%3a1_amd64.deb", b"deb")
    write(tmp_path / "debs" / "Packages", b"Package: nginx\n")
    whl = write(tmp_path / "wheels" / "open_webui-0.12.4-py3-none-any.whl", b"whl")
    write(tmp_path / "wheels" / "pypika-0.48.9.tar.gz", b"sdist")
    write(tmp_path / "models" / "tiny" / ".model_store-staged", b"hf https://hf.co/Qwen/x@" + b"a" * 40 + b" re\n")
    write(tmp_path / "models" / "tiny" / "m.gguf", b"gguf")
    write(tmp_path / "models" / "adapters" / "lora-hf" / "SOURCE", b"controller 1234\n")
    write(tmp_path / "models" / "adapters" / "lora-hf" / "adapter_config.json", b"{}")
    write(tmp_path / ".gnupg" / "private.key", b"secret")          # hidden: never listed
    write(tmp_path / "debs" / "partial" / "half.deb", b"half")     # apt's leftovers: never listed
    write(tmp_path / "debs" / "lock", b"")

    result = manifest.run(str(tmp_path))
    assert result["changed"] and result["files"] == 7
    by_path = {e["path"]: e for e in result["entries"]}
    assert by_path["debs/nginx_1.22.1-9%3a1_amd64.deb"] == {
        "kind": "deb", "name": "nginx", "version": "1.22.1-9:1", "sha256": deb, "size": 3,
        "path": "debs/nginx_1.22.1-9%3a1_amd64.deb"}
    assert (by_path["wheels/open_webui-0.12.4-py3-none-any.whl"]["name"],
            by_path["wheels/open_webui-0.12.4-py3-none-any.whl"]["version"],
            by_path["wheels/open_webui-0.12.4-py3-none-any.whl"]["sha256"]) == ("open_webui", "0.12.4", whl)
    assert by_path["wheels/pypika-0.48.9.tar.gz"]["kind"] == "sdist"
    assert by_path["models/tiny/m.gguf"]["name"] == "tiny:m.gguf"
    assert by_path["models/tiny/m.gguf"]["version"] == "a" * 40
    assert by_path["models/adapters/lora-hf/adapter_config.json"]["name"] == "adapters/lora-hf:adapter_config.json"
    assert by_path["models/adapters/lora-hf/adapter_config.json"]["version"] == "controller 1234"
    assert not any(".gnupg" in p or "partial" in p or p.endswith("lock") for p in by_path)

    check = subprocess.run(["sha256sum", "--check", "--strict", "MANIFEST.sha256"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["bytes"] == sum(e["size"] for e in doc["files"]) == result["bytes"]

    # Nothing changed: nothing rewritten. A damaged file is found by sha256sum -c.
    assert manifest.run(str(tmp_path))["changed"] is False
    (tmp_path / "wheels" / "open_webui-0.12.4-py3-none-any.whl").write_bytes(b"WHL")
    check = subprocess.run(["sha256sum", "--check", "--strict", "MANIFEST.sha256"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 1 and "open_webui-0.12.4-py3-none-any.whl: FAILED" in check.stdout


def test_manifest_reuses_the_digest_of_an_unchanged_file(tmp_path, monkeypatch):
    write(tmp_path / "wheels" / "a-1.0-py3-none-any.whl", b"a")
    manifest.run(str(tmp_path))
    monkeypatch.setattr(manifest, "sha256_file", lambda path: pytest.fail("read %s again" % path))
    assert manifest.run(str(tmp_path))["changed"] is False


def test_manifest_check_mode_writes_nothing(tmp_path):
    write(tmp_path / "wheels" / "a-1.0-py3-none-any.whl", b"a")
    assert manifest.run(str(tmp_path), check_mode=True)["changed"] is True
    assert not (tmp_path / "MANIFEST.sha256").exists()


class HostVars(dict):
    """hostvars[host] answers .get like Ansible's HostVarsVars."""


def test_models_of_the_inventory_each_once():
    embedding = {"name": "Qwen3-Embedding-0.6B", "file": "q.gguf", "source": "hf", "repo": "Qwen/E", "revision": "b" * 40}
    hostvars = {
        "demo": HostVars(model_store_source="controller", model_store_controller_src="/c/models/tiny-gguf/",
                         llm_lora_adapters=[{"name": "l", "format": "hf", "rank": 8, "source": "controller",
                                             "controller_src": "/c/l"},
                                            {"name": "l", "format": "gguf", "source": "controller",
                                             "controller_src": "/c/l-gguf"},
                                            {"name": "p", "format": "gguf", "source": "path", "path": "/srv/p"}],
                         embeddings_model={"name": "tiny-embed", "file": "t.gguf", "source": "controller",
                                           "controller_src": "/c/e"}),
        "gpu1": HostVars(llm_engine="llamacpp"),
        "gpu2": HostVars(llm_engine="auto", llm_rag_enabled=False),
        "nfs": HostVars(model_store_source="path", model_store_path="/srv/qwen"),
    }
    models = llm_offline_models(hostvars, ["demo", "gpu1", "gpu2", "nfs"], embedding)
    assert [(m["kind"], m["dir"]) for m in models] == [
        ("model", "tiny-gguf"), ("adapter", "adapters/l-hf"), ("adapter", "adapters/l-gguf"),
        ("embedding", "embeddings/tiny-embed"),
        ("model", "Qwen2.5-7B-Instruct-GGUF"), ("embedding", "embeddings/Qwen3-Embedding-0.6B"),
        ("model", "Qwen2.5-7B-Instruct")]
    gguf = models[4]
    assert gguf == {"kind": "model", "name": "Qwen2.5-7B-Instruct-GGUF", "dir": "Qwen2.5-7B-Instruct-GGUF",
                    "format": "gguf", "source": "hf", "repo": "Qwen/Qwen2.5-7B-Instruct-GGUF",
                    "revision": "bb5d59e06d9551d752d08b292a50eb208b07ab1f"}
    assert models[0]["format"] == "gguf" and models[0]["controller_src"] == "/c/models/tiny-gguf"
    assert models[1]["rank"] == 8 and models[3]["file"] == "t.gguf"


def recap(log: str) -> dict:
    m = re.search(r"localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", log)
    assert m, log[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups())))


@pytest.mark.skipif(not (CACHE / "models" / "tiny-embed-gguf").is_dir(), reason="needs the test assets (make assets)")
def test_debs_every_host_needs_are_base_and_role_packages_each_once():
    debs = llm_offline_debs(["curl", "nginx"], ["htop"])
    assert debs == sorted(set(debs))
    assert {"curl", "htop", "nginx", "python3-apt", "python3-packaging", "nftables", "postgresql"} <= set(debs)
    assert len(debs) == len(ROLE_DEBS) + 2  # nginx is a role package too


def fake_bundle(root: Path):
    write(root / "MANIFEST.sha256", b"")
    write(root / "debs" / "Packages", b"Package: curl\nVersion: 1\n\nPackage: nginx\nVersion: 2\n")
    write(root / "models" / "tiny-gguf" / "SHA256SUMS", b"x  m.gguf\n")
    write(root / "models" / "embeddings" / "tiny-embed" / "m.gguf", b"no SHA256SUMS beside it")
    write(root / "llama-server" / "debian12-cpu" / "llm-llama-server_0.3.36-2+debian12.cpu_amd64.deb", b"deb")
    write(root / "wheels" / "uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl", b"w")
    write(root / "wheels" / "Jinja2-3.1.6-py3-none-any.whl", b"w")
    write(root / "wheels" / "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl", b"w")
    return root


def test_missing_lists_everything_a_host_needs_that_the_bundle_lacks(tmp_path):
    bundle = fake_bundle(tmp_path)
    assert llm_offline_missing(str(bundle), ["curl", "nginx"], ["tiny-gguf"], ["debian12-cpu", "debian12-*"]) == []
    missing = llm_offline_missing(str(bundle), ["curl", "nftables", "nginx", "redis-server"],
                                  ["tiny-gguf", "embeddings/tiny-embed", "Qwen2.5-7B-Instruct-GGUF"],
                                  ["debian12-cuda*", "debian13-*"])
    assert missing == [
        "Debian packages: nftables, redis-server",
        "model folder models/embeddings/tiny-embed (with its SHA256SUMS)",
        "model folder models/Qwen2.5-7B-Instruct-GGUF (with its SHA256SUMS)",
        "the llama-server package of variant debian12-cuda* (under llama-server/)",
        "the llama-server package of variant debian13-* (under llama-server/)",
    ]
    # No bundle at all (never exported, or a wrong llm_offline_bundle_dir): one line saying so.
    assert llm_offline_missing(str(tmp_path / "nowhere"), ["curl"], [], []) == [
        f"the bundle itself: {tmp_path / 'nowhere'} has no MANIFEST.sha256 (make it with playbooks/offline-bundle.yml)"
    ]


def test_missing_wheels_of_a_lock_by_normalised_name_and_exact_version(tmp_path):
    bundle = fake_bundle(tmp_path)
    lock = "\n".join([
        "# comment",
        "uv==0.13.9 \\",
        "    --hash=sha256:" + "a" * 64,
        "jinja2==3.1.6 \\",                              # Jinja2-3.1.6: names compare normalised
        "torch==2.13.0+cpu \\",                          # the local label is part of the file name
        "markupsafe==3.0.2 \\",                          # not in the bundle
        "pywin32==311 ; sys_platform == 'win32' \\",     # a universal lock's Windows pin: not for the host
        "uvloop==0.21.0 ; sys_platform != 'win32' \\",   # for the host: missing
        "jinja2==3.1.5",                                 # another version: missing
    ])
    assert llm_offline_missing_wheels(lock, str(bundle)) == ["markupsafe==3.0.2", "uvloop==0.21.0", "jinja2==3.1.5"]
    assert llm_offline_missing_wheels(lock, str(tmp_path / "nowhere"))[:1] == ["uv==0.13.9"]
    # The shipped uv lock (universal: every platform's file) needs exactly its one wheel.
    uv_lock = next((REPO / "roles/python_runtime/files").glob("uv-*.txt")).read_text()
    assert llm_offline_missing_wheels(uv_lock, str(bundle)) == []


def export(cmd: list, env: dict) -> subprocess.CompletedProcess:
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3000)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return run


def test_export_of_the_demo_inventory_twice_downloads_nothing_the_second_time():
    bundle = CACHE / "offline-bundle-unit"
    seed = CACHE / "offline-bundle-molecule"
    if not bundle.exists() and (seed / "MANIFEST.sha256").is_file():
        subprocess.run(["cp", "-a", "--reflink=auto", str(seed), str(bundle)], check=True)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), LLM_BUNDLE_CACHE=str(CACHE),
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    cmd = ["ansible-playbook", "-i", str(REPO / "inventories" / "demo"), str(REPO / "playbooks" / "offline-bundle.yml"),
           "-e", f"llm_offline_bundle_dir={bundle}"]
    # The first export signs the index again (gpg starts an agent for the bundle's keyring, which must not stay).
    (bundle / "debs" / "InRelease").unlink(missing_ok=True)
    export(cmd, env)
    assert (bundle / "debs" / "InRelease").is_file()
    agents = subprocess.run(["pgrep", "-af", f"gpg-agent --homedir {bundle}/.gnupg"], capture_output=True, text=True)
    assert agents.stdout == "", agents.stdout
    second = export(cmd, env)
    assert recap(second.stdout)["changed"] == 0, second.stdout[-6000:]
    # Nothing fetched: apt had every package, pip every wheel (it says "Saved" for each download), the models
    # were staged (no copy task ran).
    assert "Saved " not in second.stdout
    assert "Fetch the model from" not in second.stdout

    check = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", "MANIFEST.sha256"], cwd=bundle,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr
    doc = json.loads((bundle / "manifest.json").read_text())
    names = {(e["kind"], e["name"]) for e in doc["files"]}
    for deb in ("nginx", "postgresql-15", "redis-server", "prometheus", "nftables", "python3-apt", "libgomp1"):
        assert ("deb", deb) in names, deb
    for wheel in ("open_webui", "chromadb", "uv", "torch"):
        assert ("wheel", wheel) in names, wheel
    assert ("model", "embeddings/tiny-embed:tiny-embed-q4_k_m.gguf") in names
    assert ("model", "adapters/tiny-lora-gguf:tiny-qwen2.5-instruct-lora-f16.gguf") in names
    assert any(e["kind"] == "deb" and e["name"] == "llm-llama-server" for e in doc["files"])
    # The repository is signed by the bundle's key, which verifies it; the secret key is not in the manifest.
    verify = subprocess.run(["gpgv", "--keyring", str(bundle / "keys" / "llm-offline-archive.gpg"),
                             str(bundle / "debs" / "InRelease")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert not any(".gnupg" in e["path"] for e in doc["files"])
    # Release lists the index's real digest.
    packages = (bundle / "debs" / "Packages").read_bytes()
    release = (bundle / "debs" / "Release").read_text()
    assert hashlib.sha256(packages).hexdigest() in release
    # apt warns about a Release without a Date; it is the index's own time, so the same index signs the same file.
    assert re.search(r"(?m)^Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d UTC$", release), release
