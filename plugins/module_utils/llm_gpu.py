# -*- coding: utf-8 -*-
"""Parse nvidia-smi output and the PCI bus into the `gpu_facts` dict.

Pure Python (no Ansible imports). The module plugins/modules/gpu_facts.py passes a
command runner in; tests pass recorded outputs (tests/unit/fixtures/nvidia-smi/).

gpu_facts = {
  status: ok | no_gpu | no_driver | driver_mismatch | error,
  message, gpus: [{index, name, uuid, memory_total_mib, memory_used_mib,
  compute_capability, pci_bus_id, mig_mode}], gpu_count, driver_version,
  driver_major, cuda_driver_version, total_memory_mib, pci_devices
}
"""

from __future__ import annotations

import os
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

QUERY_FIELDS: Tuple[str, ...] = (
    "index", "name", "uuid", "memory.total", "memory.used", "compute_cap",
    "pci.bus_id", "driver_version", "mig.mode.current",
)
#: 470 drivers reject compute_cap ("is not a valid field to query"): query without it.
FALLBACK_FIELDS: Tuple[str, ...] = tuple(f for f in QUERY_FIELDS if f != "compute_cap")

MISMATCH_TEXT = "Driver/library version mismatch"
INVALID_FIELD_RE = re.compile(r"is not a valid field to query", re.I)
NVIDIA_PCI_VENDOR = "0x10de"

#: Compute capability by marketing name, for drivers whose nvidia-smi lacks
#: compute_cap (470). Checked in order; the first substring found wins.
NAME_TO_CC: Tuple[Tuple[str, str], ...] = (
    ("H200", "9.0"), ("H100", "9.0"), ("GH200", "9.0"),
    ("L40", "8.9"), ("L4", "8.9"), ("RTX 40", "8.9"), ("RTX 6000 Ada", "8.9"),
    ("A100", "8.0"), ("A30", "8.0"),
    ("A10G", "8.6"), ("A10", "8.6"), ("A40", "8.6"), ("A16", "8.6"), ("A2", "8.6"),
    ("RTX A", "8.6"), ("RTX 30", "8.6"),
    ("T4", "7.5"), ("RTX 20", "7.5"), ("GTX 16", "7.5"), ("TITAN RTX", "7.5"),
    ("Quadro RTX", "7.5"),
    ("V100", "7.0"), ("TITAN V", "7.0"),
    ("P100", "6.0"), ("P40", "6.1"), ("P4", "6.1"), ("GTX 10", "6.1"),
    ("K80", "3.7"),
)

#: PCI device id (vendor 0x10de) -> (name, memory MiB as nvidia-smi reports it, cc).
#: Lets a host without a working driver be planned (choice assume_driver_branch).
PCI_DEVICE_TABLE: Dict[str, Tuple[str, int, str]] = {
    "0x2503": ("NVIDIA GeForce RTX 3060", 12288, "8.6"),
    "0x2504": ("NVIDIA GeForce RTX 3060", 12288, "8.6"),
    "0x2684": ("NVIDIA GeForce RTX 4090", 24564, "8.9"),
    "0x2237": ("NVIDIA A10G", 23028, "8.6"),
    "0x27b8": ("NVIDIA L4", 23034, "8.9"),
    "0x1eb8": ("Tesla T4", 15360, "7.5"),
    "0x20b0": ("NVIDIA A100-SXM4-40GB", 40960, "8.0"),
    "0x20f1": ("NVIDIA A100-PCIE-40GB", 40960, "8.0"),
    "0x20b2": ("NVIDIA A100-SXM4-80GB", 81920, "8.0"),
    "0x20b5": ("NVIDIA A100 80GB PCIe", 81920, "8.0"),
    "0x2330": ("NVIDIA H100 80GB HBM3", 81559, "9.0"),
    "0x2331": ("NVIDIA H100 PCIe", 81559, "9.0"),
    "0x2335": ("NVIDIA H200", 143771, "9.0"),
}

Runner = Callable[[List[str]], Tuple[int, str, str]]


class GpuParseError(ValueError):
    """nvidia-smi printed something this parser does not understand."""


def empty_facts(status: str, message: str) -> Dict:
    return {
        "status": status, "message": message, "gpus": [], "gpu_count": 0,
        "driver_version": None, "driver_major": None, "cuda_driver_version": None,
        "total_memory_mib": 0, "pci_devices": [],
    }


def query_args(fields: Sequence[str]) -> List[str]:
    return ["--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"]


def _clean(value: str) -> Optional[str]:
    value = value.strip()
    if not value or (value.startswith("[") and value.endswith("]")) or value in ("N/A",):
        return None  # [N/A], [Not Supported], [Insufficient Permissions], ...
    return value


def _int_field(value: Optional[str], field: str, line_no: int) -> Optional[int]:
    if value is None:
        return None
    try:
        return int(value.split()[0])  # tolerate "24564 MiB" when units were not stripped
    except (ValueError, IndexError):
        raise GpuParseError("nvidia-smi line %d: %s is %r, expected an integer"
                            % (line_no, field, value))


def parse_query_csv(text: str, fields: Sequence[str] = QUERY_FIELDS) -> List[Dict]:
    """Parse `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`."""
    gpus = []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for line_no, line in enumerate(lines, start=1):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(fields):
            raise GpuParseError(
                "nvidia-smi line %d has %d comma-separated fields, expected %d (%s): %r"
                % (line_no, len(parts), len(fields), ", ".join(fields), line[:200]))
        raw = dict(zip(fields, parts))
        index = _int_field(_clean(raw["index"]), "index", line_no)
        if index is None:
            raise GpuParseError("nvidia-smi line %d: no GPU index: %r" % (line_no, line[:200]))
        cc = _clean(raw.get("compute_cap", ""))
        if cc is not None and not re.match(r"^\d+\.\d+$", cc):
            raise GpuParseError("nvidia-smi line %d: compute_cap is %r, expected like 8.9"
                                % (line_no, cc))
        mig = _clean(raw.get("mig.mode.current", ""))
        gpus.append({
            "index": index,
            "name": _clean(raw["name"]),
            "uuid": _clean(raw["uuid"]) if "uuid" in raw else None,
            "memory_total_mib": _int_field(_clean(raw["memory.total"]), "memory.total", line_no),
            "memory_used_mib": _int_field(_clean(raw.get("memory.used", "")), "memory.used",
                                          line_no),
            "compute_capability": cc,
            "pci_bus_id": _clean(raw.get("pci.bus_id", "")),
            "mig_mode": mig,
            "driver_version": _clean(raw.get("driver_version", "")),
        })
    return gpus


def parse_version(text: str) -> Dict[str, Optional[str]]:
    """Driver and CUDA versions from `nvidia-smi --version` or the nvidia-smi banner."""
    out: Dict[str, Optional[str]] = {"driver_version": None, "cuda_driver_version": None}
    m = re.search(r"DRIVER version\s*:\s*([\d.]+)", text, re.I) or \
        re.search(r"Driver Version:\s*([\d.]+)", text)
    if m:
        out["driver_version"] = m.group(1)
    m = re.search(r"CUDA Version\s*:\s*([\d.]+)", text, re.I)
    if m:
        out["cuda_driver_version"] = m.group(1)
    return out


def driver_major(version: Optional[str]) -> Optional[int]:
    if not version:
        return None
    m = re.match(r"^(\d+)", version)
    return int(m.group(1)) if m else None


def cc_from_name(name: Optional[str]) -> Optional[str]:
    if not name:
        return None
    for needle, cc in NAME_TO_CC:
        if needle.lower() in name.lower():
            return cc
    return None


def scan_pci(sysfs_root: str = "/sys") -> List[Dict]:
    """NVIDIA display/3D controllers on the PCI bus (vendor 0x10de, class 0x03xxxx)."""
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    found = []
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return found
    for entry in entries:
        def read(name: str) -> str:
            try:
                with open(os.path.join(base, entry, name)) as fh:
                    return fh.read().strip().lower()
            except OSError:
                return ""
        if read("vendor") != NVIDIA_PCI_VENDOR or not read("class").startswith("0x03"):
            continue
        device = read("device")
        known = PCI_DEVICE_TABLE.get(device)
        found.append({
            "pci_bus_id": entry, "device_id": device,
            "name": known[0] if known else None,
            "memory_total_mib": known[1] if known else None,
            "compute_capability": known[2] if known else None,
        })
    return found


def _finish(facts: Dict) -> Dict:
    gpus = facts["gpus"]
    facts["gpu_count"] = len(gpus)
    facts["total_memory_mib"] = sum(g["memory_total_mib"] or 0 for g in gpus)
    facts["driver_major"] = driver_major(facts["driver_version"])
    return facts


def _pci_gpus(pci: List[Dict]) -> List[Dict]:
    return [{
        "index": i, "name": d["name"] or "NVIDIA PCI device %s" % d["device_id"], "uuid": None,
        "memory_total_mib": d["memory_total_mib"], "memory_used_mib": None,
        "compute_capability": d["compute_capability"], "pci_bus_id": d["pci_bus_id"],
        "mig_mode": None,
    } for i, d in enumerate(pci)]


def gather(run: Runner, nvidia_smi: Optional[str], sysfs_root: str = "/sys") -> Dict:
    """Build gpu_facts. `run(argv)` returns (rc, stdout, stderr) and must not raise.

    `nvidia_smi` is the resolved path of nvidia-smi, or None when it is not installed.
    Never raises: every failure becomes a status with a message.
    """
    try:
        return _gather(run, nvidia_smi, sysfs_root)
    except Exception as exc:  # the module must report, never crash
        return empty_facts("error", "could not read the GPUs: %s: %s"
                           % (type(exc).__name__, exc))


def _no_driver(pci: List[Dict], why: str) -> Dict:
    names = ", ".join("%s (%s)" % (d["name"] or "device " + d["device_id"], d["pci_bus_id"])
                      for d in pci)
    facts = empty_facts("no_driver", "NVIDIA GPU on the PCI bus (%s) but %s: run the "
                        "nvidia_driver role first" % (names, why))
    facts["pci_devices"] = pci
    facts["gpus"] = _pci_gpus(pci)
    return _finish(facts)


def _gather(run: Runner, nvidia_smi: Optional[str], sysfs_root: str) -> Dict:
    pci = scan_pci(sysfs_root)
    if not nvidia_smi:
        if pci:
            return _no_driver(pci, "nvidia-smi is not installed")
        return empty_facts("no_gpu", "no NVIDIA GPU found (no nvidia-smi, no NVIDIA device "
                           "under %s/bus/pci/devices)" % sysfs_root.rstrip("/"))

    rc, out, err = run([nvidia_smi] + query_args(QUERY_FIELDS))
    text = (out or "") + (err or "")
    fields = QUERY_FIELDS
    note = ""
    if MISMATCH_TEXT in text:
        facts = empty_facts("driver_mismatch", "nvidia-smi: Failed to initialize NVML: "
                            "Driver/library version mismatch: the driver was upgraded "
                            "without a reboot; reboot the host")
        facts["pci_devices"] = pci
        return facts
    if rc != 0 and INVALID_FIELD_RE.search(text):
        fields = FALLBACK_FIELDS
        rc, out, err = run([nvidia_smi] + query_args(FALLBACK_FIELDS))
        text = (out or "") + (err or "")
        note = "compute_cap is not a valid field on this driver (470?): compute capability " \
               "taken from the GPU name table"
    if rc != 0:
        first = text.strip().splitlines()[0] if text.strip() else "no output"
        if "No devices were found" in text and not pci:
            return empty_facts("no_gpu", "no NVIDIA GPU found (nvidia-smi: No devices "
                               "were found)")
        if pci:
            return _no_driver(pci, "nvidia-smi fails (rc %d: %s)" % (rc, first))
        return empty_facts("error", "nvidia-smi failed (rc %d): %s" % (rc, first))
    if not out.strip():
        if pci:
            return _no_driver(pci, "nvidia-smi lists no GPU")
        return empty_facts("no_gpu", "no NVIDIA GPU found (nvidia-smi lists none)")
    try:
        gpus = parse_query_csv(out, fields)
    except GpuParseError as exc:
        facts = empty_facts("error", "cannot parse nvidia-smi output: %s" % exc)
        facts["pci_devices"] = pci
        return facts

    missing_cc = []
    for gpu in gpus:
        if "compute_cap" not in fields:
            gpu["compute_capability"] = cc_from_name(gpu["name"])
        if gpu["compute_capability"] is None:
            missing_cc.append(str(gpu["index"]))
    driver_versions = sorted({g.pop("driver_version") for g in gpus} - {None})

    rc_v, out_v, err_v = run([nvidia_smi, "--version"])
    versions = parse_version((out_v or "") + (err_v or "")) if rc_v == 0 else {}
    if not versions.get("cuda_driver_version"):
        rc_b, out_b, _err_b = run([nvidia_smi])  # old nvidia-smi: CUDA version in the banner
        if rc_b == 0:
            banner = parse_version(out_b or "")
            versions = {k: versions.get(k) or banner.get(k) for k in banner}

    facts = empty_facts("ok", "")
    facts["gpus"] = gpus
    facts["pci_devices"] = pci
    facts["driver_version"] = (driver_versions[0] if driver_versions
                               else versions.get("driver_version"))
    facts["cuda_driver_version"] = versions.get("cuda_driver_version")
    messages = ["%d GPU(s): %s" % (len(gpus), ", ".join(
        "%s %s MiB" % (g["name"], g["memory_total_mib"]) for g in gpus))]
    if note:
        messages.append(note)
    if missing_cc:
        messages.append("compute capability unknown for GPU %s (not in the name table)"
                        % ", ".join(missing_cc))
    mig_on = [str(g["index"]) for g in gpus if (g["mig_mode"] or "").lower() == "enabled"]
    if mig_on:
        messages.append("MIG mode enabled on GPU %s" % ", ".join(mig_on))
    facts["message"] = "; ".join(messages)
    return _finish(facts)


def pynvml_facts() -> Optional[Dict]:
    """Optional cross-check through NVML (nvidia-ml-py); None when not importable."""
    try:
        import pynvml  # type: ignore
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            gpus = []
            for i in range(count):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
                name = pynvml.nvmlDeviceGetName(h)
                gpus.append({"index": i,
                             "name": name.decode() if isinstance(name, bytes) else name,
                             "memory_total_mib": int(mem.total) // (1024 * 1024),
                             "compute_capability": "%d.%d" % (major, minor)})
            cuda = pynvml.nvmlSystemGetCudaDriverVersion()
            return {"gpus": gpus,
                    "cuda_driver_version": "%d.%d" % (cuda // 1000, (cuda % 1000) // 10)}
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML errors are reported by nvidia-smi already
        return None
