#!/usr/bin/env python3
"""CPU benchmark, side by side: llama.cpp's llama-server (the .deb) vs llama-cpp-python's server.

Same GGUF (tests/assets' random `bench` preset: Qwen2 architecture, ~228 M parameters, Q4_K_M
~137 MB, big enough that the engine and not Python/HTTP overhead dominates), same thread count,
one server at a time, on THIS machine. For 1, 4 and 8 simultaneous streaming chat completions
(same ~200-token prompt, max_tokens 128, temperature 0, EOS suppressed so every request
generates exactly max_tokens) it measures, per request, the time to first token (first SSE
chunk with content) and the generated tokens; per batch, aggregate tokens/s = all generated
tokens / wall time of the batch. Each point runs BENCH_REPEATS times (3); the servers alternate
order between repeats so a shift in background load hits both.

Run from the repository root with the assets venv (stdlib only otherwise):

    export LLM_BUNDLE_CACHE=/var/cache/llm-bundle-b      # default /var/cache/llm-bundle
    $LLM_BUNDLE_CACHE/venvs/assets/bin/python tests/bench/llamacpp-servers.py

Needs (bash tests/assets/build.sh): $LLM_BUNDLE_CACHE/debs/llama-server/debian12-cpu/*.deb,
wheelhouse/llama_cpp_python-*.whl, venvs/assets. The bench model is built on demand and cached
(make_tiny_model.py / make_tiny_gguf.py --preset bench: ~10 s + ~25 s; never by build.sh).

(a) llama-server: the .deb unpacked with `dpkg-deb -x` into a temp dir, with the flags the role
    renders for CPU: --parallel N --ctx-size N*4096 --kv-unified --kv-unified-per-slot 4096
    --flash-attn on --cache-type-k f16 --cache-type-v f16 --n-gpu-layers 0 --jinja --no-webui
    --metrics --api-key-file FILE (N = the highest concurrency, 8), plus --threads/--threads-batch.
(b) llama-cpp-python: the bundle wheel + tests/assets/requirements-llamacpp-server.txt in a temp
    venv (BENCH_PYTHON, default /usr/bin/python3), run as the role used to:
    `python -m llama_cpp.server --model ... --n_ctx 4096 --interrupt_requests false` (+ n_threads,
    n_threads_batch; API key through the API_KEY environment variable).

Every prompt starts with a unique nonce, so neither server can reuse a cached prefix: each
request pays its full prefill, as a new chat does.

Prints: the machine (nproc, CPU model, load average; a warning when it is high), per-batch
lines while running, then a table: server, concurrency, aggregate tok/s (median of the
repeats), TTFT p50/p95 in ms (over all requests of the repeats), tokens per batch, and the
ratio llama-server / llama-cpp-python of the aggregate tok/s at each concurrency. Numbers
only: no pass/fail. Before the measurements it waits (up to BENCH_LOAD_WAIT s, default 600)
for the 1-minute load average to drop below BENCH_LOAD_MAX (1.5); it measures anyway when it
does not, and prints the load average at every point.

Environment: LLM_BUNDLE_CACHE; BENCH_THREADS (default nproc; both servers); BENCH_CONCURRENCY
("1,4,8"); BENCH_REPEATS (3); BENCH_MAX_TOKENS (128); BENCH_PROMPT_WORDS (length of the
prompt, default tuned for ~200 tokens); BENCH_PORT (18090); BENCH_PYTHON; BENCH_DEB;
BENCH_OLD_VENV (reuse an existing llama-cpp-python[server] venv instead of a temp one);
BENCH_LOAD_MAX; BENCH_LOAD_WAIT; BENCH_KEEP_LOGS=1 keeps the temp dir (server logs).
"""
from __future__ import annotations

import glob
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets"
CACHE = Path(os.environ.get("LLM_BUNDLE_CACHE") or "/var/cache/llm-bundle")
GGUF = CACHE / "models" / "bench-qwen2-gguf" / "bench-qwen2-q4_k_m.gguf"
PORT = int(os.environ.get("BENCH_PORT", "18090"))
THREADS = int(os.environ.get("BENCH_THREADS") or os.cpu_count() or 2)
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,4,8").split(",")]
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MAX_TOKENS = int(os.environ.get("BENCH_MAX_TOKENS", "128"))
PROMPT_WORDS = int(os.environ.get("BENCH_PROMPT_WORDS", "66"))  # ~200 prompt tokens incl. the chat template
LOAD_MAX = float(os.environ.get("BENCH_LOAD_MAX", "1.5"))
LOAD_WAIT = float(os.environ.get("BENCH_LOAD_WAIT", "600"))
SLOT_CTX = 4096
ALIAS = "bench"
KEY = "bench-" + uuid.uuid4().hex[:16]
# <|endoftext|> and <|im_end|> of the bench tokenizer: suppressed so every request runs to max_tokens
# (llama-server also gets ignore_eos; llama-cpp-python ignores that field).
NO_EOS_BIAS = {"1002": -100, "1004": -100}
WORDS = ("the model server answers a question about the weather in the city and the user asks for "
         "more details on memory cache latency and the request stream of tokens per second while "
         "the assistant explains how python and bash deploy nginx with ansible on a cpu or gpu").split()

NEW, OLD = "llama-server", "llama-cpp-python"


def log(msg: str) -> None:
    print(msg, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> None:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        f = Path("/proc/cpuinfo").read_text()
        flags = " ".join(x for x in ("avx2", "fma", "f16c", "avx512f") if f" {x}" in f)
    except OSError:
        pass
    log(f"machine: {platform.node()}, nproc {os.cpu_count()}, CPU {cpu} ({flags}), "
        f"{platform.system()} {platform.release()}")
    log(f"load average at start (1/5/15 min): {loadavg()}")
    if os.getloadavg()[0] > LOAD_MAX:
        log(f"WARNING: load average {os.getloadavg()[0]:.2f} > {LOAD_MAX} on {os.cpu_count()} cores: "
            "other work competes for the CPU; the numbers below are lower bounds")


def wait_for_quiet(budget: list[float]) -> None:
    """Wait (out of a shared budget of seconds) for the 1-min load average to drop below LOAD_MAX."""
    t0 = time.monotonic()
    if os.getloadavg()[0] <= LOAD_MAX or budget[0] <= 0:
        return
    log(f"waiting up to {budget[0]:.0f} s for the load average ({loadavg()}) to drop below {LOAD_MAX} ...")
    while os.getloadavg()[0] > LOAD_MAX and time.monotonic() - t0 < budget[0]:
        time.sleep(5)
    budget[0] -= time.monotonic() - t0
    log(f"  waited {time.monotonic() - t0:.0f} s, load average now {loadavg()}"
        + ("" if os.getloadavg()[0] <= LOAD_MAX else " (still high: measuring anyway)"))


def cpu_busy_s(pids: list[int]) -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of `pids` incl. their threads) so far."""
    hz = os.sysconf("SC_CLK_TCK")
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(f[:8]) - f[3] - f[4]  # user..steal, without idle and iowait (guest is inside user)
    own = 0
    for pid in pids:
        try:
            st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own += int(st[11]) + int(st[12])  # utime, stime
        except OSError:
            pass
    return busy / hz, own / hz


# --- assets ------------------------------------------------------------------------------------
def ensure_model() -> None:
    assets_py = CACHE / "venvs" / "assets" / "bin" / "python"  # numpy, safetensors, tokenizers, llama_cpp
    py = str(assets_py) if assets_py.exists() else sys.executable
    for script in ("make_tiny_model.py", "make_tiny_gguf.py"):
        r = subprocess.run([py, str(ASSETS / script), "--preset", "bench"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
            raise SystemExit(f"{script} --preset bench failed (run it with the assets venv: {CACHE}/venvs/assets)")
        log((r.stdout.strip().splitlines() or ["?"])[-1])
    log(f"model: {GGUF} ({GGUF.stat().st_size / 1e6:.1f} MB)")


def unpack_deb(work: Path) -> Path:
    deb = os.environ.get("BENCH_DEB") or (sorted(glob.glob(
        str(CACHE / "debs" / "llama-server" / "debian12-cpu" / "llm-llama-server_*_amd64.deb"))) or [""])[-1]
    if not deb or not Path(deb).is_file():
        raise SystemExit("no llm-llama-server .deb in the cache: run bash tests/assets/build.sh")
    subprocess.run(["dpkg-deb", "-x", deb, str(work / "root")], check=True)
    log(f"llama-server: {Path(deb).name}")
    return work / "root" / "opt" / "llm" / "llama.cpp" / "bin" / "llama-server"


def old_venv(work: Path) -> Path:
    if os.environ.get("BENCH_OLD_VENV"):
        return Path(os.environ["BENCH_OLD_VENV"])
    py = os.environ.get("BENCH_PYTHON") or ("/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3")
    venv = work / "old-venv"
    t0 = time.monotonic()
    if not list((CACHE / "wheelhouse").glob("llama_cpp_python-*.whl")):
        # build.sh no longer makes it (the bundle serves with llama-server): compile it once here
        log("building the llama-cpp-python wheel for the comparison (minutes, cached after)")
        subprocess.run(["bash", str(ASSETS / "build-llamacpp-wheel.sh")], check=True)
    subprocess.run([py, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                        "--find-links", str(CACHE / "wheelhouse"), "--only-binary", "llama-cpp-python",
                        "-r", str(ASSETS / "requirements-llamacpp-server.txt")], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit("pip install of llama-cpp-python[server] failed")
    log(f"llama-cpp-python[server] venv: {time.monotonic() - t0:.0f} s "
        f"({subprocess.run([str(venv / 'bin' / 'python'), '--version'], capture_output=True, text=True).stdout.strip()})")
    return venv


# --- servers -----------------------------------------------------------------------------------
def server_cmd(kind: str, work: Path, bin_or_venv: Path, n_slots: int) -> tuple[list[str], dict]:
    env = dict(os.environ)
    if kind == NEW:
        keyfile = work / "api-key"
        keyfile.write_text(KEY + "\n")
        keyfile.chmod(0o600)
        return [str(bin_or_venv), "--model", str(GGUF), "--alias", ALIAS, "--host", "127.0.0.1", "--port", str(PORT),
                "--parallel", str(n_slots), "--ctx-size", str(n_slots * SLOT_CTX),
                "--kv-unified", "--kv-unified-per-slot", str(SLOT_CTX),
                "--flash-attn", "on", "--cache-type-k", "f16", "--cache-type-v", "f16", "--n-gpu-layers", "0",
                "--jinja", "--no-webui", "--metrics", "--api-key-file", str(keyfile),
                "--threads", str(THREADS), "--threads-batch", str(THREADS)], env
    env["API_KEY"] = KEY
    return [str(bin_or_venv / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(GGUF),
            "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(PORT), "--n_ctx", str(SLOT_CTX),
            "--n_gpu_layers", "0", "--interrupt_requests", "false",
            "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS)], env


def start_server(kind: str, cmd: list[str], env: dict, logfile: Path) -> subprocess.Popen:
    f = open(logfile, "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        if proc.poll() is not None:
            sys.stderr.write(logfile.read_text(errors="replace")[-3000:])
            raise SystemExit(f"{kind} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
            c.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{kind} not ready after 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- client ------------------------------------------------------------------------------------
def prompt_messages(nonce: str) -> list[dict]:
    body = " ".join(WORDS[(i * 7) % len(WORDS)] for i in range(PROMPT_WORDS))
    return [{"role": "system", "content": f"Session {nonce}. You are a helpful assistant."},
            {"role": "user", "content": f"Please summarise this text: {body}"}]


def one_chat(nonce: str, start: threading.Event, result: dict) -> None:
    payload = json.dumps({
        "model": ALIAS, "messages": prompt_messages(nonce), "stream": True, "max_tokens": MAX_TOKENS,
        "temperature": 0, "ignore_eos": True, "logit_bias": NO_EOS_BIAS,
        "stream_options": {"include_usage": True},
    })
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
    conn.connect()
    start.wait()
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=payload,
                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        result.update(error=f"HTTP {resp.status}: {resp.read()[:300]!r}")
        return
    ttft = None
    chunks = 0
    usage = None
    finish = None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices") or []:
            if (ch.get("delta") or {}).get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
            finish = ch.get("finish_reason") or finish
    t_end = time.perf_counter()
    conn.close()
    if usage and usage.get("completion_tokens"):
        tokens, src = usage["completion_tokens"], "usage"
    elif finish == "length":  # ran to max_tokens (llama-cpp-python sends no usage when streaming)
        tokens, src = MAX_TOKENS, "finish_reason=length"
    else:
        tokens, src = chunks, "content chunks"
    result.update(ttft=ttft, tokens=tokens, src=src, chunks=chunks, finish=finish, end=t_end,
                  prompt_tokens=(usage or {}).get("prompt_tokens"))


def batch(n: int, tag: str, server_pid: int) -> dict:
    start = threading.Event()
    results = [dict() for _ in range(n)]
    threads = [threading.Thread(target=one_chat, args=(f"{tag}-{i}-{uuid.uuid4().hex[:8]}", start, results[i]))
               for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.05)  # all connected and waiting
    busy0, own0 = cpu_busy_s([server_pid, os.getpid()])
    t0 = time.perf_counter()
    start.set()
    for t in threads:
        t.join()
    wall = max(r.get("end", t0) for r in results) - t0
    busy1, own1 = cpu_busy_s([server_pid, os.getpid()])
    elapsed = time.perf_counter() - t0
    others = max(0.0, ((busy1 - busy0) - (own1 - own0)) / elapsed)  # cores used by other processes
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise SystemExit(f"{tag}: {errors[0]}")
    total = sum(r["tokens"] for r in results)
    return {"wall": wall, "tokens": total, "tok_s": total / wall, "ttft": [r["ttft"] for r in results],
            "src": sorted({r["src"] for r in results}), "prompt_tokens": results[0].get("prompt_tokens"),
            "finish": sorted({str(r["finish"]) for r in results}), "others": others,
            "server_cores": (own1 - own0) / elapsed}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q  # linear interpolation (numpy's default)
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main() -> int:
    machine()
    log(f"settings: threads {THREADS} (both servers), concurrency {CONCURRENCY}, repeats {REPEATS}, "
        f"max_tokens {MAX_TOKENS}, llama-server --parallel {max(CONCURRENCY)} "
        f"--ctx-size {max(CONCURRENCY) * SLOT_CTX}, llama-cpp-python --n_ctx {SLOT_CTX}")
    ensure_model()
    work = Path(tempfile.mkdtemp(prefix="bench-llamacpp-servers."))
    results: dict[tuple[str, int], list[dict]] = {}
    loads: dict[tuple[str, int], list[str]] = {}
    loads_all: list[float] = []
    others_all: list[float] = []
    prompt_tokens = None
    try:
        new_bin = unpack_deb(work)
        venv = old_venv(work)
        budget = [LOAD_WAIT]
        wait_for_quiet(budget)
        log(f"load average before measuring: {loadavg()}")
        t_start = time.monotonic()
        for rep in range(REPEATS):
            order = (NEW, OLD) if rep % 2 == 0 else (OLD, NEW)
            for kind in order:
                cmd, env = server_cmd(kind, work, new_bin if kind == NEW else venv, max(CONCURRENCY))
                logfile = work / f"{kind}.log"
                t0 = time.monotonic()
                proc = start_server(kind, cmd, env, logfile)
                ready = time.monotonic() - t0
                try:
                    w = batch(1, f"warmup-{kind}-{rep}", proc.pid)  # page in the weights, first-call costs
                    prompt_tokens = w["prompt_tokens"] or prompt_tokens
                    log(f"[rep {rep + 1}/{REPEATS}] {kind}: ready in {ready:.1f} s; warm-up "
                        f"{w['wall']:.1f} s (prompt {w['prompt_tokens'] or '?'} tokens)")
                    for c in CONCURRENCY:
                        la = os.getloadavg()[0]
                        r = batch(c, f"{kind}-{c}-{rep}", proc.pid)
                        results.setdefault((kind, c), []).append(r)
                        loads.setdefault((kind, c), []).append(f"{la:.1f}/{r['others']:.1f}")
                        loads_all.append(la)
                        others_all.append(r["others"])
                        log(f"  c={c}: {r['tokens']} tokens in {r['wall']:.2f} s = {r['tok_s']:.1f} tok/s; "
                            f"TTFT min/max {min(r['ttft']) * 1e3:.0f}/{max(r['ttft']) * 1e3:.0f} ms; "
                            f"tokens from {','.join(r['src'])}; finish {','.join(r['finish'])}; load1 {la:.2f}; "
                            f"CPU: server {r['server_cores']:.2f} cores, other processes {r['others']:.2f} cores")
                finally:
                    stop_server(proc)
        elapsed = time.monotonic() - t_start
    finally:
        if os.environ.get("BENCH_KEEP_LOGS") == "1":
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    log("")
    log(f"prompt {prompt_tokens or '?'} tokens (llama-server's count), {MAX_TOKENS} generated tokens per request, "
        f"{THREADS} threads per server")
    log(f"{'server':<17} {'conc':>4} {'agg tok/s (median)':>19} {'min-max':>13} {'TTFT p50 ms':>12} "
        f"{'TTFT p95 ms':>12} {'tokens/batch':>12}  load1/other-cores per repeat")
    for kind in (NEW, OLD):
        for c in CONCURRENCY:
            rs = results[(kind, c)]
            tps = [r["tok_s"] for r in rs]
            ttft = [t for r in rs for t in r["ttft"]]
            log(f"{kind:<17} {c:>4} {statistics.median(tps):>19.1f} {min(tps):>6.1f}-{max(tps):<6.1f} "
                f"{pct(ttft, 0.5) * 1e3:>12.0f} {pct(ttft, 0.95) * 1e3:>12.0f} {rs[0]['tokens']:>12}  "
                f"{' '.join(loads[(kind, c)])}")
    log("")
    for c in CONCURRENCY:
        new = statistics.median(r["tok_s"] for r in results[(NEW, c)])
        old = statistics.median(r["tok_s"] for r in results[(OLD, c)])
        log(f"ratio llama-server / llama-cpp-python, aggregate tok/s at {c} concurrent: {new / old:.2f}x")
    log(f"measurements took {elapsed:.0f} s; load average (1 min) at the batches: min {min(loads_all):.2f}, "
        f"max {max(loads_all):.2f} (includes the benchmarked server itself); at the end {loadavg()}")
    log(f"CPU used by OTHER processes during the batches (cores of {os.cpu_count()}): "
        f"median {statistics.median(others_all):.2f}, max {max(others_all):.2f}")
    if statistics.median(others_all) > 0.25 * (os.cpu_count() or 1):
        log("WARNING: other processes used a sizeable share of the CPU during the measurements (shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
