#!/usr/bin/env python3
"""Convert the tiny HF model to GGUF and quantize it to Q4_K_M.

Runs in the assets venv ($LLM_BUNDLE_CACHE/venvs/assets: torch, transformers, numpy,
sentencepiece). Quantizes with llama-quantize from the bundle's llm-llama-server .deb
(LLAMA_QUANTIZE, or the .deb in $LLM_BUNDLE_CACHE/debs/llama-server/debian12-cpu, unpacked).

    python make_tiny_gguf.py [--preset tiny|embed|bench] [--hf-dir DIR] [--out-dir DIR] [--sdist TARBALL] [--force]

1. llama.cpp's convert_hf_to_gguf.py, its conversion/ package and gguf-py are taken from the
   llama-cpp-python sdist (vendor/llama.cpp) and extracted into
   $LLM_BUNDLE_CACHE/llama.cpp-convert/<version>/ (nothing of llama.cpp is kept in the repo).
2. The converter refuses BPE tokenizers whose pre-tokenizer hash it does not know. Ours was
   trained locally with Qwen2's pre-tokenizer regex, so it is told, at run time (monkeypatch
   of TextModel.get_vocab_base_pre in the converter's process, files untouched), that the
   pre-tokenizer is "qwen2".
3. bf16 GGUF -> Q4_K_M with llama-quantize (the same llama.cpp the bundle serves with).
4. The tensor types are read back with gguf-py and printed; at least one tensor must be Q4_K
   and general.file_type must be MOSTLY_Q4_K_M (15). The ChatML markers must be control
   tokens in the GGUF vocabulary (the molecule scenarios then serve it with llama-server).

Output: $LLM_BUNDLE_CACHE/models/tiny-qwen2.5-instruct-gguf/tiny-qwen2.5-instruct-q4_k_m.gguf
(+ LICENSE, README.md, SHA256SUMS, .complete). Skipped when complete and built from the
current HF model (its SHA256SUMS hash is recorded in .complete).

--preset bench converts make_tiny_model.py's bench preset instead ($LLM_BUNDLE_CACHE/models/
bench-qwen2 -> models/bench-qwen2-gguf/bench-qwen2-q4_k_m.gguf, ~137 MB; for
tests/bench/llamacpp-servers.py, never built by build.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_model import (  # noqa: E402  (same folder)
    IM_END_ID,
    IM_START_ID,
    PRESETS,
    is_complete,
    sha256_file,
    write_manifest,
)

RECIPE_VERSION = "tiny-qwen2.5-instruct-gguf/3"  # 3: quantized with llama-quantize
LLAMACPP_VERSION = os.environ.get("LLAMACPP_VERSION", "0.3.36")
GGUF_NAME = "tiny-qwen2.5-instruct-q4_k_m.gguf"
FTYPE_MOSTLY_Q4_K_M = 15
# Per preset: (GGUF recipe, GGUF file name). "tiny" is the constants above.
GGUF_PRESETS = {
    "tiny": (RECIPE_VERSION, GGUF_NAME),
    "bench": ("bench-qwen2-gguf/1", "bench-qwen2-q4_k_m.gguf"),
    "embed": ("tiny-embed-gguf/1", "tiny-embed-q4_k_m.gguf"),
}

CACHE = Path(os.environ.get("LLM_BUNDLE_CACHE") or "/var/cache/llm-bundle")

# Run inside a child python: patch the pre-tokenizer check, then run the converter's main().
_CONVERT_RUNNER = r"""
import logging, sys
convdir = sys.argv[1]
sys.path.insert(0, convdir)
sys.path.insert(1, convdir + "/gguf-py")
import conversion.base as base

def _pre_qwen2(self, tokenizer):
    logging.getLogger("tiny-gguf").info(
        "pre-tokenizer check patched: tiny tokenizer uses Qwen2's regex -> 'qwen2'")
    return "qwen2"

base.TextModel.get_vocab_base_pre = _pre_qwen2
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[2:]
convert_hf_to_gguf.main()
"""

README_TEXT = """\
# tiny-qwen2.5-instruct GGUF (Q4_K_M, generated test model)

`{gguf}` is tests/assets/make_tiny_model.py's random tiny Qwen2 model, converted with
llama.cpp's convert_hf_to_gguf.py (from the llama-cpp-python {ver} sdist) to bf16 GGUF and
quantized with llama.cpp's `llama-quantize` (Q4_K_M).

Serve it: `llama-server --model {gguf} --alias tiny --ctx-size 4096 ...`.
The chat template (Qwen2.5 ChatML) is embedded as tokenizer.chat_template.

Only tensors whose row length is a multiple of 256 can use K-quants: with hidden 128 that is
ffn_down (intermediate 256). Q4_K_M's mix gives it Q4_K in layer 0 and Q6_K in layer 1; the
128-wide tensors fall back to llama.cpp's legacy types (printed below). 1-D tensors stay F32.

Tensor types:
{types}
"""

BENCH_README_TEXT = """\
# bench-qwen2 GGUF (Q4_K_M, generated benchmark model)

`{gguf}` is tests/assets/make_tiny_model.py's random `bench` preset (Qwen2 architecture,
hidden 1024, intermediate 2816, 20 layers, 8 heads / 2 KV heads, vocab 1024), converted with
llama.cpp's convert_hf_to_gguf.py (from the llama-cpp-python {ver} sdist) to bf16 GGUF and
quantized with llama.cpp's `llama-quantize` (Q4_K_M). For CPU serving
benchmarks (tests/bench/llamacpp-servers.py); its output is gibberish.

Tensor types:
{types}
"""

EMBED_README_TEXT = """\
# tiny-embed GGUF (Q4_K_M, generated embedding test model)

`{gguf}` is tests/assets/make_tiny_model.py's random `embed` preset (the tiny shape, other weights),
converted with llama.cpp's convert_hf_to_gguf.py (from the llama-cpp-python {ver} sdist) to bf16 GGUF
and quantized with llama.cpp's `llama-quantize` (Q4_K_M). The test hosts serve it with
`llama-server --embeddings --pooling mean` as Open WebUI's embedding model: random but fixed vectors.

Tensor types:
{types}
"""
README_TEXTS = {"tiny": README_TEXT, "bench": BENCH_README_TEXT, "embed": EMBED_README_TEXT}


def log(msg: str) -> None:
    print(msg, flush=True)


def ensure_sdist(sdist: Path | None) -> Path:
    if sdist and sdist.is_file():
        return sdist
    path = CACHE / "sdist" / f"llama_cpp_python-{LLAMACPP_VERSION}.tar.gz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
                        "--dest", str(path.parent), f"llama-cpp-python=={LLAMACPP_VERSION}"], check=True)
    return path


def ensure_converter(sdist: Path) -> Path:
    """Extract convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/ and gguf-py from the sdist (cached;
    the marker names the sdist and what was extracted)."""
    dest = CACHE / "llama.cpp-convert" / LLAMACPP_VERSION
    marker = dest / ".complete"
    wanted = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
    stamp = sha256_file(sdist) + " " + ",".join(wanted)
    if marker.is_file() and marker.read_text().strip() == stamp:
        return dest
    prefix = f"llama_cpp_python-{LLAMACPP_VERSION}/vendor/llama.cpp/"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=dest.parent))
    try:
        with tarfile.open(sdist) as tf:
            members = []
            for m in tf.getmembers():
                if not m.name.startswith(prefix):
                    continue
                rel = m.name[len(prefix):]
                if rel.startswith(wanted) and (m.isfile() or m.isdir()):
                    m.name = rel
                    members.append(m)
            if not any(m.name == "convert_hf_to_gguf.py" for m in members):
                raise SystemExit(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
            tf.extractall(tmp, members=members, filter="data") if hasattr(tarfile, "data_filter") \
                else tf.extractall(tmp, members=members)
        marker_tmp = tmp / ".complete"
        marker_tmp.write_text(stamp + "\n")
        tmp.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def llama_quantize() -> Path:
    """llama-quantize: $LLAMA_QUANTIZE, else unpacked from the cached llm-llama-server .deb."""
    explicit = os.environ.get("LLAMA_QUANTIZE")
    if explicit:
        return Path(explicit)
    debs = sorted((CACHE / "debs" / "llama-server" / "debian12-cpu").glob("llm-llama-server_*.deb"))
    if not debs:
        raise SystemExit("no llm-llama-server .deb in %s: run tests/assets/build.sh (it builds it "
                         "before the GGUF)" % (CACHE / "debs" / "llama-server" / "debian12-cpu"))
    root = CACHE / "debs" / "llama-server" / "unpacked" / debs[-1].stem
    tool = root / "opt" / "llm" / "llama.cpp" / "bin" / "llama-quantize"
    if not tool.is_file():
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root.parent if root.parent.exists()
                                    else _mkdir(root.parent)))
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], check=True)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    return tool


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def quantize(src: Path, dst: Path) -> None:
    subprocess.run([str(llama_quantize()), str(src), str(dst), "Q4_K_M", str(os.cpu_count() or 2)],
                   check=True, stdout=subprocess.DEVNULL)


def tensor_types(gguf_path: Path, convdir: Path) -> tuple[dict[str, str], int, bool]:
    sys.path.insert(0, str(convdir / "gguf-py"))
    import gguf  # the sdist's gguf-py

    reader = gguf.GGUFReader(str(gguf_path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    ft_field = reader.get_field("general.file_type")
    file_type = int(ft_field.parts[ft_field.data[0]][0]) if ft_field else -1
    has_template = reader.get_field("tokenizer.chat_template") is not None
    return types, file_type, has_template


def check_chatml_tokens(gguf_path: Path, convdir: Path) -> None:
    sys.path.insert(0, str(convdir / "gguf-py"))
    import gguf  # the sdist's gguf-py

    reader = gguf.GGUFReader(str(gguf_path))
    field = reader.get_field("tokenizer.ggml.token_type")
    types = [int(field.parts[i][0]) for i in field.data]
    control = int(gguf.TokenType.CONTROL)
    if types[IM_START_ID] != control or types[IM_END_ID] != control:
        raise SystemExit("ChatML tokens %d/%d are not control tokens in the GGUF vocab: %d/%d"
                         % (IM_START_ID, IM_END_ID, types[IM_START_ID], types[IM_END_ID]))
    log(f"  ChatML ids {IM_START_ID},{IM_END_ID} are control tokens; n_vocab={len(types)}")


def build(hf_dir: Path, out_dir: Path, sdist: Path | None, preset: str = "tiny") -> None:
    recipe, gguf_name = GGUF_PRESETS[preset]
    readme = README_TEXTS[preset]
    t0 = time.monotonic()
    sdist = ensure_sdist(sdist)
    convdir = ensure_converter(sdist)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        work = tmp_parent / "work"
        work.mkdir()
        tmp = tmp_parent / out_dir.name
        tmp.mkdir()
        bf16 = work / f"{PRESETS[preset].name}-bf16.gguf"
        t1 = time.monotonic()
        subprocess.run([sys.executable, "-c", _CONVERT_RUNNER, str(convdir),
                        str(hf_dir), "--outfile", str(bf16), "--outtype", "bf16"], check=True)
        log(f"  convert_hf_to_gguf (bf16): {time.monotonic() - t1:.1f} s")
        t1 = time.monotonic()
        gguf_path = tmp / gguf_name
        quantize(bf16, gguf_path)
        log(f"  llama-quantize Q4_K_M: {time.monotonic() - t1:.1f} s")

        types, file_type, has_template = tensor_types(gguf_path, convdir)
        width = max(len(n) for n in types)
        table = "\n".join(f"  {n:<{width}}  {t}" for n, t in types.items())
        log("  tensor types:\n" + table)
        q4k = [n for n, t in types.items() if t == "Q4_K"]
        log(f"  Q4_K tensors: {q4k}; general.file_type={file_type}; chat_template={has_template}")
        if not q4k:
            raise SystemExit("no Q4_K tensor in the quantized GGUF")
        if file_type != FTYPE_MOSTLY_Q4_K_M:
            raise SystemExit(f"general.file_type is {file_type}, expected {FTYPE_MOSTLY_Q4_K_M} (MOSTLY_Q4_K_M)")
        if not has_template:
            raise SystemExit("GGUF lacks tokenizer.chat_template")
        check_chatml_tokens(gguf_path, convdir)

        shutil.copyfile(hf_dir / "LICENSE", tmp / "LICENSE")
        (tmp / "README.md").write_text(readme.format(gguf=gguf_name, ver=LLAMACPP_VERSION, types=table))
        for p in tmp.iterdir():
            p.chmod(0o644)
        write_manifest(tmp, recipe, {
            "source_sha256sums": sha256_file(hf_dir / "SHA256SUMS"),
            "llama_cpp_python": LLAMACPP_VERSION,
            "q4_k_tensors": q4k,
        })
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    size = (out_dir / gguf_name).stat().st_size
    log(f"{preset} GGUF: built {out_dir / gguf_name} ({size / 1e6:.2f} MB) in {time.monotonic() - t0:.1f} s")


def gguf_is_current(out_dir: Path, hf_dir: Path, preset: str = "tiny") -> bool:
    recipe, gguf_name = GGUF_PRESETS[preset]
    if not is_complete(out_dir, recipe) or not (out_dir / gguf_name).is_file():
        return False
    data = json.loads((out_dir / ".complete").read_text())
    return data.get("source_sha256sums") == sha256_file(hf_dir / "SHA256SUMS")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(GGUF_PRESETS), default="tiny",
                    help="which make_tiny_model.py preset to convert (default tiny)")
    ap.add_argument("--hf-dir", type=Path, default=None, help="default: $LLM_BUNDLE_CACHE/models/<preset name>")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: $LLM_BUNDLE_CACHE/models/<preset name>-gguf")
    ap.add_argument("--sdist", type=Path, default=None, help="llama-cpp-python sdist tarball")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    hf_preset = PRESETS[args.preset]
    hf_dir = (args.hf_dir or CACHE / "models" / hf_preset.name).absolute()
    out_dir = (args.out_dir or CACHE / "models" / f"{hf_preset.name}-gguf").absolute()
    gguf_name = GGUF_PRESETS[args.preset][1]

    if not is_complete(hf_dir, hf_preset.recipe):
        print(f"{hf_dir} is not a complete {args.preset} HF model: run make_tiny_model.py"
              f"{'' if args.preset == 'tiny' else ' --preset ' + args.preset} first", file=sys.stderr)
        return 2
    if not args.force and gguf_is_current(out_dir, hf_dir, args.preset):
        print(f"{args.preset} GGUF: skipped (cached) {out_dir / gguf_name}")
        return 0
    build(hf_dir, out_dir, args.sdist, args.preset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
