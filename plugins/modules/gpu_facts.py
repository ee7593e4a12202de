#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: read the NVIDIA GPUs of a host into the gpu_facts fact."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Read NVIDIA GPUs, driver and CUDA driver version into C(gpu_facts)
description:
  - Runs C(nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits) with the
    fields index, name, uuid, memory.total, memory.used, compute_cap, pci.bus_id,
    driver_version, mig.mode.current; then C(nvidia-smi --version); and scans the PCI
    bus for NVIDIA devices.
  - On 470 drivers C(compute_cap) is not a valid field; the query is retried without it
    and the compute capability is taken from a GPU name table.
  - Never fails on odd output; C(gpu_facts.status) says what was found.
  - Changes nothing; supports check mode.
options:
  nvidia_smi_path:
    description: Path of nvidia-smi. Default is nvidia-smi found on PATH (and /usr/bin).
    type: path
  sysfs_root:
    description: Root of sysfs, scanned for NVIDIA PCI devices (vendor 0x10de, class 0x03xxxx).
    type: path
    default: /sys
  use_nvml:
    description: Also read NVML through pynvml when it is importable (cross-check only).
    type: bool
    default: false
author: LLM bundle team
"""

EXAMPLES = r"""
- name: Read the GPUs
  gpu_facts:
- name: Show them
  ansible.builtin.debug:
    var: gpu_facts
"""

RETURN = r"""
ansible_facts:
  description: C(gpu_facts) with keys status (ok|no_gpu|no_driver|driver_mismatch|error),
    message, gpus (index, name, uuid, memory_total_mib, memory_used_mib, compute_capability,
    pci_bus_id, mig_mode), gpu_count, driver_version, driver_major, cuda_driver_version,
    total_memory_mib, pci_devices (and nvml when use_nvml found pynvml).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.llm_gpu import gather, pynvml_facts


def find_nvidia_smi(module, path):
    if path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return module.get_bin_path("nvidia-smi", opt_dirs=["/usr/bin", "/usr/local/nvidia/bin"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi_path=dict(type="path"),
            sysfs_root=dict(type="path", default="/sys"),
            use_nvml=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    nvidia_smi = find_nvidia_smi(module, module.params["nvidia_smi_path"])

    def run(argv):
        try:
            rc, out, err = module.run_command(argv, environ_update={"LC_ALL": "C"})
        except Exception as exc:  # e.g. exec format error of a broken binary
            return 127, "", str(exc)
        return rc, out, err

    facts = gather(run, nvidia_smi, module.params["sysfs_root"])
    if module.params["use_nvml"] and facts["status"] == "ok":
        nvml = pynvml_facts()
        if nvml is not None:
            facts["nvml"] = nvml
    module.exit_json(changed=False, ansible_facts={"gpu_facts": facts},
                     msg=facts["message"])


if __name__ == "__main__":
    main()
