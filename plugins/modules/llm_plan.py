#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: turn gpu_facts and the llm_* choices into the llm_plan fact."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llm_plan
short_description: Plan the Qwen2.5-7B-Instruct deployment of one host (C(llm_plan) fact)
description:
  - Pure computation (plugins/module_utils/llm_planner.py); changes nothing; check mode safe.
  - Options that can be C(auto) take the string C(auto) or a value; numbers may be given as
    strings (extra vars). Wrong values fail with a message naming the llm_* variable.
  - An impossible plan fails with the numbers and the nearest plan that works.
options:
  gpu_facts:
    description: The C(gpu_facts) fact from the gpu_facts module.
    type: dict
    required: true
  mode:
    description: gpu, cpu (demo/test), or auto (= gpu; never falls back to cpu silently).
    type: str
    default: auto
  quantization:
    description: auto, bf16, fp16, gguf_q4_k_m or awq.
    type: str
    default: auto
  engine:
    description: auto, vllm or llamacpp.
    type: str
    default: auto
  max_model_len:
    description: auto or an integer 512-131072 (above 32768 adds YaRN hf_overrides).
    type: raw
    default: auto
  gpu_memory_utilization:
    description: auto (0.92) or a float 0.1-0.99, the fraction of total GPU memory vLLM uses.
    type: raw
    default: auto
  kv_cache_dtype:
    description: auto (model dtype) or fp8 (vLLM, compute capability >= 8.9).
    type: str
    default: auto
  tensor_parallel_size:
    description: auto, 1, 2 or 4.
    type: raw
    default: auto
  max_num_seqs:
    description: auto or an integer 1-4096.
    type: raw
    default: auto
  vllm_version:
    description: vLLM release for GPU wheels.
    type: str
    default: "0.33.0"
  cpu_kv_cache_gib:
    description: KV cache in GiB for llm_mode cpu (VLLM_CPU_KVCACHE_SPACE).
    type: raw
    default: 1
  assume_driver_branch:
    description:
      - Used only when gpu_facts.status is no_driver (GPU on the PCI bus, no working driver
        yet), e.g. a bare host that the nvidia_driver role will fix later in site.yml.
        The plan then assumes this driver branch and the GPU's PCI id table entry.
    type: raw
  lora_adapters:
    description:
      - llm_lora_adapters, the LoRA adapters served beside the model (name, format hf or gguf,
        rank for hf). vLLM plans reserve GPU memory for the highest rank of the hf adapters.
    type: raw
    default: []
  max_loras:
    description: auto (the number of hf adapters, at most 4) or an integer 1-64, vLLM's --max-loras.
    type: raw
    default: auto
author: LLM bundle team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Plan
  llm_plan:
    gpu_facts: "{{ gpu_facts }}"
    quantization: "{{ llm_quantization | default('auto') }}"
"""

RETURN = r"""
ansible_facts:
  description: C(llm_plan), the plan dict (see llm_planner.Plan for the keys).
  returned: success
  type: dict
summary:
  description: One line that describes the plan.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

# Run from the clone, ansible.cfg's module_utils path provides ansible.module_utils.llm_planner;
# from the installed collection llmstack.serving, its own module_utils do. The clone's copy
# is tried first: an installed (older) collection never shadows the code run from git.
try:
    from ansible.module_utils.llm_planner import PlanError, plan, summary
except ImportError:
    from ansible_collections.llmstack.serving.plugins.module_utils.llm_planner import (
        PlanError,
        plan,
        summary,
    )

CHOICE_KEYS = ("mode", "quantization", "engine", "max_model_len", "gpu_memory_utilization",
               "kv_cache_dtype", "tensor_parallel_size", "max_num_seqs", "vllm_version",
               "cpu_kv_cache_gib", "assume_driver_branch", "lora_adapters", "max_loras")


def _where(facts):
    facts = facts if isinstance(facts, dict) else {}
    gpus = facts.get("gpus") or []
    if not gpus or facts.get("status") != "ok":
        return "gpu_facts status %s" % facts.get("status")
    names = sorted({"%s %s MiB" % (g.get("name"), g.get("memory_total_mib")) for g in gpus})
    return "%dx GPU: %s, driver %s" % (len(gpus), ", ".join(names), facts.get("driver_version"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            gpu_facts=dict(type="dict", required=True),
            mode=dict(type="str", default="auto"),
            quantization=dict(type="str", default="auto"),
            engine=dict(type="str", default="auto"),
            max_model_len=dict(type="raw", default="auto"),
            gpu_memory_utilization=dict(type="raw", default="auto"),
            kv_cache_dtype=dict(type="str", default="auto"),
            tensor_parallel_size=dict(type="raw", default="auto"),
            max_num_seqs=dict(type="raw", default="auto"),
            vllm_version=dict(type="str", default="0.33.0"),
            cpu_kv_cache_gib=dict(type="raw", default=1),
            assume_driver_branch=dict(type="raw"),
            lora_adapters=dict(type="raw", default=[]),
            max_loras=dict(type="raw", default="auto"),
        ),
        supports_check_mode=True,
    )
    choices = dict((k, module.params[k]) for k in CHOICE_KEYS)
    facts = module.params["gpu_facts"]
    try:
        result = plan(facts, choices)
    except PlanError as exc:
        module.fail_json(msg="LLM plan failed (%s): %s" % (_where(facts), exc),
                         plan_error=str(exc))
    module.exit_json(changed=False, ansible_facts={"llm_plan": result.to_dict()},
                     summary=summary(result))


if __name__ == "__main__":
    main()
