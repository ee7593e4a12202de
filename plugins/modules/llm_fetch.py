#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: download model files with resume, SHA-256 check and atomic placement."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llm_fetch
short_description: Download model files over https, resuming partial files, checked by SHA-256
description:
  - Downloads every listed file into O(partial_dir) (on the same filesystem as O(dest)),
    resuming a partial file left by an earlier run with an HTTP Range request, checks its
    SHA-256, then moves it atomically to its place under O(dest). A file already in O(dest)
    with the right SHA-256 is kept.
  - File names come from a mirror's C(SHA256SUMS) (O(sums)) or from O(files); a name that is
    absolute, contains C(..), is empty or has characters outside letters, digits, C(.), C(_),
    C(-) and C(/) is refused before anything is written, naming the offending line.
  - Only https URLs unless O(allow_insecure=true).
  - While it runs (typically under C(async)), writes C(.progress.json) in O(partial_dir)
    (bytes done, total, current file) for the P(llmstack.serving.llm_wait_progress#module)
    action to report.
  - With O(probe=true) only checks the listing and reads each file's size (HTTP HEAD);
    changes nothing.
options:
  files:
    description:
      - Files to fetch, each with C(name) (relative path), optional C(url) (default
        O(base_url)/name), optional C(sha256) (without it the file is always downloaded) and
        optional C(size) in bytes.
      - Entries of a Hugging Face listing (C(rfilename), C(size), C(lfs.sha256)) are accepted
        as they are.
    type: list
    elements: dict
  sums:
    description: Content of a C(SHA256SUMS) file (C(sha256sum) output); its files are fetched
      from O(base_url).
    type: str
  base_url:
    description: URL of the folder the names are relative to.
    type: str
  dest:
    description: Folder the files end up in. Required unless O(probe=true).
    type: path
  partial_dir:
    description: Folder for the partial downloads, on the filesystem of O(dest); removed when
      everything is in place. Required unless O(probe=true).
    type: path
  headers:
    description: Extra HTTP headers (e.g. Authorization); never logged.
    type: dict
    default: {}
  timeout:
    description: Seconds a connection may stay silent before the download is given up (it
      resumes on the next run).
    type: int
    default: 60
  allow_insecure:
    description: Accept plain http URLs.
    type: bool
    default: false
  probe:
    description: Only check the names and URLs and read the sizes (HEAD for files without a
      size); change nothing.
    type: bool
    default: false
  directory_mode:
    description: Mode of folders created under O(dest) and O(partial_dir).
    type: raw
    default: "0750"
extends_documentation_fragment:
  - ansible.builtin.files
author: LLM bundle team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Download the mirror's files in the background
  llm_fetch:
    sums: "{{ sums_content }}"
    base_url: https://mirror.example.com/qwen2.5-7b-instruct
    dest: /var/lib/llm/models/Qwen2.5-7B-Instruct
    partial_dir: /var/lib/llm/models/.partial/Qwen2.5-7B-Instruct
    owner: root
    group: llm
    mode: "0640"
  async: 7200
  poll: 0
  register: job
"""

RETURN = r"""
files:
  description: Every file with C(name), C(sha256), C(size) and C(action) (kept, downloaded,
    resumed; listed when probing).
  returned: always
  type: list
  elements: dict
total_bytes:
  description: Sum of the file sizes; null when a size is unknown (probe of a server without
    Content-Length).
  returned: always
  type: int
fetched_bytes:
  description: Bytes transferred over the network by this run.
  returned: always
  type: int
sha256sums:
  description: C(sha256sum)-style listing of every file (empty when a checksum is unknown).
  returned: always
  type: str
"""

import json
import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

try:
    from ansible.module_utils.llm_fetch import (
        FetchError,
        build_files,
        download,
        remote_size,
        sha256_of,
    )
except ImportError:  # installed as the collection llmstack.serving
    from ansible_collections.llmstack.serving.plugins.module_utils.llm_fetch import (
        FetchError,
        build_files,
        download,
        remote_size,
        sha256_of,
    )

PROGRESS_FILE = ".progress.json"


class Progress:
    """Writes .progress.json (done, fetched, total, file) at most once a second.

    done = bytes of the finished files + bytes of the current file so far (resumed bytes included);
    fetched = bytes received over the network by this run (what a transfer rate is made of).
    """

    def __init__(self, path, total, count):
        self.path = path
        self.state = {
            "done": 0,
            "fetched": 0,
            "total": total,
            "file": "",
            "files_done": 0,
            "files_total": count,
        }
        self._finished = 0
        self._last = 0.0

    def current(self, position, fetched):
        self.state["done"] = self._finished + position
        self.state["fetched"] += fetched
        self.write()

    def finish(self, size):
        self._finished += size
        self.state["done"] = self._finished
        self.write()

    def set(self, **kwargs):
        self.state.update(kwargs)
        self.write(force=True)

    def write(self, force=False):
        now = time.monotonic()
        if not self.path or (not force and now - self._last < 1.0):
            return
        self._last = now
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".progress-")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.state, handle)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)


def _opener(module):
    def call(url, headers, timeout, method):
        return open_url(
            url,
            headers=headers,
            timeout=timeout,
            method=method,
            http_agent="llmstack-llm_fetch",
            follow_redirects="safe",
        )

    return call


def _makedirs(module, path, stop, mode):
    """Create path and its parents up to stop with the module's owner/group and mode."""
    missing = []
    while not os.path.isdir(path) and path != stop:
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        os.mkdir(folder)
        args = module.load_file_common_arguments(module.params, path=folder)
        args["mode"] = mode
        module.set_fs_attributes_if_different(args, False)


def _cleanup(partial_dir):
    progress = os.path.join(partial_dir, PROGRESS_FILE)
    if os.path.exists(progress):
        os.unlink(progress)
    for root, dirs, _files in os.walk(partial_dir, topdown=False):
        for name in dirs:
            try:
                os.rmdir(os.path.join(root, name))
            except OSError:
                pass
    for folder in (partial_dir, os.path.dirname(partial_dir)):
        try:
            os.rmdir(folder)
        except OSError:
            break


def _place(module, partial, target):
    try:
        os.replace(partial, target)
    except OSError:  # another filesystem after all (a mount below dest): copy, then rename
        module.atomic_move(partial, target)


def run(module, opener):
    params = module.params
    files = build_files(
        params["files"], params["sums"], params["base_url"], params["allow_insecure"]
    )
    headers = params["headers"] or {}
    if params["probe"]:
        for item in files:
            if item["size"] is None:
                item["size"] = remote_size(opener, item["url"], headers, params["timeout"])
            item["action"] = "listed"
        sizes = [f["size"] for f in files]
        return {
            "changed": False,
            "files": _public(files),
            "fetched_bytes": 0,
            "sha256sums": "",
            "total_bytes": None if None in sizes else sum(sizes),
        }

    dest, partial_dir = params["dest"], params["partial_dir"]
    if not dest or not partial_dir:
        raise FetchError("dest and partial_dir are required unless probe is true")
    sizes = [f["size"] for f in files]
    total = None if None in sizes else sum(sizes)
    progress = None
    if not module.check_mode:
        _makedirs(module, dest, "/", params["directory_mode"])
        _makedirs(module, partial_dir, "/", params["directory_mode"])
        progress = Progress(os.path.join(partial_dir, PROGRESS_FILE), total, len(files))
    changed = False
    fetched = 0
    for index, item in enumerate(files):
        target = os.path.join(dest, item["name"])
        if progress:
            progress.set(file=item["name"], files_done=index)
        if item["sha256"] and os.path.isfile(target) and sha256_of(target) == item["sha256"]:
            item["action"] = "kept"
            item["size"] = os.path.getsize(target)
            if progress:
                progress.finish(item["size"])
            continue
        if module.check_mode:
            item["action"] = "download"
            changed = True
            continue
        partial = os.path.join(partial_dir, item["name"])
        _makedirs(module, os.path.dirname(partial), partial_dir, params["directory_mode"])

        got = download(
            opener,
            item["url"],
            partial,
            headers,
            params["timeout"],
            item["sha256"],
            on_bytes=progress.current,
        )
        fetched += got["size"] - got["resumed_from"]
        progress.finish(got["size"])
        item["sha256"], item["size"] = got["sha256"], got["size"]
        item["action"] = "resumed" if got["resumed_from"] else "downloaded"
        if os.path.isfile(target) and sha256_of(target) == got["sha256"]:
            os.unlink(partial)  # same bytes as before (a file without a listed checksum)
            item["action"] = "kept"
        else:
            _makedirs(module, os.path.dirname(target), dest, params["directory_mode"])
            args = module.load_file_common_arguments(module.params, path=partial)
            module.set_fs_attributes_if_different(args, False)
            _place(module, partial, target)
            changed = True
        args = module.load_file_common_arguments(module.params, path=target)
        changed = module.set_fs_attributes_if_different(args, changed)
    if not module.check_mode:
        _cleanup(partial_dir)
    sums = "".join("%s  %s\n" % (f["sha256"], f["name"]) for f in files if f["sha256"])
    sizes = [f["size"] for f in files]
    return {
        "changed": changed,
        "files": _public(files),
        "fetched_bytes": fetched,
        "total_bytes": None if None in sizes else sum(sizes),
        "sha256sums": sums if all(f["sha256"] for f in files) else "",
    }


def _public(files):
    return [{k: f.get(k) for k in ("name", "sha256", "size", "action")} for f in files]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict"),
            sums=dict(type="str"),
            base_url=dict(type="str"),
            dest=dict(type="path"),
            partial_dir=dict(type="path"),
            headers=dict(type="dict", default={}, no_log=True),
            timeout=dict(type="int", default=60),
            allow_insecure=dict(type="bool", default=False),
            probe=dict(type="bool", default=False),
            directory_mode=dict(type="raw", default="0750"),
        ),
        required_one_of=[("files", "sums")],
        add_file_common_args=True,
        supports_check_mode=True,
    )
    try:
        result = run(module, _opener(module))
    except FetchError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
