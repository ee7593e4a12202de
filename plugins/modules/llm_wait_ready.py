#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: wait until a service's URL answers; stop waiting once its unit crash-loops."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llm_wait_ready
short_description: Wait until a URL answers, failing early when its systemd unit keeps dying
description:
  - Polls O(url) every O(interval) seconds until it answers with one of O(status_code), for at
    most O(timeout) seconds.
  - With O(unit), reads the unit between polls (C(systemctl show)); once it is C(failed), or
    it was restarted O(max_restarts) times since the wait began, the wait stops at once with
    the unit's state and its last journal lines, instead of polling a service that cannot
    come up until the timeout.
  - Changes nothing; in check mode it does not wait.
options:
  url:
    description: URL asked with GET (no redirects followed).
    type: str
    required: true
  status_code:
    description: Status codes that mean ready.
    type: list
    elements: int
    default: [200]
  timeout:
    description: Seconds to wait in all.
    type: int
    default: 600
  interval:
    description: Seconds between two polls.
    type: int
    default: 5
  request_timeout:
    description: Seconds one request may take.
    type: int
    default: 10
  unit:
    description: systemd unit serving O(url); empty for none.
    type: str
    default: ""
  max_restarts:
    description: Restarts of O(unit) during the wait after which it is given up.
    type: int
    default: 3
  journal_lines:
    description: Journal lines of O(unit) returned (and shown) when the wait fails.
    type: int
    default: 40
author: LLM bundle team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Wait until Open WebUI answers /health
  llm_wait_ready:
    url: http://127.0.0.1:3000/health
    unit: open-webui
    timeout: 600
"""

RETURN = r"""
status:
  description: Status of the last answer (-1 when nothing answered).
  returned: always
  type: int
elapsed:
  description: Seconds waited.
  returned: always
  type: float
restarts:
  description: Restarts of O(unit) during the wait.
  returned: always
  type: int
unit_state:
  description: ActiveState/SubState of O(unit) at the end (empty without O(unit)).
  returned: always
  type: str
journal:
  description: Last journal lines of O(unit) when the wait failed.
  returned: on failure with O(unit)
  type: list
  elements: str
"""

import subprocess
import time
from urllib.error import HTTPError

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url


def poll(url, request_timeout):
    """(status, error): the status of a GET of url, -1 and the reason when nothing answered."""
    try:
        resp = open_url(url, method="GET", timeout=request_timeout, follow_redirects="none",
                        validate_certs=False)
        return resp.getcode(), ""
    except HTTPError as e:
        return e.code, str(e)
    except Exception as e:  # connection refused, reset, timeout: not up yet
        return -1, str(e)


def unit_state(unit, run=subprocess.run):
    """{ActiveState, SubState, NRestarts, Result} of a systemd unit."""
    out = run(["systemctl", "show", unit, "-p", "ActiveState", "-p", "SubState", "-p", "NRestarts",
               "-p", "Result"], capture_output=True, text=True, check=False).stdout
    state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    state["NRestarts"] = int(state.get("NRestarts") or 0)
    return state


def journal(unit, lines, run=subprocess.run):
    return run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"],
               capture_output=True, text=True, check=False).stdout.splitlines()


def wait(url, status_code, timeout, interval, request_timeout, unit="", max_restarts=3,
         clock=time.monotonic, sleep=time.sleep, state_of=unit_state):
    """Poll until ready, the unit gives up, or the timeout: (ready, result dict, reason)."""
    start = clock()
    first = state_of(unit)["NRestarts"] if unit else 0
    result = {"status": -1, "elapsed": 0.0, "restarts": 0, "unit_state": ""}
    while True:
        status, error = poll(url, request_timeout)
        result["status"] = status
        result["elapsed"] = round(clock() - start, 1)
        if status in status_code:
            return True, result, ""
        if unit:
            state = state_of(unit)
            result["restarts"] = max(0, state["NRestarts"] - first)
            result["unit_state"] = "%s/%s" % (state.get("ActiveState", "?"),
                                              state.get("SubState", "?"))
            if state.get("ActiveState") == "failed" or result["restarts"] >= max_restarts:
                return False, result, (
                    "%s is %s (result %s) after %d restart(s) in %.0f s, and %s never answered"
                    % (unit, result["unit_state"], state.get("Result", "?"), result["restarts"],
                       result["elapsed"], url))
        if clock() - start + interval > timeout:
            return False, result, "%s did not answer %s within %d s (last: %s)" % (
                url, " or ".join(str(c) for c in status_code), timeout,
                ("status %d" % status) if status > 0 else (error or "no answer"))
        sleep(interval)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            status_code=dict(type="list", elements="int", default=[200]),
            timeout=dict(type="int", default=600),
            interval=dict(type="int", default=5),
            request_timeout=dict(type="int", default=10),
            unit=dict(type="str", default=""),
            max_restarts=dict(type="int", default=3),
            journal_lines=dict(type="int", default=40),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if module.check_mode:
        module.exit_json(changed=False, status=-1, elapsed=0.0, restarts=0, unit_state="")
    ready, result, reason = wait(p["url"], p["status_code"], p["timeout"], max(1, p["interval"]),
                                 p["request_timeout"], p["unit"], p["max_restarts"])
    if ready:
        module.exit_json(changed=False, **result)
    if p["unit"]:
        result["journal"] = journal(p["unit"], p["journal_lines"])
        tail = result["journal"][-8:]
        reason += ". Last lines of its journal: " + " | ".join(line.strip() for line in tail)
    module.fail_json(msg=reason, **result)


if __name__ == "__main__":
    main()
