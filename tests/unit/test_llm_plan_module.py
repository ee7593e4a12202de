"""The llm_plan module wrapper and the llm_plan_table filter."""

import pytest
from ansible.module_utils import llm_gpu

import llm_plan as llm_plan_module
import llm_plan_table
from conftest import SYSFS, fixture_runner


def facts(card):
    return llm_gpu.gather(fixture_runner(card), "/usr/bin/nvidia-smi", str(SYSFS / "empty"))


def test_module_returns_llm_plan_fact_and_summary(run_module):
    out = run_module(llm_plan_module, {"gpu_facts": facts("rtx4090")})
    p = out["ansible_facts"]["llm_plan"]
    assert out["changed"] is False
    assert (p["engine"], p["quantization"], p["max_model_len"], p["kv_cache_tokens"]) == \
        ("vllm", "bf16", 32768, 123_222)
    assert out["summary"] == ("1x NVIDIA GeForce RTX 4090 (24564 MiB) GPU 0: vllm bf16, "
                              "context 32768, 256 seqs, KV 123222 tokens, tp 1, replicas 1, "
                              "util 0.935, wheel cu130")


def test_module_accepts_auto_strings_and_string_numbers(run_module):
    out = run_module(llm_plan_module, {"gpu_facts": facts("h200"), "max_model_len": "131072",
                                       "gpu_memory_utilization": "auto",
                                       "tensor_parallel_size": "auto", "max_num_seqs": "auto"})
    assert out["ansible_facts"]["llm_plan"]["max_model_len"] == 131072


def test_module_failure_names_the_gpu_and_the_fix(run_module):
    out = run_module(llm_plan_module, {"gpu_facts": facts("rtx3060"), "quantization": "bf16"})
    assert out["failed"] is True
    assert out["msg"] == (
        "LLM plan failed (1x GPU: NVIDIA GeForce RTX 3060 12288 MiB, driver 550.163.01): bf16 "
        "weights need 14.19 GiB but the NVIDIA GeForce RTX 3060 has 11.40 GiB (CUDA total) x "
        "0.846 = 9.64 GiB (254 MiB already in use by other processes): set llm_quantization: "
        "awq or gguf_q4_k_m")
    assert "ansible_facts" not in out


def test_module_bad_option_names_the_variable(run_module):
    out = run_module(llm_plan_module, {"gpu_facts": facts("h200"),
                                       "gpu_memory_utilization": 1.5})
    assert out["failed"] is True
    assert out["msg"].endswith(
        "llm_gpu_memory_utilization must be a float between 0.1 and 0.99, got 1.5")


def test_module_no_gpu_says_set_cpu_mode(run_module):
    out = run_module(llm_plan_module, {"gpu_facts": facts("no-devices")})
    assert out["msg"] == ("LLM plan failed (gpu_facts status no_gpu): no NVIDIA GPU found; "
                          "set llm_mode: cpu for a demo/test deployment")


def _hostvars():
    from ansible.module_utils.llm_planner import plan
    return {
        "gpu1": {"llm_plan_ok": True, "llm_plan": plan(facts("h200"), {}).to_dict()},
        "gpu2": {"llm_plan_ok": True,
                 "llm_plan": plan(facts("4x-a10g"), {"max_model_len": 65536}).to_dict()},
        "demo": {"llm_plan_ok": True,
                 "llm_plan": plan(facts("no-devices"), {"mode": "cpu"}).to_dict()},
        "bad": {"llm_plan_ok": False, "llm_plan_error": "LLM plan failed (x): no GPU\n here"},
        "stale": {"llm_plan": plan(facts("h200"), {}).to_dict()},  # cached from an old run
    }


def test_table_has_one_row_per_host_including_failures():
    table = llm_plan_table.plan_table(_hostvars(), ["gpu1", "gpu2", "demo", "bad", "stale"])
    lines = table.splitlines()
    assert lines[0].split() == ["host", "GPU", "VRAM", "driver", "quantization", "engine",
                                "context", "util", "concurrency"]
    assert lines[2].split() == ["gpu1", "NVIDIA", "H200", "140.4", "GiB", "580.159.04", "bf16",
                                "vllm", "cu130", "32768", "0.989", "1024", "seqs,", "KV",
                                "2271763", "tok"]
    assert "4x NVIDIA A10G" in lines[3] and "65536 (YaRN)" in lines[3]
    assert "vllm cu129 x4" in lines[3]
    assert "CPU (demo)" in lines[4] and "vllm cpu" in lines[4]
    assert lines[5] == "bad    FAILED: LLM plan failed (x): no GPU here"
    assert lines[6].startswith("stale  FAILED: no plan (host unreachable")
    assert len(lines) == 7


def test_failures_list_every_host_without_a_plan_from_this_run():
    assert llm_plan_table.plan_failures(_hostvars(), ["gpu1", "bad", "stale", "gone"]) == [
        "bad: LLM plan failed (x): no GPU here",
        "stale: no plan (host unreachable or gpu_facts failed)",
        "gone: no plan (host unreachable or gpu_facts failed)"]


@pytest.mark.parametrize("flag,ok", [("True", True), ("false", False), (True, True)])
def test_table_reads_plan_ok_flags_given_as_strings(flag, ok):
    hv = {"h": dict(_hostvars()["gpu1"], llm_plan_ok=flag)}
    assert (llm_plan_table.plan_failures(hv, ["h"]) == []) is ok
