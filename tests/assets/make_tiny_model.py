#!/usr/bin/env python3
"""Generate a TINY random Qwen2.5-Instruct-shaped model as a Hugging Face folder.

No torch, no model hub: numpy + safetensors + tokenizers only. Deterministic (fixed seed):
two runs give byte-identical files. ~1 MB, a few seconds.

    python make_tiny_model.py [OUT_DIR] [--force] [--preset tiny|bench]

OUT_DIR defaults to ${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}/models/tiny-qwen2.5-instruct
(preset "bench": .../models/bench-qwen2).

Presets (same tokenizer, chat template and code path; only the shapes, the seed and the name
differ):
  tiny   the default: 558,208 parameters, 1.2 MB. Tests and CI.
  bench  a random model big enough that the engine, not Python/HTTP overhead, dominates a CPU
         benchmark (tests/bench/llamacpp-servers.py): hidden 1024, intermediate 2816, 20 layers,
         8 heads / 2 KV heads (head_dim 128, like Qwen2.5-7B), ~228 M parameters, ~455 MB BF16
         (~137 MB as GGUF Q4_K_M). Built on demand, never by build.sh.
Skipped when OUT_DIR/.complete exists, names this RECIPE_VERSION and SHA256SUMS verifies.
The folder is built next to OUT_DIR and renamed into place, so a crash never leaves a
half-written model that looks complete.

The weights are random: the text it produces is gibberish. What is real is the pipeline:
config (Qwen2ForCausalLM), byte-level BPE tokenizer with Qwen2's pre-tokenizer regex and
Qwen2.5's 22 added tokens (<|endoftext|>, <|im_start|>, <|im_end|>, ..., <tool_call>,
</tool_call>, ...), Qwen2.5's real ChatML chat template (with tool calling), bf16 safetensors.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RECIPE_VERSION = "tiny-qwen2.5-instruct/2"
SEED = 20261129

# --- architecture (see tests/unit/test_tiny_model.py) -------------------------------------
HIDDEN = 128
INTERMEDIATE = 256          # multiple of 256: ffn_down rows are real Q4_K blocks
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS  # 32: vLLM's CPU backend needs head_dim >= 32
MAX_POS = 32768  # Qwen2.5-7B's: llama-server caps each slot at the training context
ROPE_THETA = 1000000.0
RMS_EPS = 1e-6
VOCAB = 1024                # == len(tokenizer): 1002 BPE tokens + 22 added tokens


@dataclass(frozen=True)
class Preset:
    name: str           # folder name under $LLM_BUNDLE_CACHE/models
    recipe: str         # recorded in .complete; bump when the output changes
    seed: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    max_pos: int = MAX_POS
    vocab: int = VOCAB

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


PRESETS = {
    # The module constants above ARE the tiny preset (its files must stay byte-identical).
    "tiny": Preset("tiny-qwen2.5-instruct", RECIPE_VERSION, SEED, HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS),
    # Benchmark model: every matrix row a multiple of 256 (real Q4_K/Q6_K blocks everywhere),
    # head_dim 128 and GQA like Qwen2.5-7B, ~228 M parameters (~455 MB BF16, ~137 MB Q4_K_M).
    "bench": Preset("bench-qwen2", "bench-qwen2/1", 20261201, hidden=1024, intermediate=2816, layers=20,
                    heads=8, kv_heads=2),
    # Embedding model for the RAG tests (llama-server --embeddings, mean pooling): the tiny shape with weights of
    # its own (another seed), so its vectors are random but fixed. Not a trained embedder: retrieval order is
    # arbitrary, which the tests allow for (one short document, every chunk retrieved).
    "embed": Preset("tiny-embed", "tiny-embed/1", 20261203, HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS),
}
TINY = PRESETS["tiny"]

# Qwen2's pre-tokenizer split regex (tokenizer.json of Qwen/Qwen2.5-7B-Instruct)
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5's added tokens, in id order: (content, special)
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
BPE_SIZE = VOCAB - len(ADDED_TOKENS)  # 1002
ENDOFTEXT_ID = BPE_SIZE               # 1002
IM_START_ID = BPE_SIZE + 1            # 1003
IM_END_ID = BPE_SIZE + 2              # 1004

# Qwen2.5-7B-Instruct's chat template, verbatim (tokenizer_config.json "chat_template").
CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LICENSE_TEXT = """\
SPDX-License-Identifier: Apache-2.0

{name} -- GENERATED TEST MODEL

This folder was generated by tests/assets/make_tiny_model.py of the llm-bundle project.
Its weights are random numbers (numpy, fixed seed); its tokenizer was trained on generated
text. It contains no weights or vocabulary of any real model.

The model architecture description (config.json fields) and the chat template follow
Qwen2.5-7B-Instruct by the Qwen team, Alibaba Cloud, which is licensed under the
Apache License, Version 2.0.

Licensed under the Apache License, Version 2.0 (the "License"); you may not use these
files except in compliance with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under
the License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
KIND, either express or implied. See the License for the specific language governing
permissions and limitations under the License.
"""

_README_INTRO = {
    "tiny": """\
# tiny-qwen2.5-instruct (generated test model)

A tiny random model with the *shape* of Qwen2.5-7B-Instruct, for tests and demos on CPU
(vLLM CPU, transformers, llama.cpp after GGUF conversion). Output text is gibberish; the
pipeline (tokenizer, ChatML template, tool-call tokens, engine, API) is real.
""",
    "bench": """\
# bench-qwen2 (generated benchmark model)

A random Qwen2-architecture model of a few hundred MB, for CPU serving benchmarks
(tests/bench/llamacpp-servers.py): large enough that the engine's matrix work, not Python or
HTTP overhead, dominates. Output text is gibberish. Same tokenizer and chat template as the
tiny test model (`--preset tiny`); built with `make_tiny_model.py --preset bench`.
""",
    "embed": """\
# tiny-embed (generated embedding test model)

A tiny random Qwen2-architecture model served by llama-server with `--embeddings --pooling mean` as the
test hosts' embedding model (Open WebUI's knowledge bases). Its vectors are random but fixed: the pipeline
(chunking, embedding requests, vector store, retrieval into the prompt) is real, the ranking is not. Same
shape, tokenizer and chat template as the tiny test model, other weights; built with
`make_tiny_model.py --preset embed`.
""",
}


def readme_text(p: Preset) -> str:
    key = next(k for k, v in PRESETS.items() if v == p)
    intro = _README_INTRO[key]
    regen = "" if p == TINY else f" --preset {key}"
    return f"""\
{intro}
| field | value | Qwen2.5-7B-Instruct |
| --- | --- | --- |
| architectures | Qwen2ForCausalLM | same |
| hidden_size | {p.hidden} | 3584 |
| intermediate_size | {p.intermediate} | 18944 |
| num_hidden_layers | {p.layers} | 28 |
| num_attention_heads | {p.heads} (head_dim {p.head_dim}) | 28 (128) |
| num_key_value_heads | {p.kv_heads} | 4 |
| vocab_size | {p.vocab} (= tokenizer size) | 152064 |
| max_position_embeddings | {p.max_pos} | 32768 |
| rope_theta | {ROPE_THETA:g} | 1e6 |
| tie_word_embeddings | false | false |
| torch_dtype | bfloat16 (weights stored as BF16) | bfloat16 |

Tokenizer: byte-level BPE trained locally with `tokenizers` (Qwen2 pre-tokenizer regex,
NFC), {BPE_SIZE} BPE tokens + Qwen2.5's 22 added tokens
(`<|endoftext|>`={ENDOFTEXT_ID}, `<|im_start|>`={IM_START_ID}, `<|im_end|>`={IM_END_ID}, ...,
`<tool_call>`, `</tool_call>`). eos_token `<|im_end|>`, pad_token `<|endoftext|>`.
Chat template: Qwen2.5's ChatML template, verbatim (tools supported).

Recipe: `{p.recipe}`, seed {p.seed}. Regenerate with
`python tests/assets/make_tiny_model.py OUT_DIR --force{regen}`. Files are listed in SHA256SUMS.
"""


# ------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path, recipe: str, extra: dict | None = None) -> None:
    """SHA256SUMS (sha256sum -c format) over every file, then the .complete marker."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in ("SHA256SUMS", ".complete"))
    lines = [f"{sha256_file(p)}  {p.name}\n" for p in files]
    (folder / "SHA256SUMS").write_text("".join(lines))
    marker = {"recipe": recipe, "sha256sums": sha256_file(folder / "SHA256SUMS")}
    marker.update(extra or {})
    (folder / ".complete").write_text(json.dumps(marker, sort_keys=True) + "\n")
    for p in (folder / "SHA256SUMS", folder / ".complete"):
        p.chmod(0o644)


def is_complete(folder: Path, recipe: str) -> bool:
    marker = folder / ".complete"
    sums = folder / "SHA256SUMS"
    if not (marker.is_file() and sums.is_file()):
        return False
    try:
        data = json.loads(marker.read_text())
    except ValueError:
        return False
    if data.get("recipe") != recipe or data.get("sha256sums") != sha256_file(sums):
        return False
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        p = folder / name
        if not p.is_file() or sha256_file(p) != digest:
            return False
    return True


def place(tmp: Path, out: Path) -> None:
    """Move a finished folder into place (replacing an incomplete one)."""
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


# --- tokenizer -----------------------------------------------------------------------------
_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part "
    "hello world model server token chat user assistant system tool function call answer "
    "question please thanks health metrics latency request response stream json content role "
    "message weather city temperature error status deploy ansible nginx vllm llama qwen gpu "
    "cpu memory cache prompt completion python bash yes okay sure sorry help explain"
).split()
_SYLLABLES = "ka lo mi ne ru ta vo zi pe sha qu ex in ar on el um ol is at re de co pro ing tion ly er".split()


def training_corpus(rng: random.Random) -> list[str]:
    """Deterministic synthetic text: words, numbers, punctuation, code/JSON, some non-ASCII."""
    vocab = list(_WORDS)
    for _ in range(600):
        vocab.append("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    punct = [".", ",", "!", "?", ":", ";", " -", " (", ")", "\"", "'s", "'re", "'ll", "..."]
    extras = ["über", "café", "naïve", "Привет", "мир", "你好", "世界", "こんにちは", "🙂", "🚀", "→", "€"]
    lines: list[str] = []
    for i in range(6000):
        kind = i % 10
        if kind < 6:
            n = rng.randint(4, 18)
            words = [rng.choice(vocab) for _ in range(n)]
            if rng.random() < 0.5:
                words[0] = words[0].capitalize()
            s = " ".join(words)
            if rng.random() < 0.5:
                s += rng.choice(punct)
            if rng.random() < 0.3:
                s += " " + rng.choice(extras)
            lines.append(s)
        elif kind == 6:
            lines.append(f"{rng.choice(vocab)} = {rng.randint(0, 99999)} + {rng.random():.4f}")
        elif kind == 7:
            obj = {rng.choice(vocab): rng.choice(vocab), "n": rng.randint(0, 999), "ok": rng.random() < 0.5}
            lines.append(json.dumps({"name": rng.choice(vocab), "arguments": obj}))
        elif kind == 8:
            lines.append(f"def {rng.choice(vocab)}_{rng.choice(vocab)}(x, y):\n    return x * {rng.randint(1, 9)} + y\n")
        else:
            role = rng.choice(["system", "user", "assistant"])
            lines.append(f"{role}\n{' '.join(rng.choice(vocab) for _ in range(rng.randint(3, 12)))}\n\n")
    return lines


def build_tokenizer(out: Path) -> "object":
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)

    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_corpus(random.Random(SEED)), trainer=trainer)
    got = tok.get_vocab_size(with_added_tokens=False)
    if got != BPE_SIZE:
        raise SystemExit(f"BPE training produced {got} tokens, expected {BPE_SIZE}: enlarge the corpus")

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
                            for t, special in ADDED_TOKENS if special])
    tok.add_tokens([AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False, single_word=False)
                    for t, special in ADDED_TOKENS if not special])
    for i, (t, _) in enumerate(ADDED_TOKENS):
        if tok.token_to_id(t) != BPE_SIZE + i:
            raise SystemExit(f"added token {t} got id {tok.token_to_id(t)}, expected {BPE_SIZE + i}")
    if tok.get_vocab_size(with_added_tokens=True) != VOCAB:
        raise SystemExit("tokenizer size != VOCAB")

    tok.save(str(out / "tokenizer.json"))
    # vocab.json + merges.txt too (slow Qwen2Tokenizer, other tools)
    tok.model.save(str(out))

    added_decoder = {
        str(BPE_SIZE + i): {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
        for i, (t, special) in enumerate(ADDED_TOKENS)
    }
    tokenizer_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_decoder,
        "additional_special_tokens": [t for t, special in ADDED_TOKENS if special and t != "<|endoftext|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MAX_POS,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    dump_json(out / "tokenizer_config.json", tokenizer_config)
    return tok


# --- weights -------------------------------------------------------------------------------
def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def make_weights(p: Preset = TINY) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(p.seed)
    std = 0.02
    HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB = (  # noqa: N806
        p.hidden, p.intermediate, p.layers, p.heads, p.kv_heads, p.head_dim, p.vocab)

    def normal(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    w: dict[str, np.ndarray] = {"model.embed_tokens.weight": normal(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        w[p + "self_attn.q_proj.weight"] = normal(HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.q_proj.bias"] = normal(HEADS * HEAD_DIM)
        w[p + "self_attn.k_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.k_proj.bias"] = normal(KV_HEADS * HEAD_DIM)
        w[p + "self_attn.v_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.v_proj.bias"] = normal(KV_HEADS * HEAD_DIM)
        w[p + "self_attn.o_proj.weight"] = normal(HIDDEN, HEADS * HEAD_DIM)
        w[p + "post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        w[p + "mlp.gate_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        w[p + "mlp.up_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        w[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTERMEDIATE)
    w["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    w["lm_head.weight"] = normal(VOCAB, HIDDEN)
    return w


def save_bf16_safetensors(weights: dict[str, np.ndarray], path: Path) -> int:
    """Write BF16 tensors with safetensors' raw-buffer API (numpy has no bfloat16)."""
    import safetensors

    bits = {name: to_bf16_bits(arr) for name, arr in sorted(weights.items())}  # keep alive
    metadata = {"format": "pt"}
    if hasattr(safetensors, "TensorSpec"):  # safetensors >= 0.7
        specs = {
            name: safetensors.TensorSpec(dtype="bfloat16", shape=list(b.shape),
                                         data_ptr=b.ctypes.data, data_len=b.nbytes)
            for name, b in bits.items()
        }
    else:  # older: dict with raw bytes
        specs = {name: {"dtype": "bfloat16", "shape": list(b.shape), "data": b.tobytes()}
                 for name, b in bits.items()}
    safetensors.serialize_file(specs, str(path), metadata=metadata)
    return sum(int(b.size) for b in bits.values())


# --- json files ----------------------------------------------------------------------------
def dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def config_json(p: Preset = TINY) -> dict:
    HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, MAX_POS, VOCAB = (  # noqa: N806
        p.hidden, p.intermediate, p.layers, p.heads, p.kv_heads, p.max_pos, p.vocab)
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": ENDOFTEXT_ID,
        "eos_token_id": IM_END_ID,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POS,
        "max_window_layers": LAYERS,
        "model_type": "qwen2",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": RMS_EPS,
        "rope_theta": ROPE_THETA,
        "sliding_window": MAX_POS,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB,
    }


def generation_config_json() -> dict:
    # Qwen2.5-7B-Instruct's generation_config.json, ids mapped to this tokenizer
    return {
        "bos_token_id": ENDOFTEXT_ID,
        "pad_token_id": ENDOFTEXT_ID,
        "do_sample": True,
        "eos_token_id": [IM_END_ID, ENDOFTEXT_ID],
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "transformers_version": "4.37.0",
    }


def self_check(tok, out: Path) -> None:
    text = "<|im_start|>user\nHello world, 你好 🚀<|im_end|>\n<tool_call>\n{}\n</tool_call>"
    ids = tok.encode(text).ids
    assert IM_START_ID in ids and IM_END_ID in ids, ids
    assert tok.token_to_id("<tool_call>") in ids
    assert tok.decode(ids, skip_special_tokens=False) == text, tok.decode(ids, skip_special_tokens=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == tok.get_vocab_size(True)


def generate(out: Path, preset: Preset = TINY) -> None:
    out.mkdir(parents=True)
    dump_json(out / "config.json", config_json(preset))
    dump_json(out / "generation_config.json", generation_config_json())
    tok = build_tokenizer(out)
    n_params = save_bf16_safetensors(make_weights(preset), out / "model.safetensors")
    (out / "LICENSE").write_text(LICENSE_TEXT.format(name=preset.name))
    (out / "README.md").write_text(readme_text(preset) + f"\nParameters: {n_params:,}.\n")
    self_check(tok, out)
    for p in out.iterdir():
        p.chmod(0o644)  # safetensors writes 0600; services on test hosts read these as non-root
    write_manifest(out, preset.recipe, {"parameters": n_params})


def default_out(preset: Preset = TINY) -> Path:
    cache = os.environ.get("LLM_BUNDLE_CACHE") or "/var/cache/llm-bundle"
    return Path(cache) / "models" / preset.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=None, help="output folder")
    ap.add_argument("--force", action="store_true", help="regenerate even when complete")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                    help="tiny (default; tests), embed (the tests' embedding model) or bench (a few hundred MB, for CPU serving benchmarks)")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    label = f"{args.preset} HF model"
    out: Path = (args.out or default_out(preset)).absolute()

    if not args.force and is_complete(out, preset.recipe):
        print(f"{label}: skipped (cached) {out}")
        return 0
    if out.exists() and any(out.iterdir()) and not (out / "config.json").exists() \
            and not (out / ".complete").exists():
        print(f"refusing to replace {out}: it exists and does not look like a generated model folder", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp = tmp_parent / out.name
        generate(tmp, preset)
        place(tmp, out)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"{label}: built {out} ({size / 1e6:.2f} MB) in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
