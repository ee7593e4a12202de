"""Device test: gpu_facts parsing against the real nvidia-smi, and the memory model of
llm_sizing against torch on the real GPU (Qwen2.5-7B architecture, random bf16 weights).

Run on a GPU host, either way:
    LLM_DEVICE_TEST=1 python -m pytest -m device tests/device -q
    python tests/device/test_device_gpu.py          # prints the numbers, no pytest needed
Raw outputs go to $LLM_DEVICE_OUT (if set). Results are recorded in tests/device/RESULTS.md.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))  # llm_gpu/llm_sizing: no Ansible

import llm_gpu  # noqa: E402
import llm_sizing  # noqa: E402

try:
    import pytest
    device = pytest.mark.device
except ImportError:  # plain-script mode on a host without pytest
    pytest = None

    def device(fn):
        return fn

OUT = os.environ.get("LLM_DEVICE_OUT")
_CACHE = {}


def _save(name, text):
    if OUT:
        Path(OUT).mkdir(parents=True, exist_ok=True)
        (Path(OUT) / name).write_text(text)


def _run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
    return proc.returncode, proc.stdout, proc.stderr


def gpu_facts_real():
    if "facts" in _CACHE:
        return _CACHE["facts"]
    smi = shutil.which("nvidia-smi")
    raw = {}

    def recording_run(argv):
        rc, out, err = _run(argv)
        args = " ".join(argv[1:])
        if "compute_cap" in args:
            raw["query-gpu-facts.csv"] = out
        elif "--query-gpu" in args:
            raw["query-fallback.csv"] = out
        elif args == "--version":
            raw["nvidia-smi-version.txt"] = out
        elif args == "":
            raw["nvidia-smi.txt"] = out
        return rc, out, err

    facts = llm_gpu.gather(recording_run, smi, "/sys")
    for name, text in raw.items():
        _save(name, text)
    _save("gpu_facts.json", json.dumps(facts, indent=2, sort_keys=True))
    _CACHE["facts"] = facts
    return facts


def nvml_real():
    return llm_gpu.pynvml_facts()


def qwen_config():
    from transformers import Qwen2Config
    kwargs = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, head_dim=128,
                  vocab_size=152064, max_position_embeddings=32768,
                  tie_word_embeddings=False, torch_dtype="bfloat16", use_cache=True)
    try:
        return Qwen2Config(rope_theta=1000000.0, **kwargs)
    except TypeError:
        return Qwen2Config(**kwargs)


def _cache_tensor_bytes(cache):
    """Bytes of all K/V tensors in a transformers cache (old and new layouts)."""
    total = 0
    if hasattr(cache, "layers"):
        for layer in cache.layers:
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if t is not None and hasattr(t, "numel"):
                    total += t.numel() * t.element_size()
    elif hasattr(cache, "key_cache"):
        for t in list(cache.key_cache) + list(cache.value_cache):
            total += t.numel() * t.element_size()
    else:  # legacy tuple of (k, v)
        for k, v in cache:
            total += k.numel() * k.element_size() + v.numel() * v.element_size()
    return total


def torch_measure():
    if "torch" in _CACHE:
        return _CACHE["torch"]
    import torch
    import transformers
    from transformers import Qwen2ForCausalLM

    res = {"torch": torch.__version__, "transformers": transformers.__version__,
           "cuda": torch.version.cuda}
    free, total = torch.cuda.mem_get_info()
    res["cuda_mem_get_info_total"] = total
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    t0 = time.time()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(qwen_config())
    model.eval()
    torch.cuda.synchronize()
    res["init_s"] = round(time.time() - t0, 1)
    res["params"] = sum(p.numel() for p in model.parameters())
    res["weights_allocated_bytes"] = torch.cuda.memory_allocated() - base

    per_len = {}
    for n in (2048, 8192):
        ids = torch.randint(0, 152064, (1, n), device="cuda")
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            try:
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            except TypeError:
                out = model(input_ids=ids, use_cache=True, num_logits_to_keep=1)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        kv_tensor = _cache_tensor_bytes(out.past_key_values)
        held = torch.cuda.memory_allocated() - before
        per_len[n] = {"kv_tensor_bytes": kv_tensor, "held_after_forward": held,
                      "peak_extra": peak, "activation_est": peak - kv_tensor}
        del out, ids
        torch.cuda.empty_cache()
    res["per_len"] = per_len
    a, b = per_len[2048], per_len[8192]
    res["kv_per_token_tensor"] = b["kv_tensor_bytes"] / 8192
    res["kv_per_token_diff"] = (b["kv_tensor_bytes"] - a["kv_tensor_bytes"]) / (8192 - 2048)
    res["kv_per_token_mem_diff"] = (b["held_after_forward"] - a["held_after_forward"]) / 6144
    del model
    torch.cuda.empty_cache()
    _CACHE["torch"] = res
    return res


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------

@device
def test_gpu_facts_reads_the_real_gpu():
    facts = gpu_facts_real()
    assert facts["status"] == "ok", facts["message"]
    assert facts["gpu_count"] >= 1
    gpu = facts["gpus"][0]
    assert gpu["memory_total_mib"] > 1024
    assert gpu["compute_capability"] and "." in gpu["compute_capability"]
    assert facts["driver_major"] >= 535
    assert facts["cuda_driver_version"]
    nvml = nvml_real()
    if nvml:
        assert nvml["gpus"][0]["compute_capability"] == gpu["compute_capability"]
        assert nvml["gpus"][0]["memory_total_mib"] == gpu["memory_total_mib"]
        assert nvml["cuda_driver_version"] == facts["cuda_driver_version"]


@device
def test_weights_allocated_match_sizing_within_1_percent():
    res = torch_measure()
    assert res["params"] == llm_sizing.QWEN25_7B_PARAMS
    expected = llm_sizing.CATALOG["bf16"].weights_bytes
    assert abs(res["weights_allocated_bytes"] - expected) / expected < 0.01


@device
def test_kv_bytes_per_token_match_sizing_within_1_percent():
    res = torch_measure()
    for key in ("kv_per_token_tensor", "kv_per_token_diff"):
        assert abs(res[key] - 57344) / 57344 < 0.01, (key, res[key])
    assert llm_sizing.kv_bytes_per_token("auto") == 57344


@device
def test_activation_model_covers_measured_peak():
    res = torch_measure()
    for n in (2048, 8192):
        measured = res["per_len"][n]["activation_est"]
        assert llm_sizing.activation_bytes(n) >= measured * 0.9, (n, measured)


def main():
    facts = gpu_facts_real()
    print("GPU_FACTS", json.dumps(facts, sort_keys=True))
    print("NVML", json.dumps(nvml_real(), sort_keys=True))
    res = torch_measure()
    expected = llm_sizing.CATALOG["bf16"].weights_bytes
    print("TORCH", json.dumps(res, sort_keys=True))
    print("WEIGHTS allocated %d vs llm_sizing %d: %+.3f%%"
          % (res["weights_allocated_bytes"], expected,
             100.0 * (res["weights_allocated_bytes"] - expected) / expected))
    print("KV per token: tensors %.1f, diff %.1f, memory diff %.1f vs llm_sizing %d"
          % (res["kv_per_token_tensor"], res["kv_per_token_diff"],
             res["kv_per_token_mem_diff"], llm_sizing.kv_bytes_per_token("auto")))
    for n, v in sorted(res["per_len"].items()):
        print("ACTIVATION %d tokens: measured %d (%.3f GiB), llm_sizing %d (%.3f GiB)"
              % (n, v["activation_est"], v["activation_est"] / 2 ** 30,
                 llm_sizing.activation_bytes(n), llm_sizing.activation_bytes(n) / 2 ** 30))
    print("CUDA total %d bytes = %d MiB vs nvidia-smi %s MiB"
          % (res["cuda_mem_get_info_total"], res["cuda_mem_get_info_total"] // 2 ** 20,
             facts["gpus"][0]["memory_total_mib"] if facts["gpus"] else None))
    _save("device_results.json", json.dumps({"gpu_facts": facts, "torch": res}, indent=2,
                                             sort_keys=True, default=str))
    failures = 0
    for test in (test_gpu_facts_reads_the_real_gpu,
                 test_weights_allocated_match_sizing_within_1_percent,
                 test_kv_bytes_per_token_match_sizing_within_1_percent,
                 test_activation_model_covers_measured_peak):
        try:
            test()
            print("PASS", test.__name__)
        except AssertionError as exc:
            failures += 1
            print("FAIL", test.__name__, exc)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
