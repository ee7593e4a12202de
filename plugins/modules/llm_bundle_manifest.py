#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the manifest of an offline bundle (each file's name, version, SHA-256, size)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llm_bundle_manifest
short_description: Write the manifest of an offline bundle folder (sha256sum -c format and JSON)
description:
  - Lists every regular file under O(path) except the manifest files themselves and hidden entries
    (names starting with a dot at any level, such as the apt state and the signing key's folder) and
    apt's C(partial) and C(lock) leftovers.
  - Writes C(MANIFEST.sha256) (C(sha256sum -c MANIFEST.sha256) checks the bundle from its root)
    and C(manifest.json) (kind, name, version, sha256, size and path of each file). Kind and
    version come from the path - C(debs/) and C(llama-server/) Debian packages
    (name_version_arch.deb), C(wheels/) Python wheels and sdists, C(models/<name>/) files of a
    staged model (version - the source line of its C(.model_store-staged) marker or C(SOURCE)).
  - A file whose size and modification time did not change since the last run keeps its recorded
    digest (C(.manifest-cache.json)), so a re-run over tens of GB reads nothing again.
  - Changed only when the manifest's content changed. Supports check mode.
options:
  path:
    description: Root folder of the bundle.
    type: path
    required: true
author: LLM bundle team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Write the bundle's manifest
  llm_bundle_manifest:
    path: /srv/llm-offline-bundle
  register: manifest
"""

RETURN = r"""
files:
  description: Number of files listed.
  returned: always
  type: int
bytes:
  description: Their total size.
  returned: always
  type: int
entries:
  description: The manifest entries (kind, name, version, sha256, size, path), sorted by path.
  returned: always
  type: list
  elements: dict
"""

import hashlib
import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

MANIFEST = "MANIFEST.sha256"
MANIFEST_JSON = "manifest.json"
CACHE = ".manifest-cache.json"
SKIP_NAMES = {MANIFEST, MANIFEST_JSON}  # at the root; apt's "lock" anywhere
SKIP_DIRS = {"partial"}
WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-[^-]+)?-[^-]+-[^-]+-[^-]+\.whl$")
SDIST = re.compile(r"^(?P<name>.+)-(?P<version>[0-9][^-]*)\.(tar\.gz|zip)$")
DEB = re.compile(r"^(?P<name>[^_]+)_(?P<version>[^_]+)_(?P<arch>[^_]+)\.deb$")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(root):
    """Relative paths of the bundle's files, sorted; hidden entries and apt's leftovers left out."""
    out = []
    for parent, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in files:
            if name.startswith(".") or (parent == root and name in SKIP_NAMES) or name == "lock":
                continue
            path = os.path.join(parent, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out.append(os.path.relpath(path, root))
    return sorted(out)


def _model_depth(parts):
    """Path parts naming a model folder: models/<name>, or models/adapters|embeddings/<name>."""
    return 3 if len(parts) > 3 and parts[1] in ("adapters", "embeddings") else 2


def _model_version(root, parts):
    """The source of a staged model: its marker's line (hf <endpoint>/<repo>@<revision> ...)."""
    folder = os.path.join(root, *parts[:_model_depth(parts)])
    for marker in (".model_store-staged", "SOURCE"):
        try:
            with open(os.path.join(folder, marker)) as f:
                line = f.read().strip().splitlines()
        except OSError:
            continue
        if line:
            found = re.search(r"@([0-9a-f]{40})", line[0])
            return found.group(1) if found else line[0][:200]
    return ""


def describe(root, rel):
    """(kind, name, version) of a bundle file, from its path."""
    top, base = rel.split("/", 1)[0], os.path.basename(rel)
    if top in ("debs", "llama-server"):
        m = DEB.match(base)
        if m:
            return "deb", m.group("name"), m.group("version").replace("%3a", ":")
        return "apt-index" if top == "debs" else "file", base, ""
    if top == "wheels":
        m = WHEEL.match(base) or SDIST.match(base)
        if m:
            return (
                "wheel" if base.endswith(".whl") else "sdist",
                m.group("name"),
                m.group("version"),
            )
    if top == "models":
        parts = rel.split("/")
        depth = _model_depth(parts)
        return (
            "model",
            "/".join(parts[1:depth]) + ":" + "/".join(parts[depth:]),
            _model_version(root, parts),
        )
    return "file", rel, ""


def build(root, cache):
    """(entries, new cache) of the bundle under root, reusing cached digests of unchanged files."""
    entries, new_cache = [], {}
    for rel in bundle_files(root):
        st = os.stat(os.path.join(root, rel))
        key = [st.st_size, st.st_mtime_ns]
        known = cache.get(rel)
        digest = (
            known["sha256"]
            if known and known.get("stat") == key
            else sha256_file(os.path.join(root, rel))
        )
        new_cache[rel] = {"stat": key, "sha256": digest}
        kind, name, version = describe(root, rel)
        entries.append(
            {
                "kind": kind,
                "name": name,
                "version": version,
                "sha256": digest,
                "size": st.st_size,
                "path": rel,
            }
        )
    return entries, new_cache


def render(entries):
    """(MANIFEST.sha256 text, manifest.json text)."""
    sums = "".join("%s  %s\n" % (e["sha256"], e["path"]) for e in entries)
    doc = {"format": 1, "files": entries, "bytes": sum(e["size"] for e in entries)}
    return sums, json.dumps(doc, indent=1, sort_keys=True) + "\n"


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run(root, check_mode=False):
    if not os.path.isdir(root):
        raise ValueError("%s is not a folder" % root)
    try:
        cache = json.loads(_read(os.path.join(root, CACHE)) or "{}")
    except ValueError:
        cache = {}
    entries, new_cache = build(root, cache)
    sums, doc = render(entries)
    changed = (
        _read(os.path.join(root, MANIFEST)) != sums
        or _read(os.path.join(root, MANIFEST_JSON)) != doc
    )
    if not check_mode:
        if changed:
            _write(os.path.join(root, MANIFEST), sums)
            _write(os.path.join(root, MANIFEST_JSON), doc)
        if new_cache != cache:
            _write(os.path.join(root, CACHE), json.dumps(new_cache, sort_keys=True))
    return {
        "changed": changed,
        "files": len(entries),
        "bytes": sum(e["size"] for e in entries),
        "entries": entries,
    }


def main():
    module = AnsibleModule(
        argument_spec={"path": {"type": "path", "required": True}}, supports_check_mode=True
    )
    try:
        result = run(module.params["path"], module.check_mode)
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot write the manifest of %s: %s" % (module.params["path"], exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
