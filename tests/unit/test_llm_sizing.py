"""Memory model of Qwen2.5-7B-Instruct: exact numbers from config.json and the H200 run."""

from ansible.module_utils import llm_sizing as s

from conftest import read_fixture


def test_parameter_count_from_architecture_matches_safetensors_index():
    assert s.QWEN25_7B.total_params == 7_615_616_512 == s.QWEN25_7B_PARAMS


def test_bf16_and_fp16_weights_are_params_times_two():
    assert s.CATALOG["bf16"].weights_bytes == 15_231_233_024
    assert s.CATALOG["fp16"].weights_bytes == 15_231_233_024
    assert s.gib(s.CATALOG["bf16"].weights_bytes) == "14.19"


def test_kv_cache_is_57344_bytes_per_token_and_28672_with_fp8():
    assert s.kv_bytes_per_token("auto") == 57_344
    assert s.kv_bytes_per_token("fp8") == 28_672


def test_kv_per_token_matches_the_h200_measurement_fixture():
    text = read_fixture("nvidia-smi", "h200", "gpu_mem.txt")
    assert "KV_PER_TOKEN 57344.0" in text


def test_awq_weights_follow_the_documented_formula():
    # 6,525,288,448 quantized linear params x (4/8 + 4/8/128 + 2/128) bytes
    # + (embeddings + lm_head + norms + biases) 1,090,328,064 params x 2 bytes
    assert s.QWEN25_7B.linear_params == 6_525_288_448
    assert s.awq_weights_bytes() == 3_390_091_264 + 2_180_656_128 == 5_570_747_392


def test_gguf_q4_k_m_size_is_upper_edge_of_llama_bench_4_36_gib():
    assert s.GGUF_Q4_K_M_BYTES == 4_686_883_062
    assert 4.36 <= s.GGUF_Q4_K_M_BYTES / s.GIB < 4.37


def test_activation_reserve_reproduces_h200_measurements():
    assert s.activation_bytes(2048) == 333_479_936
    assert s.activation_bytes(8192) == 1_171_898_368
    assert s.activation_bytes(512) == 123_875_328


def test_cuda_total_is_nvidia_smi_total_minus_the_616_mib_reserved():
    # H200: nvidia-smi 143771 MiB, torch.cuda.mem_get_info total 150,109,880,320 bytes
    assert s.cuda_total_bytes(143771) == 143155 * 1024 ** 2
    assert abs(s.cuda_total_bytes(143771) - 150_109_880_320) < 1024 ** 2


def test_auto_utilization_leaves_the_absolute_headroom_free():
    assert s.HEADROOM_BYTES == 1536 * 1024 ** 2
    assert s.auto_utilization(143771) == 0.989
    assert s.auto_utilization(24564, 1) == 0.935
    assert s.auto_utilization(12288, 254) == 0.846
    assert s.auto_utilization(12288, 254, s.LLAMACPP_HEADROOM_BYTES) == 0.934
    assert s.auto_utilization(12288, 11000) == 0.0
    for total, used in ((143771, 0), (24564, 1846), (12288, 254), (23028, 0)):
        util = s.auto_utilization(total, used)
        free = s.cuda_total_bytes(total) - used * 1024 ** 2
        assert free - int(s.cuda_total_bytes(total) * util) >= s.HEADROOM_BYTES


def test_max_start_utilization_is_what_vllm_finds_free_after_its_context():
    assert s.max_start_utilization(24564, 1846) == 0.901


def test_sampler_counts_fp32_logits_and_probs_per_sequence():
    assert s.sampler_bytes(256) == 256 * 152064 * 8


def test_vllm_fit_on_rtx4090_leaves_123222_kv_tokens():
    fit = s.vllm_fit(24564, 0.935, s.CATALOG["bf16"].weights_bytes, 2048)
    assert fit.total_bytes == 25_111_298_048  # (24564 - 616) MiB
    assert fit.budget_bytes == 23_479_063_674
    assert fit.activation_bytes == 333_479_936 + 256 * 152064 * 8
    assert fit.kv_available_bytes == (23_479_063_674 - 15_231_233_024 - 644_907_008
                                      - 536_870_912)
    assert fit.kv_tokens == 123_222


def test_vllm_fit_splits_weights_and_kv_under_tensor_parallel():
    fit = s.vllm_fit(12288, 0.846, s.CATALOG["bf16"].weights_bytes, 2048, "auto", 2)
    assert fit.weights_bytes == 7_615_616_512
    assert fit.kv_bytes_per_token == 28_672
    assert fit.kv_tokens == 54_296


def test_llamacpp_fit_splits_weights_and_kv_over_gpus():
    one = s.llamacpp_fit(12288, 0.934, 32768)
    two = s.llamacpp_fit(12288, 0.934, 32768, n_gpus=2)
    assert two.weights_bytes == -(-(s.GGUF_Q4_K_M_BYTES - 306_561_024) // 2)
    assert two.kv_bytes == 32768 * 57_344 // 2
    assert two.compute_bytes == one.compute_bytes


def test_catalog_pins_a_revision_for_every_repository():
    assert {v.hf_repo: v.hf_revision for v in s.CATALOG.values()} == {
        "Qwen/Qwen2.5-7B-Instruct": "a09a35458c702b33eeacc393d103063234e8bc28",
        "Qwen/Qwen2.5-7B-Instruct-AWQ": "b25037543e9394b818fdfca67ab2a00ecc7dd641",
        "Qwen/Qwen2.5-7B-Instruct-GGUF": "bb5d59e06d9551d752d08b292a50eb208b07ab1f"}


def test_llamacpp_fit_counts_gpu_weights_kv_and_compute_buffer():
    fit = s.llamacpp_fit(12288, 0.934, 32768)
    # token_embd (Q4_K, 152064 x 3584) stays in host memory: 292.36 MiB off the GGUF
    assert fit.weights_bytes == 4_686_883_062 - 306_561_024
    assert fit.kv_bytes == 32768 * 57_344
    # flash attention: a measured base plus the f16 KQ mask over the pool, no score matrix
    assert fit.compute_bytes == 136 * 2 ** 20 + 512 * 32768 * 2
    assert s.llamacpp_compute_bytes(32768, flash_attn=False) == \
        fit.compute_bytes + 512 * 32768 * 28 * 4
    assert fit.overhead_bytes == 640 * 2 ** 20
    assert fit.fits
    assert not s.llamacpp_fit(12288, 0.934, 131072).fits


def test_llamacpp_q8_0_kv_is_34_bytes_per_32_values():
    assert s.llamacpp_kv_bytes_per_token("f16") == 57_344
    assert s.llamacpp_kv_bytes_per_token("q8_0") == 30_464


def test_llamacpp_max_pool_is_what_fits_after_weights_and_buffers():
    pool = s.llamacpp_max_pool(12288, 0.934)
    assert pool == 106_752 and pool % 256 == 0
    assert s.llamacpp_fit(12288, 0.934, pool).fits
    assert not s.llamacpp_fit(12288, 0.934, pool + 256 + 255).fits


def test_llamacpp_estimate_matches_the_h200_measurement_within_5_percent():
    """tests/device/recorded/llama-server-gpu: llama-server with the role's flags for the RTX 3060
    and RTX 4090 plans, a full-size Q4_K_M Qwen2.5-7B; the process's GPU memory (nvidia-smi) and
    llama.cpp's own buffers against llamacpp_fit. Never under (the plan must not overflow)."""
    import json
    from pathlib import Path
    record = json.loads((Path(__file__).resolve().parents[1] / "device" / "recorded"
                         / "llama-server-gpu" / "llama-server-gpu.json").read_text())
    seen = 0
    for run in record["plans"]:
        plan = run["plan"]
        fit = s.llamacpp_fit(plan["vram_mib"], plan["gpu_memory_utilization"],
                             plan["kv_cache_tokens"])
        buffers = run["llama_buffers_mib"]
        assert abs(fit.weights_bytes / 2 ** 20 - buffers["model"]) / buffers["model"] < 0.01
        assert fit.kv_bytes / 2 ** 20 == buffers["kv"]
        assert 0 <= fit.compute_bytes / 2 ** 20 - buffers["compute"] < 0.05 * buffers["compute"]
        measured = run["gpu_used_mib_after_load"]
        estimate = fit.needed_bytes / 2 ** 20
        assert 0 <= (estimate - measured) / measured < 0.05, (estimate, measured)
        seen += 1
    assert seen == 2


def test_lora_memory_of_qwen25_7b_per_rank_and_slot():
    # per block 7 x 3584 + 2 x 3584 + 2 x 512 + 3 x 18944 = 90,112; 28 blocks
    assert s.QWEN25_7B.lora_params_per_rank == 2_523_136
    assert s.vllm_lora_bytes(16, 1) == 80_740_352
    assert s.vllm_lora_bytes(16, 1, tensor_parallel_size=2) == 40_370_176
    assert [s.vllm_lora_rank(r) for r in (0, 1, 2, 8, 9, 300, 321, 512)] == \
        [0, 1, 8, 8, 16, 320, 512, 512]
