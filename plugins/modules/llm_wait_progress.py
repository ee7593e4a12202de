#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Documentation of the llm_wait_progress action (plugins/action/): it runs on the controller."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llm_wait_progress
short_description: Wait for an async job and print its progress (bytes, rate, ETA or build log line)
description:
  - Waits for a job started with C(async) and C(poll=0), polling C(async_status) every
    O(poll) seconds.
  - Every O(interval) seconds prints one line with what the job has done so far, measured on
    the host from O(progress_file) (JSON C(done), C(total), C(fetched), C(file) written by
    P(llmstack.serving.llm_fetch#module)), from the size of O(paths), and/or from the last
    line of O(log_file) (the last C([ NN%]) of a CMake build is kept in front).
  - Returns the job's own result, failed when the job failed, so C(register), C(changed_when)
    and C(failed_when) work on this task as on the job's task. The job's status file is
    removed afterwards.
  - An empty O(jid) (the job task was skipped, e.g. nothing to download) returns skipped.
  - Runs on the controller; the measurements run C(slurp), C(du) and C(tail) on the host
    (with the task's become).
options:
  jid:
    description: The C(ansible_job_id) of the async task; empty to skip.
    type: str
    default: ""
  label:
    description: Text in front of every line (the host name is put before it).
    type: str
    default: job
  interval:
    description: Seconds between progress lines.
    type: int
    default: 15
  poll:
    description: Seconds between two C(async_status) checks.
    type: int
    default: 3
  timeout:
    description: Seconds to wait before failing (the job itself stops at its own C(async) limit).
    type: int
    default: 86400
  progress_file:
    description: JSON file on the host the job keeps up to date (C(done), C(total), C(fetched),
      C(file)).
    type: str
  paths:
    description: Files or folders on the host whose total size is the bytes done so far.
    type: list
    elements: str
    default: []
  total_bytes:
    description: Bytes expected in all; with it the line shows a percentage and an ETA.
    type: int
  log_file:
    description: Log file on the host whose last line is shown.
    type: str
author: LLM bundle team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Build, in the background
  ansible.builtin.command:
    cmd: /opt/build/build.sh --log /opt/build/build.log
  async: 7200
  poll: 0
  register: build_job

- name: Wait for the build, printing its progress
  llm_wait_progress:
    jid: "{{ build_job.ansible_job_id | default('') }}"
    label: build
    log_file: /opt/build/build.log
    timeout: 7200
  register: build
"""

RETURN = r"""
ansible_job_id:
  description: The job waited for.
  returned: always
  type: str
"""
