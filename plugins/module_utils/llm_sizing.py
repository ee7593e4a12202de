# -*- coding: utf-8 -*-
"""Model catalog and GPU memory model for Qwen2.5-7B-Instruct.

Pure Python (no Ansible imports) so it is unit-tested directly and shipped to
hosts as module_utils.

Sources (see /work/shared/FACTS.md at the time of writing):
- config.json of Qwen/Qwen2.5-7B-Instruct (architecture numbers below).
- Measured on a real H200 (torch 2.11, bf16, random init of this exact config):
  allocated after load 15,276,322,816 bytes; KV 57,344 bytes/token; activation
  peak of a bare forward 333,479,936 bytes at 2048 tokens and 1,171,898,368 bytes
  at 8192 tokens (PEAK_EXTRA - KV_BYTES in tests/unit/fixtures/nvidia-smi/h200/gpu_mem.txt).

Memory model (vLLM):
    budget       = total_bytes x gpu_memory_utilization
    kv_available = budget - weights - activation(max_num_batched_tokens) - RUNTIME_OVERHEAD
    kv_tokens    = kv_available // kv_bytes_per_token
vLLM refuses to start when max_model_len > kv_tokens, so the planner only
accepts a context length that satisfies kv_tokens >= max_model_len.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

GIB = 1024 ** 3
MIB = 1024 ** 2


@dataclass(frozen=True)
class ModelArch:
    """The numbers of config.json that the memory model needs."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def linear_params_per_layer(self) -> int:
        """Weights of the 7 linear layers of one decoder block (q,k,v,o,gate,up,down)."""
        h, i = self.hidden_size, self.intermediate_size
        kv = self.num_kv_heads * self.head_dim
        q_o = 2 * h * (self.num_attention_heads * self.head_dim)
        k_v = 2 * h * kv
        mlp = 3 * h * i
        return q_o + k_v + mlp

    @property
    def linear_params(self) -> int:
        return self.num_layers * self.linear_params_per_layer

    @property
    def norm_params(self) -> int:
        # input_layernorm + post_attention_layernorm per layer, plus the final norm
        return self.num_layers * 2 * self.hidden_size + self.hidden_size

    @property
    def bias_params(self) -> int:
        # Qwen2 has biases on q, k and v only
        return self.num_layers * (self.num_attention_heads * self.head_dim
                                  + 2 * self.num_kv_heads * self.head_dim)

    @property
    def total_params(self) -> int:
        return (self.linear_params + self.embedding_params + self.lm_head_params
                + self.norm_params + self.bias_params)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """2 (K and V) x layers x kv_heads x head_dim x bytes per element."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes


QWEN25_7B = ModelArch(
    name="Qwen2.5-7B-Instruct",
    hidden_size=3584,
    intermediate_size=18944,
    num_layers=28,
    num_attention_heads=28,
    num_kv_heads=4,
    head_dim=128,
    vocab_size=152064,
    max_position_embeddings=32768,
    tie_word_embeddings=False,
)

#: Parameter count from model.safetensors.index.json; pinned by a unit test
#: against QWEN25_7B.total_params.
QWEN25_7B_PARAMS = 7_615_616_512

#: AWQ (Qwen/Qwen2.5-7B-Instruct-AWQ): 4-bit weights, group size 128, GEMM packing.
AWQ_BITS = 4
AWQ_GROUP_SIZE = 128

#: llama-bench reports 4.36 GiB for the official Q4_K_M GGUF (two shards, ~4.7 GB on
#: disk). We take the upper edge of that rounded figure (4.365 GiB) so the sizing never
#: undercounts: ceil(4.365 x 2**30) bytes.
GGUF_Q4_K_M_BYTES = math.ceil(4.365 * GIB)  # 4,686,883,062

#: Activation peak measured on an H200 (bare forward, bf16), bytes at N batched tokens.
ACTIVATION_MEASURED: Dict[int, int] = {2048: 333_479_936, 8192: 1_171_898_368}

#: Runtime overhead that vLLM's budget also has to hold besides weights, activations
#: and KV: CUDA context and non-torch allocations (cuBLAS/NCCL workspaces, ~0.5 GiB),
#: CUDA graphs (~0.5 GiB at the default capture sizes) and the share of
#: nvidia-smi's memory.total that CUDA never hands out (H200: 143,771 MiB reported,
#: 143,156 MiB visible to CUDA). A conservative constant: 1.5 GiB.
RUNTIME_OVERHEAD_BYTES = int(1.5 * GIB)

#: llama.cpp compute buffer: one micro-batch (n_ubatch 512) of f32 logits plus the f32
#: attention-score matrix n_ubatch x n_ctx x n_heads (the worst case, without flash
#: attention).
LLAMACPP_UBATCH = 512


@dataclass(frozen=True)
class Variant:
    """One deployable form of the model."""

    key: str
    description: str
    weights_bytes: int
    engine: str  # the engine that serves it by default
    dtype: str  # what the engine is told (--dtype), "auto" where it does not apply
    hf_repo: str


def dense_weights_bytes(arch: ModelArch = QWEN25_7B, dtype_bytes: int = 2) -> int:
    return arch.total_params * dtype_bytes


def awq_weights_bytes(arch: ModelArch = QWEN25_7B, bits: int = AWQ_BITS,
                      group_size: int = AWQ_GROUP_SIZE) -> int:
    """AWQ GEMM checkpoint size.

    Per quantized linear layer of shape (in, out):
        qweight int32 [in, out/8]          -> in*out*bits/8 bytes
        qzeros  int32 [in/group, out/8]    -> (in/group)*out*bits/8 bytes
        scales  fp16  [in/group, out]      -> (in/group)*out*2 bytes
    Embeddings, lm_head, norms and q/k/v biases stay fp16 (2 bytes each).
    """
    h, i = arch.hidden_size, arch.intermediate_size
    q_out = arch.num_attention_heads * arch.head_dim
    kv_out = arch.num_kv_heads * arch.head_dim
    shapes = [(h, q_out), (h, kv_out), (h, kv_out), (q_out, h), (h, i), (h, i), (i, h)]
    per_layer = 0
    for fan_in, fan_out in shapes:
        groups = fan_in // group_size
        per_layer += fan_in * fan_out * bits // 8  # qweight
        per_layer += groups * fan_out * bits // 8  # qzeros
        per_layer += groups * fan_out * 2  # scales
    fp16_params = (arch.embedding_params + arch.lm_head_params + arch.norm_params
                   + arch.bias_params)
    return arch.num_layers * per_layer + fp16_params * 2


CATALOG: Dict[str, Variant] = {
    "bf16": Variant("bf16", "bfloat16 safetensors (the published checkpoint)",
                    dense_weights_bytes(), "vllm", "bfloat16", "Qwen/Qwen2.5-7B-Instruct"),
    "fp16": Variant("fp16", "the bf16 checkpoint run as float16 (GPUs without bf16)",
                    dense_weights_bytes(), "vllm", "float16", "Qwen/Qwen2.5-7B-Instruct"),
    "awq": Variant("awq", "AWQ 4-bit, group 128 (fp16 activations)",
                   awq_weights_bytes(), "vllm", "float16", "Qwen/Qwen2.5-7B-Instruct-AWQ"),
    "gguf_q4_k_m": Variant("gguf_q4_k_m", "GGUF Q4_K_M (llama.cpp)",
                           GGUF_Q4_K_M_BYTES, "llamacpp", "auto",
                           "Qwen/Qwen2.5-7B-Instruct-GGUF"),
}

KV_DTYPE_BYTES = {"auto": 2, "fp8": 1}


def kv_bytes_per_token(kv_cache_dtype: str = "auto", arch: ModelArch = QWEN25_7B) -> int:
    """57,344 bytes at bf16/fp16, 28,672 with fp8 KV."""
    return arch.kv_bytes_per_token(KV_DTYPE_BYTES[kv_cache_dtype])


def activation_bytes(max_num_batched_tokens: int) -> int:
    """Activation peak, linear through the two H200 measurements (rounded up)."""
    (n1, b1), (n2, b2) = sorted(ACTIVATION_MEASURED.items())
    slope = (b2 - b1) / (n2 - n1)
    return max(0, math.ceil(b1 + slope * (max_num_batched_tokens - n1)))


def llamacpp_compute_bytes(n_ctx: int, arch: ModelArch = QWEN25_7B) -> int:
    logits = LLAMACPP_UBATCH * arch.vocab_size * 4
    scores = LLAMACPP_UBATCH * n_ctx * arch.num_attention_heads * 4
    return logits + scores


@dataclass(frozen=True)
class VllmFit:
    """Result of sizing one vLLM configuration on one GPU (per GPU under TP)."""

    total_bytes: int
    utilization: float
    budget_bytes: int
    weights_bytes: int  # per GPU
    activation_bytes: int
    overhead_bytes: int
    kv_available_bytes: int  # may be negative
    kv_bytes_per_token: int  # per GPU
    kv_tokens: int  # 0 when nothing is left

    @property
    def fixed_bytes(self) -> int:
        return self.weights_bytes + self.activation_bytes + self.overhead_bytes


def vllm_fit(total_mib: int, utilization: float, weights_bytes: int,
             max_num_batched_tokens: int, kv_cache_dtype: str = "auto",
             tensor_parallel_size: int = 1) -> VllmFit:
    total = int(total_mib) * MIB
    budget = int(total * utilization)
    weights = math.ceil(weights_bytes / tensor_parallel_size)
    act = activation_bytes(max_num_batched_tokens)
    per_token = kv_bytes_per_token(kv_cache_dtype) // tensor_parallel_size
    available = budget - weights - act - RUNTIME_OVERHEAD_BYTES
    tokens = available // per_token if available > 0 else 0
    return VllmFit(total, utilization, budget, weights, act, RUNTIME_OVERHEAD_BYTES,
                   available, per_token, int(tokens))


@dataclass(frozen=True)
class LlamacppFit:
    total_bytes: int
    utilization: float
    budget_bytes: int
    weights_bytes: int
    overhead_bytes: int
    n_ctx: int
    kv_bytes: int
    compute_bytes: int

    @property
    def needed_bytes(self) -> int:
        return self.weights_bytes + self.overhead_bytes + self.kv_bytes + self.compute_bytes

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.budget_bytes


def llamacpp_fit(total_mib: int, utilization: float, n_ctx: int,
                 weights_bytes: int = GGUF_Q4_K_M_BYTES) -> LlamacppFit:
    """llama.cpp allocates n_ctx tokens of f16 KV up front, plus its compute buffer."""
    total = int(total_mib) * MIB
    budget = int(total * utilization)
    return LlamacppFit(total, utilization, budget, weights_bytes, RUNTIME_OVERHEAD_BYTES,
                       n_ctx, n_ctx * kv_bytes_per_token("auto"), llamacpp_compute_bytes(n_ctx))


def gib(n_bytes: Optional[float]) -> str:
    """Format bytes as GiB with two decimals (14.19)."""
    return "%.2f" % (float(n_bytes or 0) / GIB)
