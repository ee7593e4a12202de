#!/usr/bin/env python3
"""llama-server on a real GPU: build, a full-size random Qwen2.5-7B Q4_K_M, the role's flags for the
plans of an RTX 3060 12 GB and an RTX 4090, GPU memory measured against the planner's estimate.

Run on the device machine (H200, no network) from the repository root, one phase per call:

    .venv/bin/python tests/device/llama_server_gpu.py plans        (here: the planner needs Ansible)
    python3 tests/device/llama_server_gpu.py build  --src .dev/llama-src.tar.gz --work /root/lsg
    python3 tests/device/llama_server_gpu.py model  --tokenizer .dev/tokenizer --work /root/lsg
    python3 tests/device/llama_server_gpu.py serve  --work /root/lsg --out "$OUT"   (quantizes first)

build: llama.cpp from the llama-cpp-python sdist's vendored tree (the pin the bundle packages), CUDA
       architecture 90, targets llama-server and llama-quantize.
model: Qwen2ForCausalLM with Qwen2.5-7B-Instruct's config (plugins/module_utils/llm_sizing.py) and
       random bf16 weights, saved as safetensors with the tests' tiny tokenizer (the converter pads
       the vocabulary to 152,064), converted with the vendored convert_hf_to_gguf.py (bf16) and
       quantized to Q4_K_M with the vendored llama-quantize.
serve: for each plan (planner on the recorded RTX 3060 / RTX 4090 nvidia-smi fixtures, engine
       llamacpp) llama-server runs with exactly the flags roles/llamacpp renders; records time to
       ready, the process's GPU memory (nvidia-smi) and llama.cpp's own buffer sizes against the
       planner's estimate, and aggregate tokens/s and time to first token at 1/4/16 concurrent
       streams. Writes llama-server-gpu.json and .txt into --out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))  # llm_sizing: no Ansible needed


def log(msg: str) -> None:
    print(msg, flush=True)


def run(cmd, **kw):
    log("+ " + " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def src_dir(work: Path) -> Path:
    return next((work / "src").glob("llama_cpp_python-*/vendor/llama.cpp"))


# --- build --------------------------------------------------------------------------------------

def build(args) -> None:
    work = Path(args.work)
    (work / "src").mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.src) as tar:
        tar.extractall(work / "src")
    src = src_dir(work)
    t0 = time.time()
    run(["cmake", "-S", src, "-B", work / "build", "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
         "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_UI=OFF",
         "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
         "-DGGML_NATIVE=OFF", "-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=" + args.arch])
    run(["cmake", "--build", work / "build", "--target", "llama-server", "llama-quantize",
         "--parallel", str(os.cpu_count() or 8)])
    log("BUILD %.0f s" % (time.time() - t0))
    run([work / "build" / "bin" / "llama-server", "--version"])


# --- model --------------------------------------------------------------------------------------

def model(args) -> None:
    import torch
    from llm_sizing import QWEN25_7B as A
    from transformers import Qwen2Config, Qwen2ForCausalLM

    work = Path(args.work)
    hf = work / "qwen2.5-7b-random"
    t0 = time.time()
    if not (hf / "config.json").exists():
        small = args.tiny  # a local dry run of the pipeline: same vocabulary, tiny layers
        config = Qwen2Config(
            vocab_size=A.vocab_size, hidden_size=256 if small else A.hidden_size,
            intermediate_size=512 if small else A.intermediate_size,
            num_hidden_layers=2 if small else A.num_layers,
            num_attention_heads=4 if small else A.num_attention_heads,
            num_key_value_heads=2 if small else A.num_kv_heads,
            max_position_embeddings=A.max_position_embeddings, rope_theta=1000000.0,
            rms_norm_eps=1e-6, tie_word_embeddings=A.tie_word_embeddings,
            torch_dtype="bfloat16", bos_token_id=151643, eos_token_id=151645)
        torch.manual_seed(0)
        with torch.device("cpu" if small else "cuda"):
            m = Qwen2ForCausalLM(config).to(torch.bfloat16)
        n = sum(p.numel() for p in m.parameters())
        log("PARAMS %d" % n)
        m.save_pretrained(hf, safe_serialization=True, max_shard_size="5GB")
        del m
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        for f in Path(args.tokenizer).iterdir():
            shutil.copy(f, hf / f.name)
        log("MODEL saved %.0f s" % (time.time() - t0))
    src = src_dir(work)
    bf16 = work / "qwen2.5-7b-random-bf16.gguf"
    t1 = time.time()
    if not bf16.exists():
        # The tests' tiny tokenizer uses Qwen2's pre-tokenizer regex but not Qwen's vocabulary, so
        # the converter's hash check does not know it: tell it "qwen2" (as tests/assets does).
        runner = (
            "import sys\n"
            "convdir = sys.argv[1]\n"
            "sys.path.insert(0, convdir)\n"
            "sys.path.insert(1, convdir + '/gguf-py')\n"
            "import conversion.base as base\n"
            "base.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'qwen2'\n"
            "import convert_hf_to_gguf\n"
            "sys.argv = ['convert_hf_to_gguf.py'] + sys.argv[2:]\n"
            "convert_hf_to_gguf.main()\n")
        run([sys.executable, "-c", runner, src, hf, "--outfile", bf16, "--outtype", "bf16"])
    log("CONVERT %.0f s" % (time.time() - t1))
    if args.quantize:
        quantize(work)


def quantize(work: Path) -> None:
    bf16 = work / "qwen2.5-7b-random-bf16.gguf"
    q4 = work / "qwen2.5-7b-random-q4_k_m.gguf"
    t2 = time.time()
    if not q4.exists():
        run([work / "build" / "bin" / "llama-quantize", bf16, q4, "Q4_K_M",
             str(os.cpu_count() or 8)])
    log("QUANTIZE %.0f s, %d bytes" % (time.time() - t2, q4.stat().st_size))
    bf16.unlink(missing_ok=True)  # 15 GB; the Q4_K_M file is what gets served


# --- serve --------------------------------------------------------------------------------------

def plans(args) -> None:
    """Here, not on the device: the plans of the recorded cards, engine llamacpp -> .dev/plans.json."""
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from ansible.module_utils import llm_gpu
    from ansible.module_utils.llm_planner import plan

    from conftest import SYSFS, fixture_runner  # noqa: E402  (wires ansible.module_utils)

    result = {}
    for card in args.cards.split(","):
        facts = llm_gpu.gather(fixture_runner(card), "/usr/bin/nvidia-smi", str(SYSFS / "empty"))
        result[card] = plan(facts, {"engine": "llamacpp"}).to_dict()
    Path(args.plans).write_text(json.dumps(result, indent=1))
    log("PLANS " + ", ".join("%s: %d slots, pool %d, per slot %d" % (
        c, p["max_num_seqs"], p["kv_cache_tokens"], p["max_model_len"]) for c, p in result.items()))


def role_flags(p: dict, gguf: Path, key_file: Path, port: int) -> list:
    """What roles/llamacpp/vars/main.yml renders into ExecStart for plan p (GPU host)."""
    cache = "q8_0" if p["kv_cache_dtype"] == "q8_0" else "f16"
    return ["--api-key-file", key_file, "--alias", "qwen2.5-7b-instruct",
            "--cache-type-k", cache, "--cache-type-v", cache,
            "--ctx-size", p["kv_cache_tokens"], "--flash-attn", "on" if p["flash_attn"] else "off",
            "--host", "127.0.0.1", "--jinja", "--kv-unified",
            "--kv-unified-per-slot", p["max_model_len"], "--metrics", "--model", gguf,
            "--n-gpu-layers", p["n_gpu_layers"], "--no-webui", "--parallel", p["max_num_seqs"],
            "--port", port, "--slots"]


def gpu_used_by(pid: int) -> int:
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
    except OSError:
        return -1
    for line in out.splitlines():
        p, mem = [x.strip() for x in line.split(",")]
        if p == str(pid):
            return int(mem)
    return -1


def stream_chat(port: int, key: str, prompt: str, max_tokens: int, out: list) -> None:
    body = json.dumps({"model": "qwen2.5-7b-instruct", "stream": True, "max_tokens": max_tokens,
                       "ignore_eos": True, "temperature": 0,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": prompt}]})
    t0 = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body,
                 {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    resp = conn.getresponse()
    # A random-weight model mostly samples the [PAD] ids the converter added, which decode to
    # nothing: count tokens from the server's usage, and take the first chunk as the first token.
    ttft, tokens = None, 0
    for raw in resp:
        line = raw.decode(errors="replace").strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if ttft is None and chunk.get("choices"):
            ttft = time.time() - t0
        if chunk.get("usage"):
            tokens = chunk["usage"].get("completion_tokens", tokens)
        elif chunk.get("timings"):
            tokens = chunk["timings"].get("predicted_n", tokens)
    conn.close()
    out.append({"status": resp.status, "ttft": ttft, "tokens": tokens, "wall": time.time() - t0})


def concurrency(port: int, key: str, n: int, max_tokens: int) -> dict:
    prompt = "Write a long story about a lighthouse keeper. " * 12
    results: list = []
    threads = [threading.Thread(target=stream_chat, args=(port, key, prompt, max_tokens, results))
               for _ in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    ttfts = sorted(r["ttft"] for r in results if r["ttft"] is not None)
    tokens = sum(r["tokens"] for r in results)
    pick = (lambda q: ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))]) if ttfts else (lambda q: None)
    return {"concurrency": n, "statuses": sorted({r["status"] for r in results}),
            "tokens": tokens, "wall_s": round(wall, 2), "aggregate_tok_s": round(tokens / wall, 1),
            "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1) if ttfts else None,
            "ttft_p95_ms": round(pick(0.95) * 1000, 1) if ttfts else None}


def buffers(logtext: str) -> dict:
    """llama.cpp's own buffer sizes (MiB) from the server log."""
    out = {}
    for kind, pattern in (("model", r"CUDA0 model buffer size =\s*([\d.]+) MiB"),
                          ("model_host", r"CPU_Mapped model buffer size =\s*([\d.]+) MiB"),
                          ("kv", r"CUDA0 KV buffer size =\s*([\d.]+) MiB"),
                          ("compute", r"CUDA0 compute buffer size =\s*([\d.]+) MiB"),
                          ("compute_host", r"CUDA_Host compute buffer size =\s*([\d.]+) MiB")):
        found = [float(x) for x in re.findall(pattern, logtext)]
        out[kind] = round(sum(found), 1) if found else None
    return out


def serve(args) -> None:
    import llm_sizing as s

    all_plans = json.loads(Path(args.plans).read_text())

    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quantize(work)
    gguf = work / "qwen2.5-7b-random-q4_k_m.gguf"
    key_file = work / "api-key"
    key_file.write_text("device-test-key-0123456789abcdef\n")
    key = "device-test-key-0123456789abcdef"
    server = work / "build" / "bin" / "llama-server"
    report = {"gguf_bytes": gguf.stat().st_size, "planner_gguf_bytes": s.GGUF_Q4_K_M_BYTES,
              "plans": []}
    for card in args.cards.split(","):
        p = all_plans[card]
        flags = role_flags(p, gguf, key_file, 18090)
        logf = work / ("server-%s.log" % card)
        t0 = time.time()
        with open(logf, "w") as lf:
            # -lv 4 (measurement only, not a role flag): llama.cpp then logs its buffer sizes
            proc = subprocess.Popen([str(server)] + [str(f) for f in flags] + ["-lv", "4"], stdout=lf,
                                    stderr=subprocess.STDOUT)
        ready = None
        while time.time() - t0 < 300 and proc.poll() is None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", 18090, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    ready = time.time() - t0
                    break
            except OSError:
                pass
            time.sleep(0.2)
        fit = s.llamacpp_fit(p["vram_mib"], p["gpu_memory_utilization"], p["kv_cache_tokens"],
                             kv_type="q8_0" if p["kv_cache_dtype"] == "q8_0" else "f16")
        entry = {"card": card, "plan": {k: p[k] for k in (
            "max_num_seqs", "kv_cache_tokens", "max_model_len", "gpu_memory_utilization",
            "kv_cache_dtype", "flash_attn", "vram_mib", "gpu_memory_used_mib")},
            "flags": " ".join(str(f) for f in flags), "ready_s": ready,
            "planner": {"weights": fit.weights_bytes, "kv": fit.kv_bytes,
                        "compute": fit.compute_bytes, "non_torch": fit.overhead_bytes,
                        "cuda_context": s.CUDA_CONTEXT_BYTES,
                        "total_with_context": fit.needed_bytes + s.CUDA_CONTEXT_BYTES,
                        "budget": fit.budget_bytes}}
        if ready is not None:
            time.sleep(1)
            entry["gpu_used_mib_idle"] = gpu_used_by(proc.pid)
            entry["runs"] = [concurrency(18090, key, n, args.max_tokens) for n in (1, 4, 16)]
            entry["gpu_used_mib_after_load"] = gpu_used_by(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        text = logf.read_text(errors="replace")
        entry["llama_buffers_mib"] = buffers(text)
        entry["log_tail"] = text.splitlines()[-15:] if ready is None else []
        measured = entry.get("gpu_used_mib_after_load", -1)
        if measured and measured > 0:
            est = entry["planner"]["total_with_context"] / 2 ** 20
            entry["estimate_vs_measured"] = {"estimate_mib": round(est, 1),
                                             "measured_mib": measured,
                                             "diff_pct": round((est - measured) / measured * 100, 2)}
        report["plans"].append(entry)
        shutil.copy(logf, out / logf.name)
        log(json.dumps(entry, indent=1, default=str))
    (out / "llama-server-gpu.json").write_text(json.dumps(report, indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["plans", "build", "model", "serve"])
    ap.add_argument("--plans", default=".dev/plans.json")
    ap.add_argument("--src", default=".dev/llama-src.tar.gz")
    ap.add_argument("--tokenizer", default=".dev/tokenizer")
    ap.add_argument("--work", default="/root/lsg")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/lsg-out"))
    ap.add_argument("--arch", default="90")
    ap.add_argument("--cards", default="rtx3060,rtx4090")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--tiny", action="store_true", help="model: a small local dry run")
    ap.add_argument("--quantize", action="store_true", help="model: quantize now (else serve does)")
    args = ap.parse_args()
    {"plans": plans, "build": build, "model": model, "serve": serve}[args.phase](args)


if __name__ == "__main__":
    main()
