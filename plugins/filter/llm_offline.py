# -*- coding: utf-8 -*-
"""Filters of the offline bundle (playbooks/offline-bundle.yml).

llm_offline_models(hostvars, hosts, embedding_default): the model folders the inventory's hosts
stage, each once - the model of each host's source (a controller folder, a mirror, or the Hub
repositories the planner pins for its engine: the GGUF Q4_K_M for llama.cpp, the bf16 weights for
vLLM, both for `auto`), every LoRA adapter (one folder per format) and the embedding model. Each
entry: kind (model, adapter, embedding), name, dir (its folder under the bundle's models/), format
(hf, gguf) and the source fields model_store reads (source, repo, revision, http_url,
controller_src). A host whose weights are already on it (source path) adds nothing.

llm_offline_debs(base_packages, extra): the Debian packages the roles install (one list for the
export and for offline mode's preflight).

llm_offline_missing(bundle, debs, models, llama_variants): what a host in offline mode
(llm_offline) needs that the bundle lacks - Debian packages not in debs/Packages, model folders
without a SHA256SUMS, the llama-server package variants - as lines for the preflight's message.

llm_offline_missing_wheels(lock_text, bundle): the pins of a hash-pinned lock (those whose
environment marker holds on a Debian 12 x86_64 CPython 3.11 host) with no wheel in wheels/.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import os
import re
import sys

try:  # tests (with plugins/module_utils on sys.path) import the planner's pins directly
    import llm_sizing as _sizing
except ImportError:  # Ansible loads filter plugins by file path, not as a package
    _SPEC = importlib.util.spec_from_file_location(
        "llm_offline_sizing",
        os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "module_utils",
            "llm_sizing.py",
        ),
    )
    _sizing = importlib.util.module_from_spec(_SPEC)
    sys.modules[_SPEC.name] = _sizing  # its dataclasses look their module up there
    _SPEC.loader.exec_module(_sizing)

#: The planner's repositories per engine (the bundle holds what a plan could choose for it).
ENGINE_REPOS = {
    "llamacpp": [("Qwen/Qwen2.5-7B-Instruct-GGUF", "gguf")],
    "vllm": [("Qwen/Qwen2.5-7B-Instruct", "hf")],
}
SOURCE_KEYS = ("source", "repo", "revision", "http_url", "controller_src")

#: Debian packages the roles install besides base_packages: Ansible's apt and pip modules' libraries
#: (python3-apt, python3-packaging), time sync, the firewall, nginx, the monitoring stack and a
#: fleet's datastore. The NVIDIA driver and CUDA come from NVIDIA's repository: not in the bundle.
ROLE_DEBS = (
    "python3-apt",
    "python3-packaging",
    "systemd-timesyncd",
    "nftables",
    "nginx",
    "python3-cryptography",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-blackbox-exporter",
    "prometheus-node-exporter",
    "prometheus-nginx-exporter",
    "mtail",
    "postgresql",
    "python3-psycopg2",
    "redis-server",
    "prometheus-postgres-exporter",
    "prometheus-redis-exporter",
)

#: The host a bundle's wheels are for (markers of a universal lock are evaluated for it).
WHEEL_ENV = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "platform_release": "",
    "platform_version": "",
    "extra": "",
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]*?))?\s*\\?\s*$")


def _norm(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def llm_offline_debs(base_packages, extra=None):
    return sorted(set(list(base_packages or []) + list(ROLE_DEBS) + list(extra or [])))


def _bundle_packages(bundle):
    names = set()
    try:
        with open(os.path.join(bundle, "debs", "Packages")) as index:
            for line in index:
                if line.startswith("Package: "):
                    names.add(line.split(":", 1)[1].strip())
    except OSError:
        return None
    return names


def llm_offline_missing(bundle, debs=None, models=None, llama_variants=None):
    missing = []
    if not os.path.isfile(os.path.join(bundle, "MANIFEST.sha256")):
        return [
            "the bundle itself: %s has no MANIFEST.sha256 "
            "(make it with playbooks/offline-bundle.yml)" % bundle
        ]
    packages = _bundle_packages(bundle)
    if packages is None:
        missing.append("debs/Packages (the bundle's Debian repository index)")
    else:
        lacking = sorted(set(debs or []) - packages)
        if lacking:
            missing.append("Debian packages: " + ", ".join(lacking))
    for folder in models or []:
        if not os.path.isfile(os.path.join(bundle, "models", folder, "SHA256SUMS")):
            missing.append("model folder models/%s (with its SHA256SUMS)" % folder)
    for variant in llama_variants or []:
        # A variant ending in "*" is a prefix (debian12-* matches every variant of Debian 12).
        root = os.path.join(bundle, "llama-server")
        found = [
            f
            for d in (os.listdir(root) if os.path.isdir(root) else [])
            if d == variant or (variant.endswith("*") and d.startswith(variant[:-1]))
            for f in os.listdir(os.path.join(root, d))
            if f.startswith("llm-llama-server_") and f.endswith(".deb")
        ]
        if not found:
            missing.append("the llama-server package of variant %s (under llama-server/)" % variant)
    return missing


def llm_offline_missing_wheels(lock_text, bundle):
    from packaging.markers import Marker

    folder = os.path.join(bundle, "wheels")
    have = set()
    for f in os.listdir(folder) if os.path.isdir(folder) else []:
        if f.endswith(".whl"):
            parts = f[:-4].split("-")
            if len(parts) >= 2:
                have.add((_norm(parts[0]), parts[1].lower()))
    missing = []
    for line in (lock_text or "").splitlines():
        pin = _PIN.match(line)
        if not pin:
            continue
        name, version, marker = pin.groups()
        if marker and not Marker(marker).evaluate(WHEEL_ENV):
            continue
        # A local version label (+cpu) is part of the wheel's file name.
        if (_norm(name), version.lower()) not in have:
            missing.append("%s==%s" % (name, version))
    return missing


def _get(hv, name, default=None):
    try:
        value = hv.get(name, default) if hasattr(hv, "get") else default
    except Exception:  # an undefined variable inside a templated value
        value = default
    return default if value is None else value


def llm_offline_models(hostvars, hosts, embedding_default=None):
    out, seen = [], set()

    def add(entry):
        entry = {k: v for k, v in entry.items() if v not in (None, "")}
        if entry["dir"] in seen:
            return
        seen.add(entry["dir"])
        out.append(entry)

    for host in hosts:
        hv = hostvars[host]
        source = _get(hv, "model_store_source", "hf")
        if source == "controller":
            src = str(_get(hv, "model_store_controller_src", "")).rstrip("/")
            name = os.path.basename(src)
            add(
                {
                    "kind": "model",
                    "name": name,
                    "dir": name,
                    "source": "controller",
                    "controller_src": src,
                    "format": "gguf" if "gguf" in name.lower() else "hf",
                }
            )
        elif source in ("hf", "http"):
            engine = _get(hv, "llm_engine", "auto")
            pins = dict(_sizing.REVISIONS, **dict(_get(hv, "model_store_revisions", {}) or {}))
            for repo, fmt in ENGINE_REPOS.get(
                engine, ENGINE_REPOS["llamacpp"] + ENGINE_REPOS["vllm"]
            ):
                name = repo.rsplit("/", 1)[-1]
                add(
                    {
                        "kind": "model",
                        "name": name,
                        "dir": name,
                        "format": fmt,
                        "source": source,
                        "repo": repo,
                        "revision": pins.get(repo, ""),
                        "http_url": _get(hv, "model_store_http_url", "")
                        if source == "http"
                        else "",
                    }
                )
        for adapter in _get(hv, "llm_lora_adapters", []) or []:
            if (adapter.get("source") or "hf") == "path":
                continue
            fmt = adapter.get("format") or "hf"
            entry = {
                "kind": "adapter",
                "name": adapter["name"],
                "dir": "adapters/%s-%s" % (adapter["name"], fmt),
                "format": fmt,
                "rank": adapter.get("rank"),
            }
            entry.update({k: adapter.get(k) for k in SOURCE_KEYS})
            add(entry)
        embedding = _get(hv, "embeddings_model", None) or embedding_default
        if (
            embedding
            and (embedding.get("source") or "hf") != "path"
            and _get(hv, "llm_rag_enabled", True)
        ):
            entry = {
                "kind": "embedding",
                "name": embedding["name"],
                "dir": "embeddings/" + embedding["name"],
                "format": "gguf",
                "file": embedding.get("file"),
            }
            entry.update(
                {
                    k: embedding.get(k)
                    for k in SOURCE_KEYS + ("license", "attribution", "pooling", "size")
                }
            )
            add(entry)
    return out


class FilterModule(object):
    def filters(self):
        return {
            "llm_offline_models": llm_offline_models,
            "llm_offline_debs": llm_offline_debs,
            "llm_offline_missing": llm_offline_missing,
            "llm_offline_missing_wheels": llm_offline_missing_wheels,
        }
