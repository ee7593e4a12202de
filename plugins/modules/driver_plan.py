#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the nvidia_driver role's decision (nvidia_driver_decision fact)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: driver_plan
short_description: Decide what the nvidia_driver role installs, keeps or refuses on one host
description:
  - Pure computation (plugins/module_utils/llm_driver.py); changes nothing; check mode safe.
  - C(stage=check) validates the branch, the operating system and the package source before
    any probe and returns C(modules), C(source) and C(probe_packages) (what C(apt-cache show)
    must look for); it fails with the message of the first problem.
  - C(stage=decide) takes the probes (gpu_facts, mokutil, apt-cache) and returns the fact
    C(nvidia_driver_decision) and C(refusal), the text the role stops with ("" to go on).
    It never fails on a refusal, so the decision stays visible to the caller.
  - In check mode the archive and the headers of the running kernel are not required.
options:
  stage:
    description: check (before probes) or decide (with the probes).
    type: str
    choices: [check, decide]
    default: decide
  branch:
    description: nvidia_driver_branch (an integer >= 535; other values are refused).
    type: raw
    required: true
  kernel_modules:
    description: open, proprietary or auto.
    type: str
    default: auto
  package_source:
    description: distro, cuda_repo or auto.
    type: str
    default: auto
  debian_line:
    description: Debian's package line, current or tesla.
    type: str
    default: current
  ubuntu_precompiled:
    description: Use Canonical's signed precompiled modules when the archive has them.
    type: bool
    default: true
  secure_boot:
    description: fail, signed_precompiled or mok (nvidia_driver_secure_boot).
    type: str
    default: fail
  image_build:
    description: Image build; gpu_facts is not read.
    type: bool
    default: false
  host:
    description: The host's facts distribution, distribution_version, distribution_major_version
      and kernel.
    type: dict
    required: true
  gpu_facts:
    description: The gpu_facts fact (stage decide, unless image_build).
    type: dict
  secure_boot_probe:
    description: The registered result of C(mokutil --sb-state) (rc, stdout, stderr).
    type: dict
  apt_probe:
    description: The registered loop results of C(apt-cache show) (item, rc) on Debian/Ubuntu.
    type: list
    elements: dict
author: LLM bundle team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Check the driver branch before any change
  driver_plan:
    stage: check
    branch: "{{ nvidia_driver_branch }}"
    host: "{{ ansible_facts }}"
  register: nvidia_driver_check
"""

RETURN = r"""
modules:
  description: open or proprietary (resolved from auto).
  returned: success
  type: str
source:
  description: distro or cuda_repo (resolved from auto).
  returned: success
  type: str
probe_packages:
  description: Packages the role asks C(apt-cache show) about (Debian family; else empty).
  returned: success
  type: list
ansible_facts:
  description: C(nvidia_driver_decision) (stage decide), keys action skip|install|reboot|stop,
    reason, gpu_status, gpu_message, installed_major, branch, source, modules, precompiled,
    dkms, headers_package, headers_available, packages, secure_boot.
  returned: stage decide
  type: dict
refusal:
  description: Why the role must stop and what to change; empty when it may go on.
  returned: stage decide
  type: str
summary:
  description: One line that describes the decision.
  returned: stage decide
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

# From the clone, ansible.cfg's module_utils path provides ansible.module_utils.llm_driver;
# from the installed collection llmstack.serving, its own module_utils do. The clone's copy
# is tried first.
try:
    from ansible.module_utils.llm_driver import DriverError, check, decide, summary
except ImportError:
    from ansible_collections.llmstack.serving.plugins.module_utils.llm_driver import (
        DriverError,
        check,
        decide,
        summary,
    )

PARAM_KEYS = ("branch", "kernel_modules", "package_source", "debian_line", "ubuntu_precompiled",
              "secure_boot", "image_build")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            stage=dict(type="str", choices=["check", "decide"], default="decide"),
            branch=dict(type="raw", required=True),
            kernel_modules=dict(type="str", default="auto"),
            package_source=dict(type="str", default="auto"),
            debian_line=dict(type="str", default="current"),
            ubuntu_precompiled=dict(type="bool", default=True),
            secure_boot=dict(type="str", default="fail"),
            image_build=dict(type="bool", default=False),
            host=dict(type="dict", required=True),
            gpu_facts=dict(type="dict"),
            secure_boot_probe=dict(type="dict"),
            apt_probe=dict(type="list", elements="dict"),
        ),
        supports_check_mode=True,
    )
    params = dict((k, module.params[k]) for k in PARAM_KEYS)
    host = module.params["host"]
    try:
        if module.params["stage"] == "check":
            result = check(params, host)
            module.exit_json(changed=False, modules=result["modules"], source=result["source"],
                             probe_packages=result["probe_packages"])
        result = decide(params, host, gpu_facts=module.params["gpu_facts"],
                        sb_probe=module.params["secure_boot_probe"],
                        apt_results=module.params["apt_probe"], check_mode=module.check_mode)
    except DriverError as exc:
        module.fail_json(msg=str(exc))
    decision = result["decision"]
    module.exit_json(changed=False, ansible_facts={"nvidia_driver_decision": decision},
                     refusal=result["refusal"], summary=summary(decision))


if __name__ == "__main__":
    main()
