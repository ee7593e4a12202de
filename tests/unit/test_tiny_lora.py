"""Checks of the generated tiny LoRA adapter (tests/assets/make_tiny_lora.py, built by tests/assets/build.sh).

Standard library only: the safetensors header is JSON behind an 8-byte length. Skipped with a reason when the
assets are not built.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("LLM_BUNDLE_CACHE") or "/var/cache/llm-bundle")
BASE = CACHE / "models" / "tiny-qwen2.5-instruct"
PEFT = CACHE / "models" / "tiny-qwen2.5-instruct-lora"
GGUF = CACHE / "models" / "tiny-qwen2.5-instruct-lora-gguf" / "tiny-qwen2.5-instruct-lora-f16.gguf"

pytestmark = pytest.mark.skipif(not (PEFT / ".complete").is_file() or not GGUF.is_file(),
                                reason=f"tiny LoRA not built ({PEFT}): run bash tests/assets/build.sh")


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(size))


def _sums_verify(folder: Path) -> None:
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_peft_config_is_rank_8_alpha_16_on_the_attention_projections():
    cfg = json.loads((PEFT / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"]) == ("LORA", 8, 16)
    assert cfg["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg["base_model_name_or_path"] == "tiny-qwen2.5-instruct"
    assert not cfg["use_dora"] and not cfg["use_rslora"] and cfg["bias"] == "none"


def test_tensor_shapes_fit_the_base_model():
    base = json.loads((BASE / "config.json").read_text())
    hidden, layers = base["hidden_size"], base["num_hidden_layers"]
    kv = base["num_key_value_heads"] * hidden // base["num_attention_heads"]
    out = {"q_proj": hidden, "k_proj": kv, "v_proj": kv, "o_proj": hidden}
    header = {k: v for k, v in _header(PEFT / "adapter_model.safetensors").items() if k != "__metadata__"}
    assert len(header) == layers * 4 * 2
    for layer in range(layers):
        for proj, rows in out.items():
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            assert header[f"{key}.lora_A.weight"]["shape"] == [8, hidden]
            assert header[f"{key}.lora_B.weight"]["shape"] == [rows, 8]
    assert {t["dtype"] for t in header.values()} == {"F16"}


def test_outputs_verify_and_the_gguf_was_made_from_this_peft_folder():
    _sums_verify(PEFT)
    _sums_verify(GGUF.parent)
    assert GGUF.read_bytes()[:4] == b"GGUF"
    marker = json.loads((GGUF.parent / ".complete").read_text())
    assert marker["source_sha256sums"] == hashlib.sha256((PEFT / "SHA256SUMS").read_bytes()).hexdigest()
    assert (PEFT / "LICENSE").read_text() == (GGUF.parent / "LICENSE").read_text()
