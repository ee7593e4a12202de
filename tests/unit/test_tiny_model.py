"""Checks of the generated tiny test model (tests/assets/build.sh).

Skipped with a reason when the assets are not built. Needs only the standard library;
the tokenizer round trip uses `tokenizers` from this interpreter or, failing that, the
assets venv ($LLM_BUNDLE_CACHE/venvs/assets).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("LLM_BUNDLE_CACHE") or "/var/cache/llm-bundle")
HF_DIR = CACHE / "models" / "tiny-qwen2.5-instruct"
GGUF = CACHE / "models" / "tiny-qwen2.5-instruct-gguf" / "tiny-qwen2.5-instruct-q4_k_m.gguf"
ASSETS_PY = CACHE / "venvs" / "assets" / "bin" / "python"

needs_hf = pytest.mark.skipif(not (HF_DIR / ".complete").is_file(),
                              reason=f"tiny HF model not built ({HF_DIR}): run bash tests/assets/build.sh")
needs_gguf = pytest.mark.skipif(not GGUF.is_file(),
                                reason=f"tiny GGUF not built ({GGUF}): run bash tests/assets/build.sh")

ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


# --- helpers ---------------------------------------------------------------------------------
def safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
              10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 20: "IQ4_NL",
              30: "BF16"}


def read_gguf(path: Path) -> tuple[dict, dict]:
    """Minimal GGUF (v2/v3) reader: metadata dict and {tensor name: ggml type name}."""
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def rstr():
            return f.read(rd("<Q")).decode("utf-8", "replace")

        def rval(t):
            if t in scalar:
                return rd(scalar[t])
            if t == 8:
                return rstr()
            if t == 9:
                et, n = rd("<I"), rd("<Q")
                return [rval(et) for _ in range(n)]
            raise ValueError(f"unknown GGUF value type {t}")

        assert f.read(4) == b"GGUF", "not a GGUF file"
        version = rd("<I")
        assert version in (2, 3), version
        n_tensors, n_kv = rd("<Q"), rd("<Q")
        meta = {}
        for _ in range(n_kv):
            key = rstr()
            meta[key] = rval(rd("<I"))
        tensors = {}
        for _ in range(n_tensors):
            name = rstr()
            n_dims = rd("<I")
            for _ in range(n_dims):
                rd("<Q")
            tensors[name] = GGML_TYPES.get(rd("<I"), "?")
            rd("<Q")
    return meta, tensors


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- HF folder -------------------------------------------------------------------------------
@needs_hf
def test_config_numbers():
    cfg = json.loads((HF_DIR / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    assert cfg["model_type"] == "qwen2"
    expect = {"vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32768,
              "rope_theta": 1e6, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    assert {k: cfg[k] for k in expect} == expect
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    assert head_dim >= 32  # vLLM CPU backend
    assert cfg["intermediate_size"] % 256 == 0  # real Q4_K blocks
    assert cfg["eos_token_id"] == 1004


@needs_hf
def test_manifest_verifies():
    lines = (HF_DIR / "SHA256SUMS").read_text().splitlines()
    names = {line.split("  ", 1)[1] for line in lines}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "LICENSE", "README.md"} <= names
    for line in lines:
        digest, name = line.split("  ", 1)
        assert sha256(HF_DIR / name) == digest, name
    marker = json.loads((HF_DIR / ".complete").read_text())
    assert marker["sha256sums"] == sha256(HF_DIR / "SHA256SUMS")


@needs_hf
def test_safetensors_bf16_shapes():
    hdr = safetensors_header(HF_DIR / "model.safetensors")
    hdr.pop("__metadata__", None)
    assert {t["dtype"] for t in hdr.values()} == {"BF16"}
    assert hdr["model.embed_tokens.weight"]["shape"] == [1024, 128]
    assert hdr["lm_head.weight"]["shape"] == [1024, 128]
    assert hdr["model.layers.1.self_attn.k_proj.weight"]["shape"] == [64, 128]
    assert hdr["model.layers.0.mlp.down_proj.weight"]["shape"] == [128, 256]
    assert "model.layers.0.self_attn.q_proj.bias" in hdr


@needs_hf
def test_tokenizer_config_chatml():
    tc = json.loads((HF_DIR / "tokenizer_config.json").read_text())
    assert tc["eos_token"] == "<|im_end|>"
    assert tc["pad_token"] == "<|endoftext|>"
    tpl = tc["chat_template"]
    assert "<|im_start|>" in tpl and "<|im_end|>" in tpl
    assert "<tool_call>" in tpl and "<tool_response>" in tpl and "tools" in tpl
    dec = tc["added_tokens_decoder"]
    assert dec["1003"]["content"] == "<|im_start|>" and dec["1003"]["special"] is True
    assert dec["1016"]["content"] == "<tool_call>"


_ROUNDTRIP = r"""
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
text = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello, world! 你好<|im_end|>\n<|im_start|>assistant\n"
enc = tok.encode(text)
print(json.dumps({"ids": enc.ids, "decoded": tok.decode(enc.ids, skip_special_tokens=False),
                  "special": {t: tok.token_to_id(t) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]},
                  "size": tok.get_vocab_size(True)}))
"""


@needs_hf
def test_tokenizer_roundtrip_chatml():
    try:
        import sys

        import tokenizers  # noqa: F401
        py = sys.executable
    except ImportError:
        if not ASSETS_PY.is_file():
            pytest.skip("no `tokenizers` here and no assets venv")
        py = str(ASSETS_PY)
    out = subprocess.run([py, "-c", _ROUNDTRIP, str(HF_DIR / "tokenizer.json")],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    assert r["size"] == 1024
    assert r["special"] == {"<|endoftext|>": 1002, "<|im_start|>": 1003, "<|im_end|>": 1004,
                            "<tool_call>": 1016, "</tool_call>": 1017}
    assert r["ids"].count(1003) == 3 and r["ids"].count(1004) == 2  # each special is ONE token
    assert r["decoded"].startswith("<|im_start|>system\nYou are helpful.<|im_end|>")
    assert "Hello, world! 你好" in r["decoded"]


# --- GGUF ------------------------------------------------------------------------------------
@needs_gguf
def test_gguf_is_q4_k_m_qwen2():
    meta, tensors = read_gguf(GGUF)
    assert meta["general.architecture"] == "qwen2"
    assert meta["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert meta["tokenizer.ggml.pre"] == "qwen2"
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert len(meta["tokenizer.ggml.tokens"]) == 1024
    assert meta["tokenizer.ggml.eos_token_id"] == 1004
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    assert meta["qwen2.block_count"] == 2 and meta["qwen2.embedding_length"] == 128
    q4k = sorted(n for n, t in tensors.items() if t == "Q4_K")
    assert q4k, tensors
    assert "blk.0.ffn_down.weight" in q4k
    assert tensors["blk.0.attn_norm.weight"] == "F32"
    assert not any(t in ("BF16", "F16") for t in tensors.values()), tensors


@needs_gguf
def test_gguf_manifest():
    folder = GGUF.parent
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert sha256(folder / name) == digest, name
    assert (folder / "LICENSE").is_file()
