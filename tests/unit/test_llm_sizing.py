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


def test_vllm_fit_on_rtx4090_leaves_113722_kv_tokens():
    fit = s.vllm_fit(24564, 0.92, s.CATALOG["bf16"].weights_bytes, 2048)
    assert fit.total_bytes == 25_757_220_864  # 24564 MiB
    assert fit.budget_bytes == 23_696_643_194
    assert fit.kv_available_bytes == 23_696_643_194 - 15_231_233_024 - 333_479_936 - 1_610_612_736
    assert fit.kv_tokens == 113_722


def test_vllm_fit_splits_weights_and_kv_under_tensor_parallel():
    fit = s.vllm_fit(12288, 0.92, s.CATALOG["bf16"].weights_bytes, 2048, "auto", 2)
    assert fit.weights_bytes == 7_615_616_512
    assert fit.kv_bytes_per_token == 28_672
    assert fit.kv_tokens == 80_022


def test_llamacpp_fit_counts_weights_kv_and_compute_buffer():
    fit = s.llamacpp_fit(12288, 0.92, 32768)
    assert fit.kv_bytes == 32768 * 57_344
    assert fit.compute_bytes == 512 * 152064 * 4 + 512 * 32768 * 28 * 4
    assert fit.fits
    assert not s.llamacpp_fit(12288, 0.92, 131072).fits
