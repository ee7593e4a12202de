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

Memory model (vLLM), per GPU:
    cuda_total   = nvidia-smi memory.total - CUDA_RESERVED_MIB
    utilization  = (cuda_total - used by other processes - HEADROOM_BYTES) / cuda_total
    budget       = cuda_total x utilization
    kv_available = budget - weights - activation(max_num_batched_tokens) - sampler(max_num_seqs)
                   - NON_TORCH_BYTES
    kv_tokens    = kv_available // kv_bytes_per_token
vLLM refuses to start when max_model_len > kv_tokens, so the planner only
accepts a context length that satisfies kv_tokens >= max_model_len. llama.cpp uses the same
budget: weights + n_ctx x KV/token + compute buffer + NON_TORCH_BYTES must fit in it.
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

    @property
    def lora_params_per_rank(self) -> int:
        """LoRA A and B elements per unit of rank over the 7 linear layers of every block.

        A layer of in x out gets A (rank x in) and B (out x rank): rank x (in + out). Per block
        q (h, heads x hd), k and v (h, kv), o (heads x hd, h), gate and up (h, i), down (i, h).
        """
        h, i = self.hidden_size, self.intermediate_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return self.num_layers * (7 * h + 2 * q + 2 * kv + 3 * i)

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

#: What CUDA never hands out: nvidia-smi's memory.total minus cudaMemGetInfo's total. On the
#: H200 nvidia-smi -q reports "Reserved 616 MiB" (143,771 MiB total, 143,156 MiB free when idle)
#: and torch.cuda.mem_get_info() a total of 150,109,880,320 bytes (143,155.6 MiB):
#: tests/unit/fixtures/nvidia-smi/h200/{nvidia-smi-q.xml,gpu_mem.txt}. vLLM's
#: --gpu-memory-utilization is a fraction of the CUDA total, not of nvidia-smi's.
CUDA_RESERVED_MIB = 616

#: Headroom kept OUTSIDE the engine's budget, as absolute bytes, so every card keeps the same
#: safe margin and uses the rest (a fixed 0.92 left 11 GiB of an H200 idle):
#: - the CUDA context of the engine process (created before vLLM's start-up memory snapshot,
#:   so not inside its fraction; ~0.5 GiB with lazy module loading);
#: - CUDA graphs (vLLM captures them after it has sized the KV cache; ~0.5 GiB at the default
#:   capture sizes for a 7B model);
#: - a safety margin for fragmentation, NCCL buffers and a monitoring agent (0.5 GiB).
CUDA_CONTEXT_BYTES = 512 * MIB
CUDA_GRAPHS_BYTES = 512 * MIB
SAFETY_BYTES = 512 * MIB
HEADROOM_BYTES = CUDA_CONTEXT_BYTES + CUDA_GRAPHS_BYTES + SAFETY_BYTES  # 1.5 GiB

#: Inside the budget besides weights, activations and KV: non-torch allocations that vLLM's
#: profile counts (cuBLAS/cuDNN workspaces, NCCL, the sampler's scratch outside torch).
NON_TORCH_BYTES = 512 * MIB

#: Highest utilization the planner derives (the validator's upper bound).
MAX_UTILIZATION = 0.99


def cuda_total_bytes(total_mib: int) -> int:
    """What CUDA (and vLLM's fraction) calls the total: nvidia-smi's total minus reserved."""
    return max(0, int(total_mib) - CUDA_RESERVED_MIB) * MIB


#: llama.cpp's headroom outside its budget: only the safety margin. Its CUDA context, cuBLAS
#: workspaces and output buffers are inside the budget (LLAMACPP_RUNTIME_BYTES, measured) and its
#: CUDA graphs are a few MiB (decode only).
LLAMACPP_HEADROOM_BYTES = SAFETY_BYTES


def auto_utilization(total_mib: int, used_mib: int = 0,
                     headroom_bytes: int = HEADROOM_BYTES) -> float:
    """The largest fraction of the CUDA total that leaves HEADROOM_BYTES free on this GPU.

    used_mib is memory held by other processes (display server, other jobs). vLLM refuses to
    start when the free memory at start is below utilization x total, so the fraction comes
    from what is free, floored to 3 decimals. 0.0 when not even the headroom is free.
    headroom_bytes: HEADROOM_BYTES for vLLM, LLAMACPP_HEADROOM_BYTES for llama.cpp.
    """
    total = cuda_total_bytes(total_mib)
    if total <= 0:
        return 0.0
    usable = total - int(used_mib or 0) * MIB - headroom_bytes
    fraction = math.floor(max(0, usable) * 1000 / total) / 1000.0
    return min(MAX_UTILIZATION, fraction)


def max_start_utilization(total_mib: int, used_mib: int = 0) -> float:
    """The highest fraction vLLM would accept at start: free - its own CUDA context."""
    total = cuda_total_bytes(total_mib)
    if total <= 0:
        return 0.0
    free = total - int(used_mib or 0) * MIB - CUDA_CONTEXT_BYTES
    return math.floor(max(0, free) * 1000 / total) / 1000.0


def sampler_bytes(max_num_seqs: int, arch: "ModelArch" = None) -> int:
    """fp32 logits and probabilities for a full batch of sequences (vLLM's sampler peak)."""
    arch = arch or QWEN25_7B
    return int(max_num_seqs) * arch.vocab_size * 4 * 2


#: llama.cpp compute buffer: one micro-batch (n_ubatch 512) of f32 logits and FFN activations;
#: without flash attention also the f32 attention-score matrix n_ubatch x n_kv x n_heads, where
#: n_kv is the whole unified KV pool (why the planner always turns flash attention on).
LLAMACPP_UBATCH = 512

#: llama.cpp KV cache types (--cache-type-k/-v): f16, or q8_0 (blocks of 32 int8 values plus
#: one f16 scale: 34 bytes per 32 elements).
LLAMACPP_KV_TYPES = ("f16", "q8_0")

#: Measured with llama-server (the bundle's package source, CUDA 13, driver 580) on an H200
#: serving a full-size Q4_K_M Qwen2.5-7B with the role's flags for the RTX 3060 and RTX 4090 plans
#: (tests/device/recorded/llama-server-gpu/): the GPU holds the GGUF minus token_embd (llama.cpp
#: keeps the input embedding in host memory: 292.36 MiB "CPU_Mapped"), the KV pool exactly, a
#: compute buffer of 223.93 MiB at 91,904 tokens of pool and 445.5 MiB at 321,024 (a base plus
#: the f16 KQ mask, n_ubatch x 2 bytes per pool token, with flash attention), and 608 MiB more in
#: the process (CUDA context, cuBLAS workspaces, output buffers) in both runs.
LLAMACPP_TOKEN_EMBD_HOST_BYTES = 152064 * 3584 * 144 // 256  # Q4_K token_embd: 306,561,024
LLAMACPP_COMPUTE_BASE_BYTES = 136 * MIB  # measured 134.2 MiB
LLAMACPP_RUNTIME_BYTES = 640 * MIB  # measured 608 MiB


@dataclass(frozen=True)
class Variant:
    """One deployable form of the model."""

    key: str
    description: str
    weights_bytes: int
    engine: str  # the engine that serves it by default
    dtype: str  # what the engine is told (--dtype), "auto" where it does not apply
    hf_repo: str
    hf_revision: str  # pinned commit of hf_repo (40 hex digits)


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


#: Pinned Hugging Face commits, one per repository the planner can choose. Each was found in
#: many unrelated public projects (huggingface_hub cache paths models--Qwen--<repo>/snapshots/
#: <sha>/, revision= pins); the GGUF repo's q4_k_m shards at that commit are 3,993,201,344 and
#: 689,872,288 bytes, the AWQ repo's two safetensors 3,996,422,976 and 1,574,406,784 bytes.
#: Check a new pin with https://huggingface.co/api/models/<repo>/revision/main (field sha).
REVISIONS: Dict[str, str] = {
    "Qwen/Qwen2.5-7B-Instruct": "a09a35458c702b33eeacc393d103063234e8bc28",
    "Qwen/Qwen2.5-7B-Instruct-AWQ": "b25037543e9394b818fdfca67ab2a00ecc7dd641",
    "Qwen/Qwen2.5-7B-Instruct-GGUF": "bb5d59e06d9551d752d08b292a50eb208b07ab1f",
}


def _variant(key: str, description: str, weights: int, engine: str, dtype: str,
             repo: str) -> Variant:
    return Variant(key, description, weights, engine, dtype, repo, REVISIONS[repo])


CATALOG: Dict[str, Variant] = {
    "bf16": _variant("bf16", "bfloat16 safetensors (the published checkpoint)",
                     dense_weights_bytes(), "vllm", "bfloat16", "Qwen/Qwen2.5-7B-Instruct"),
    "fp16": _variant("fp16", "the bf16 checkpoint run as float16 (GPUs without bf16)",
                     dense_weights_bytes(), "vllm", "float16", "Qwen/Qwen2.5-7B-Instruct"),
    "awq": _variant("awq", "AWQ 4-bit, group 128 (fp16 activations)",
                    awq_weights_bytes(), "vllm", "float16", "Qwen/Qwen2.5-7B-Instruct-AWQ"),
    "gguf_q4_k_m": _variant("gguf_q4_k_m", "GGUF Q4_K_M (llama.cpp)",
                            GGUF_Q4_K_M_BYTES, "llamacpp", "auto",
                            "Qwen/Qwen2.5-7B-Instruct-GGUF"),
}

KV_DTYPE_BYTES = {"auto": 2, "fp8": 1}


def kv_bytes_per_token(kv_cache_dtype: str = "auto", arch: ModelArch = QWEN25_7B) -> int:
    """57,344 bytes at bf16/fp16, 28,672 with fp8 KV."""
    return arch.kv_bytes_per_token(KV_DTYPE_BYTES[kv_cache_dtype])


#: vLLM's --max-lora-rank values (vllm/config/lora.py MaxLoRARanks): adapters of a rank in
#: between run in the next slot up.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The --max-lora-rank that holds adapters up to `rank`; 0 for none."""
    if rank <= 0:
        return 0
    return next(r for r in VLLM_LORA_RANKS if r >= rank)


def vllm_lora_bytes(max_lora_rank: int, max_loras: int, dtype_bytes: int = 2,
                    arch: "ModelArch" = QWEN25_7B, tensor_parallel_size: int = 1) -> int:
    """GPU memory vLLM allocates at load for --enable-lora (per GPU): max_loras slots of
    A and B stacks at max_lora_rank for every linear layer, in the model's dtype (lora_dtype
    auto). Counted in the profiled weights, so it comes out of the KV cache."""
    total = max_loras * max_lora_rank * arch.lora_params_per_rank * dtype_bytes
    return math.ceil(total / tensor_parallel_size)


def activation_bytes(max_num_batched_tokens: int) -> int:
    """Activation peak, linear through the two H200 measurements (rounded up)."""
    (n1, b1), (n2, b2) = sorted(ACTIVATION_MEASURED.items())
    slope = (b2 - b1) / (n2 - n1)
    return max(0, math.ceil(b1 + slope * (max_num_batched_tokens - n1)))


def llamacpp_compute_bytes(n_kv: int, flash_attn: bool = True,
                           arch: ModelArch = QWEN25_7B) -> int:
    """Compute buffer of one n_ubatch micro-batch on the GPU; n_kv is the KV pool it spans.

    Flash attention: a base (measured) plus the f16 KQ mask, n_ubatch x n_kv x 2 bytes. Without
    it also the f32 score matrix n_ubatch x n_kv x n_heads.
    """
    mask = LLAMACPP_UBATCH * n_kv * 2
    scores = 0 if flash_attn else LLAMACPP_UBATCH * n_kv * arch.num_attention_heads * 4
    return LLAMACPP_COMPUTE_BASE_BYTES + mask + scores


def llamacpp_kv_bytes_per_token(kv_type: str = "f16", arch: ModelArch = QWEN25_7B) -> int:
    """57,344 bytes (f16) or 30,464 bytes (q8_0) per token of Qwen2.5-7B."""
    elements = 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim
    if kv_type == "q8_0":
        return elements // 32 * 34
    return elements * 2


@dataclass(frozen=True)
class VllmFit:
    """Result of sizing one vLLM configuration on one GPU (per GPU under TP)."""

    total_bytes: int  # the CUDA total (nvidia-smi's total minus reserved)
    utilization: float
    budget_bytes: int
    weights_bytes: int  # per GPU
    activation_bytes: int  # forward peak + sampler
    overhead_bytes: int  # non-torch allocations inside the budget
    kv_available_bytes: int  # may be negative
    kv_bytes_per_token: int  # per GPU
    kv_tokens: int  # 0 when nothing is left

    @property
    def fixed_bytes(self) -> int:
        return self.weights_bytes + self.activation_bytes + self.overhead_bytes


def vllm_fit(total_mib: int, utilization: float, weights_bytes: int,
             max_num_batched_tokens: int, kv_cache_dtype: str = "auto",
             tensor_parallel_size: int = 1, max_num_seqs: int = 256,
             lora_bytes: int = 0) -> VllmFit:
    """vLLM's sizing: budget = CUDA total x utilization; KV = budget - everything else.

    lora_bytes (per GPU, vllm_lora_bytes) counts with the weights."""
    total = cuda_total_bytes(total_mib)
    budget = int(total * utilization)
    weights = math.ceil(weights_bytes / tensor_parallel_size) + lora_bytes
    act = activation_bytes(max_num_batched_tokens) + sampler_bytes(max_num_seqs)
    per_token = kv_bytes_per_token(kv_cache_dtype) // tensor_parallel_size
    available = budget - weights - act - NON_TORCH_BYTES
    tokens = available // per_token if available > 0 else 0
    return VllmFit(total, utilization, budget, weights, act, NON_TORCH_BYTES,
                   available, per_token, int(tokens))


@dataclass(frozen=True)
class LlamacppFit:
    """llama.cpp on n_gpus GPUs (layers split evenly); the numbers are per GPU.

    n_ctx is the unified KV pool (--ctx-size) that all slots share."""

    total_bytes: int  # CUDA total of one GPU
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
                 weights_bytes: int = GGUF_Q4_K_M_BYTES, n_gpus: int = 1,
                 kv_type: str = "f16", flash_attn: bool = True) -> LlamacppFit:
    """llama.cpp allocates the n_ctx-token KV pool up front, plus its compute buffer; overhead is
    the process's CUDA runtime (context, cuBLAS, output buffers), all inside the budget.

    With several GPUs (--split-mode layer) weights and KV are split over them; every GPU
    holds a compute buffer.
    """
    total = cuda_total_bytes(total_mib)
    budget = int(total * utilization)
    on_gpu = weights_bytes - LLAMACPP_TOKEN_EMBD_HOST_BYTES
    return LlamacppFit(total, utilization, budget, math.ceil(on_gpu / n_gpus),
                       LLAMACPP_RUNTIME_BYTES, n_ctx,
                       math.ceil(n_ctx * llamacpp_kv_bytes_per_token(kv_type) / n_gpus),
                       llamacpp_compute_bytes(n_ctx, flash_attn))


def llamacpp_max_pool(total_mib: int, utilization: float, n_gpus: int = 1,
                      kv_type: str = "f16", weights_bytes: int = GGUF_Q4_K_M_BYTES,
                      granularity: int = 256) -> int:
    """The largest KV pool (tokens, a multiple of granularity) that fits; 0 if none."""
    probe = llamacpp_fit(total_mib, utilization, 0, weights_bytes, n_gpus, kv_type)
    free = probe.budget_bytes - probe.needed_bytes
    if free <= 0:
        return 0
    # per pool token and GPU: its share of the KV cache plus the compute buffer's KQ mask
    per_token = (llamacpp_kv_bytes_per_token(kv_type) / n_gpus
                 + llamacpp_compute_bytes(1) - llamacpp_compute_bytes(0))
    tokens = int(free // per_token)
    while tokens > 0 and not llamacpp_fit(total_mib, utilization, tokens, weights_bytes,
                                          n_gpus, kv_type).fits:
        tokens -= 1  # ceil() rounding of the per-GPU KV share
    return int(tokens // granularity * granularity)


def gib(n_bytes: Optional[float]) -> str:
    """Format bytes as GiB with two decimals (14.19)."""
    return "%.2f" % (float(n_bytes or 0) / GIB)
