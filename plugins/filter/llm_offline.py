# -*- coding: utf-8 -*-
"""Filters of the offline bundle (playbooks/offline-bundle.yml).

llm_offline_models(hostvars, hosts, embedding_default): the model folders the inventory's hosts
stage, each once - the model of each host's source (a controller folder, a mirror, or the Hub
repositories the planner pins for its engine: the GGUF Q4_K_M for llama.cpp, the bf16 weights for
vLLM, both for `auto`), every LoRA adapter (one folder per format) and the embedding model. Each
entry: kind (model, adapter, embedding), name, dir (its folder under the bundle's models/), format
(hf, gguf) and the source fields model_store reads (source, repo, revision, http_url,
controller_src). A host whose weights are already on it (source path) adds nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import os
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
        return {"llm_offline_models": llm_offline_models}
