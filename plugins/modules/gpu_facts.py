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
  pci_ids:
    description:
      - PCI device ids this host declares, set through the variable C(llm_gpu_pci_ids).
        They extend and override the module's PCI id table, which is what lets a host
        without a working driver be planned (C(gpu_facts.status=no_driver)).
      - Keys are NVIDIA PCI device ids as C(/sys/bus/pci/devices/*/device) prints them,
        as quoted strings C("0x29ff"), C("29ff") or C("10de:29ff") (normalised to
        C(0x29ff)). Unquoted YAML C(0x29ff) is the number 10751 and is refused.
      - Values are dicts with C(memory_mib) (int, required; memory.total as nvidia-smi
        reports it), C(compute_capability) (string like C("8.9"), required) and
        C(name) (optional; default the table's name or C(NVIDIA PCI device 0x29ff)).
      - A bad entry fails the module with a message naming C(llm_gpu_pci_ids).
      - Ids whose memory the table leaves unknown (one id sold with different memory,
        e.g. 0x2803 RTX 4060 Ti 8/16 GB) or only conservative (0x2503 RTX 3060 planned as
        8 GB) are the usual reason to declare one.
    type: dict
    default: {}
author: LLM bundle team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Read the GPUs
  gpu_facts:
- name: Read the GPUs of a host whose 12 GB RTX 3060 has no driver yet
  gpu_facts:
    pci_ids:
      "0x2503": {memory_mib: 12288, compute_capability: "8.6"}
- name: Show them
  ansible.builtin.debug:
    var: gpu_facts
"""

RETURN = r"""
ansible_facts:
  description: C(gpu_facts) with keys status (ok|no_gpu|no_driver|driver_mismatch|error),
    message, gpus (index, name, uuid, memory_total_mib, memory_used_mib, compute_capability,
    pci_bus_id, mig_mode), gpu_count, driver_version, driver_major, cuda_driver_version,
    total_memory_mib, pci_devices (pci_bus_id, device_id, name, memory_total_mib,
    compute_capability, memory_note, known, source table|llm_gpu_pci_ids|null)
    (and nvml when use_nvml found pynvml).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

# Run from the clone, ansible.cfg's module_utils path provides ansible.module_utils.llm_gpu;
# from the installed collection llmstack.serving, its own module_utils do. The clone's copy
# is tried first: an installed (older) collection never shadows the code run from git.
try:
    from ansible.module_utils.llm_gpu import PciIdsError, gather, parse_pci_ids, pynvml_facts
except ImportError:
    from ansible_collections.llmstack.serving.plugins.module_utils.llm_gpu import (
        PciIdsError,
        gather,
        parse_pci_ids,
        pynvml_facts,
    )


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
            pci_ids=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    try:
        pci_ids = parse_pci_ids(module.params["pci_ids"])
    except PciIdsError as exc:
        module.fail_json(msg=str(exc))
    nvidia_smi = find_nvidia_smi(module, module.params["nvidia_smi_path"])

    def run(argv):
        try:
            rc, out, err = module.run_command(argv, environ_update={"LC_ALL": "C"})
        except Exception as exc:  # e.g. exec format error of a broken binary
            return 127, "", str(exc)
        return rc, out, err

    facts = gather(run, nvidia_smi, module.params["sysfs_root"], pci_ids=pci_ids)
    if module.params["use_nvml"] and facts["status"] == "ok":
        nvml = pynvml_facts()
        if nvml is not None:
            facts["nvml"] = nvml
    module.exit_json(changed=False, ansible_facts={"gpu_facts": facts},
                     msg=facts["message"])


if __name__ == "__main__":
    main()
