#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: free space of the filesystem a path is (or will be) on."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llm_disk_free
short_description: Free bytes on the filesystem that holds a path, even before the path exists
description:
  - Walks up from O(path) to the nearest folder that exists (a fresh host has no model root yet),
    reads its filesystem with C(statvfs) and finds its mount point.
  - Changes nothing; supports check mode. Needs no privileges beyond reaching the folder.
options:
  path:
    description: Path whose filesystem is asked about.
    type: path
    required: true
author: LLM bundle team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Read the free space under the model root
  llm_disk_free:
    path: /var/lib/llm/models
  register: space
"""

RETURN = r"""
existing:
  description: The nearest existing folder at or above O(path) (the one measured).
  returned: always
  type: str
mount:
  description: Mount point of that filesystem.
  returned: always
  type: str
avail_bytes:
  description: Bytes an unprivileged writer may still use (f_bavail).
  returned: always
  type: int
size_bytes:
  description: Size of the filesystem in bytes.
  returned: always
  type: int
"""

import os

from ansible.module_utils.basic import AnsibleModule


def nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def mount_point(path):
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def disk_free(path):
    existing = nearest_existing(path)
    st = os.statvfs(existing)
    return {
        "existing": existing,
        "mount": mount_point(existing),
        "avail_bytes": st.f_bavail * st.f_frsize,
        "size_bytes": st.f_blocks * st.f_frsize,
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path", required=True)), supports_check_mode=True
    )
    module.exit_json(changed=False, **disk_free(module.params["path"]))


if __name__ == "__main__":
    main()
