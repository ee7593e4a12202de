# -*- coding: utf-8 -*-
"""Parse nvidia-smi output and the PCI bus into the `gpu_facts` dict.

Pure Python (no Ansible imports). The module plugins/modules/gpu_facts.py passes a
command runner in; tests pass recorded outputs (tests/unit/fixtures/nvidia-smi/).

gpu_facts = {
  status: ok | no_gpu | no_driver | driver_mismatch | error,
  message, gpus: [{index, name, uuid, memory_total_mib, memory_used_mib,
  memory_used_by_bundle_mib, compute_capability, pci_bus_id, mig_mode}], gpu_count,
  driver_version,
  driver_major, cuda_driver_version, total_memory_mib,
  pci_devices: [{pci_bus_id, device_id ("0x2684"), name, memory_total_mib,
  compute_capability, memory_note, known, source: table | llm_gpu_pci_ids | None}]
}

PCI ids the table lacks (or gets wrong for a host) are declared per host in the
Ansible variable llm_gpu_pci_ids, passed as the gpu_facts option pci_ids.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

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
#: compute_cap (470). Checked in order; the first substring found wins, so a longer
#: name goes before any shorter name it contains ("GH200" before "H200", "L40S" before
#: "L40" before "L4", "A100" before "A10", "P100"/"P40" before "P4") and the Turing
#: "Quadro RTX 4000" before the Ada "RTX 40"; every "RTX A<n>" (A400..A6000) is Ampere
#: 8.6 and goes before "A100" ("RTX A1000" contains "A100").
NAME_TO_CC: Tuple[Tuple[str, str], ...] = (
    ("GH200", "9.0"), ("H200", "9.0"), ("H100", "9.0"),
    ("Quadro RTX", "7.5"), ("TITAN RTX", "7.5"),
    ("RTX 6000 Ada", "8.9"), ("L40S", "8.9"), ("L40", "8.9"), ("L4", "8.9"), ("RTX 40", "8.9"),
    ("RTX A", "8.6"),
    ("A100", "8.0"), ("A30", "8.0"),
    ("A10G", "8.6"), ("A10", "8.6"), ("A40", "8.6"), ("A16", "8.6"), ("A2", "8.6"),
    ("RTX 30", "8.6"),
    ("T4", "7.5"), ("RTX 20", "7.5"), ("GTX 16", "7.5"),
    ("V100", "7.0"), ("TITAN V", "7.0"),
    ("Tesla P100", "6.0"), ("P100", "6.0"), ("Tesla P40", "6.1"), ("P40", "6.1"), ("P4", "6.1"),
    ("GTX 10", "6.1"),
    ("K80", "3.7"),
)


class PciDevice(NamedTuple):
    """What a PCI device id tells before any driver runs.

    memory_mib is memory.total as nvidia-smi reports it, or None when one id is sold with
    different memory sizes and the smaller one would mislead (then the host must declare
    it in llm_gpu_pci_ids). memory_note says why a number is conservative or uncertain.
    """

    name: str
    memory_mib: Optional[int]
    cc: str
    memory_note: str = ""


_SHARED_3060 = ("one id for the 12 GB (12288 MiB) and the 8 GB card (GA106, 128-bit, "
                "Oct 2022): planned as 8 GB; a 12 GB host declares "
                "llm_gpu_pci_ids: {'%s': {memory_mib: 12288, compute_capability: '8.6'}}")

#: PCI device id (vendor 0x10de) -> what the host has before a driver runs.
#: Lets a host without a working driver be planned (choice assume_driver_branch).
#: Operators extend or override it per host with llm_gpu_pci_ids (gpu_facts pci_ids).
#:
#: Sources. Ids and names: [pci.ids] = the PCI ID Repository (pci-ids.ucw.cz) snapshot
#: 2026.08.22, github.com/pciutils/pciids commit c1c12547; ids marked (deb12) are also in
#: Debian 12's pci.ids package 0.0~2023.04.11-1 (pciutils 1:3.9.0-4 reads it);
#: [nv] = NVIDIA's supported-GPU table (name as nvidia-smi prints it, PCI device id),
#: README.md of NVIDIA/open-gpu-kernel-modules 595.45.04 (Turing and newer only).
#: Names below are nvidia-smi's names ([nv], or recorded nvidia-smi output for Pascal/Volta).
#: Memory: memory.total in MiB from real nvidia-smi output (FACTS.md, or the public recording
#: named per entry); where drivers or ECC settings report different totals for one card,
#: the SMALLER recorded value, with a memory_note. "nominal" = GB x 1024, no recording found.
PCI_DEVICE_TABLE: Dict[str, PciDevice] = {
    # --- GeForce RTX 30 (Ampere, cc 8.6) -------------------------------------------------
    # RTX 3060, GA106: [pci.ids](deb12) 2503 "GA106 [GeForce RTX 3060]", 2504 "... Lite Hash
    # Rate", 2544 "GA106 [GeForce RTX 3060]"; [nv] all three "NVIDIA GeForce RTX 3060". The
    # 8 GB GA106 card has no id of its own in either list, so these ids are shared: mapped
    # to 8192 MiB (nominal) with a note. 12 GB reports 12288 (FACTS.md; also
    # geerlingguy/raspberry-pi-pcie-devices#790, driver 580.95.05).
    "0x2503": PciDevice("NVIDIA GeForce RTX 3060", 8192, "8.6", _SHARED_3060 % "0x2503"),
    "0x2504": PciDevice("NVIDIA GeForce RTX 3060", 8192, "8.6", _SHARED_3060 % "0x2504"),
    "0x2544": PciDevice("NVIDIA GeForce RTX 3060", 8192, "8.6", _SHARED_3060 % "0x2544"),
    # RTX 3060, GA104: [pci.ids](deb12) 2487 "GA104 [GeForce RTX 3060]", 24c7 "GA104
    # [GeForce RTX 3060 8GB]" (the 8 GB GA104 card has its own id); [nv] both "NVIDIA
    # GeForce RTX 3060". 12288 as FACTS.md; 8192 nominal.
    "0x2487": PciDevice("NVIDIA GeForce RTX 3060", 12288, "8.6"),
    "0x24c7": PciDevice("NVIDIA GeForce RTX 3060", 8192, "8.6"),
    # RTX 3060 Ti (8 GB only): [pci.ids](deb12) 2414 GA103, 2486 GA104, 2489 LHR, 24c9
    # GDDR6X; [nv] "NVIDIA GeForce RTX 3060 Ti". 8192 from recorded nvidia-smi tables
    # (public GitHub files, drivers 535-580).
    "0x2414": PciDevice("NVIDIA GeForce RTX 3060 Ti", 8192, "8.6"),
    "0x2486": PciDevice("NVIDIA GeForce RTX 3060 Ti", 8192, "8.6"),
    "0x2489": PciDevice("NVIDIA GeForce RTX 3060 Ti", 8192, "8.6"),
    "0x24c9": PciDevice("NVIDIA GeForce RTX 3060 Ti", 8192, "8.6"),
    # RTX 3070 (8 GB): [pci.ids](deb12) 2484, 2488 LHR; [nv] "NVIDIA GeForce RTX 3070".
    # 8192 recorded (nvidia-smi tables in public GitHub files, drivers 535+).
    "0x2484": PciDevice("NVIDIA GeForce RTX 3070", 8192, "8.6"),
    "0x2488": PciDevice("NVIDIA GeForce RTX 3070", 8192, "8.6"),
    # RTX 3080: [pci.ids](deb12) 2206 "GA102 [GeForce RTX 3080]" (its subsystem list also
    # names a 20 GB board, 10de:146d: the smaller 10 GB is planned), 2216 LHR, 220a
    # "GA102 [GeForce RTX 3080 12GB]"; [nv] all "NVIDIA GeForce RTX 3080". 10240 recorded
    # (nvidia-smi tables, drivers 535+); 12288 nominal.
    "0x2206": PciDevice("NVIDIA GeForce RTX 3080", 10240, "8.6",
                        "pci.ids also lists a 20 GB board under this id; planned as 10 GB"),
    "0x2216": PciDevice("NVIDIA GeForce RTX 3080", 10240, "8.6"),
    "0x220a": PciDevice("NVIDIA GeForce RTX 3080", 12288, "8.6"),
    # RTX 3090: [pci.ids](deb12) 2204; [nv]. 24576 recorded (noonghunna/club-3090#390,
    # driver 580.142).
    "0x2204": PciDevice("NVIDIA GeForce RTX 3090", 24576, "8.6"),
    # --- GeForce RTX 40 (Ada, cc 8.9) ----------------------------------------------------
    # RTX 4060 Ti: [pci.ids] 2803 "AD106 [GeForce RTX 4060 Ti]" (deb12), 2805 "AD106
    # [GeForce RTX 4060 Ti 16GB]"; [nv] both "NVIDIA GeForce RTX 4060 Ti". Public GPU
    # databases disagree on whether 2803 also ships with 16 GB (akash-network/
    # provider-configs gpus.json says 16Gi, its PR #25 says 8Gi): memory unknown, declare it.
    # 2805: 16380 recorded (nvidia-smi tables in public GitHub files, drivers 535+).
    "0x2803": PciDevice("NVIDIA GeForce RTX 4060 Ti", None, "8.9",
                        "8 GB and 16 GB boards are both reported under this id; declare "
                        "memory_mib in llm_gpu_pci_ids"),
    "0x2805": PciDevice("NVIDIA GeForce RTX 4060 Ti", 16380, "8.9"),
    # RTX 4070 (12 GB): [pci.ids] 2786 (deb12), 2709 "AD103 [GeForce RTX 4070]"; [nv].
    # RTX 4070 Ti: 2782 (deb12); [nv]. 12282 recorded for both (nvidia-smi tables in public
    # GitHub files, drivers 535+).
    "0x2786": PciDevice("NVIDIA GeForce RTX 4070", 12282, "8.9"),
    "0x2709": PciDevice("NVIDIA GeForce RTX 4070", 12282, "8.9"),
    "0x2782": PciDevice("NVIDIA GeForce RTX 4070 Ti", 12282, "8.9"),
    # RTX 4080: [pci.ids](deb12) 2704; [nv]. 16376 recorded (nvidia-smi tables, drivers 535+).
    "0x2704": PciDevice("NVIDIA GeForce RTX 4080", 16376, "8.9"),
    # RTX 4090: [pci.ids](deb12) 2684; [nv]. 24564 (FACTS.md).
    "0x2684": PciDevice("NVIDIA GeForce RTX 4090", 24564, "8.9"),
    # --- Data centre Ampere / Ada (ECC on by default: totals below are with ECC on) ------
    # A10 2236, A10G 2237: [pci.ids](deb12) "GA102GL [A10]" / "[A10G]"; [nv]. 23028 for
    # both (FACTS.md for A10G; A10 recorded in nvidia-smi tables, drivers 535-580).
    "0x2236": PciDevice("NVIDIA A10", 23028, "8.6"),
    "0x2237": PciDevice("NVIDIA A10G", 23028, "8.6"),
    # L4 27b8: [pci.ids](deb12); [nv]. 23034 (FACTS.md).
    "0x27b8": PciDevice("NVIDIA L4", 23034, "8.9"),
    # L40S 26b9: [pci.ids] "AD102GL [L40S]"; [nv]. 46068 recorded
    # (akash-network/provider-configs#99, driver 595.71.05, pci.device_id 0x26B910DE).
    "0x26b9": PciDevice("NVIDIA L40S", 46068, "8.9"),
    # A100 (HBM2e, ECC does not change the total): [pci.ids](deb12) 20b0 "A100 SXM4 40GB",
    # 20f1 "A100 PCIe 40GB", 20b2 "A100 SXM4 80GB", 20b5 "A100 PCIe 80GB"; [nv] names.
    # 40960 / 81920 (FACTS.md).
    "0x20b0": PciDevice("NVIDIA A100-SXM4-40GB", 40960, "8.0"),
    "0x20f1": PciDevice("NVIDIA A100-PCIE-40GB", 40960, "8.0",
                        "older drivers were recorded reporting 40536 MiB"),
    "0x20b2": PciDevice("NVIDIA A100-SXM4-80GB", 81920, "8.0"),
    "0x20b5": PciDevice("NVIDIA A100 80GB PCIe", 81920, "8.0"),
    # --- Turing --------------------------------------------------------------------------
    # T4 1eb8: [pci.ids](deb12) "TU104GL [Tesla T4]"; [nv] "Tesla T4". 15360 (FACTS.md).
    "0x1eb8": PciDevice("Tesla T4", 15360, "7.5"),
    # --- Hopper (cc 9.0) -----------------------------------------------------------------
    # [pci.ids] 2330 "GH100 [H100 SXM5 80GB]" (deb12), 2331 "GH100 [H100 PCIe]" (deb12),
    # 2321 "GH100 [H100L 94GB]", 2335 "GH100 [H200 SXM 141GB]"; [nv] 2321 "NVIDIA H100
    # NVL", 2330 "NVIDIA H100 80GB HBM3", 2331 "NVIDIA H100 PCIe", 2335 "NVIDIA H200".
    # 81559 for H100 SXM and PCIe (FACTS.md; PCIe also recorded, drivers 535+); H100 NVL
    # 95830 recorded (NVIDIA/gpu-admin-tools#4, driver 535.183.01); H200 143771 (FACTS.md,
    # measured on the team's H200).
    "0x2330": PciDevice("NVIDIA H100 80GB HBM3", 81559, "9.0"),
    "0x2331": PciDevice("NVIDIA H100 PCIe", 81559, "9.0"),
    "0x2321": PciDevice("NVIDIA H100 NVL", 95830, "9.0"),
    "0x2335": PciDevice("NVIDIA H200", 143771, "9.0"),
    # --- Volta (cc 7.0; vLLM no longer runs here, FACTS.md) -------------------------------
    # [pci.ids](deb12) 1db1 "Tesla V100 SXM2 16GB", 1db4 "Tesla V100 PCIe 16GB", 1db5
    # "Tesla V100 SXM2 32GB", 1db6 "Tesla V100 PCIe 32GB". Names as nvidia-smi prints them
    # (recorded, e.g. NVIDIA/nvidia-docker#1076, #738). Memory: older drivers (recorded up
    # to 510.47) report 16160 / 32510 MiB, recent ones 16384 (recorded on 575.57 and
    # 580.126) / 32768: the smaller is planned.
    "0x1db1": PciDevice("Tesla V100-SXM2-16GB", 16160, "7.0",
                        "newer drivers (575+) report 16384 MiB"),
    "0x1db4": PciDevice("Tesla V100-PCIE-16GB", 16160, "7.0",
                        "newer drivers (575+) report 16384 MiB"),
    "0x1db5": PciDevice("Tesla V100-SXM2-32GB", 32510, "7.0",
                        "newer drivers report 32768 MiB"),
    "0x1db6": PciDevice("Tesla V100-PCIE-32GB", 32510, "7.0",
                        "newer drivers report 32768 MiB"),
    # --- Pascal (for tests of old-GPU plans) ---------------------------------------------
    # P100 15f8: [pci.ids](deb12) "GP100GL [Tesla P100 PCIe 16GB]"; nvidia-smi name
    # "Tesla P100-PCIE-16GB". 16280 recorded with older drivers (Kaggle notebooks), 16384 on
    # 515.65.01 (wookayin/gpustat#130): the smaller is planned. cc 6.0.
    "0x15f8": PciDevice("Tesla P100-PCIE-16GB", 16280, "6.0",
                        "drivers 515+ report 16384 MiB"),
    # P40 1b38: [pci.ids](deb12) "GP102GL [Tesla P40]"; nvidia-smi "Tesla P40". GDDR5 ECC
    # takes memory: 23040 with ECC on (recorded, drivers 5xx), 24451 (410.79) / 24576
    # (580.126.09) with ECC off: the smaller is planned. cc 6.1.
    "0x1b38": PciDevice("Tesla P40", 23040, "6.1",
                        "23040 MiB with ECC on; 24576 MiB with ECC off"),
}

#: The Ansible variable through which a host declares PCI ids (gpu_facts pci_ids).
PCI_IDS_VAR = "llm_gpu_pci_ids"
PCI_IDS_EXAMPLE = ('llm_gpu_pci_ids: {"0x29ff": {"name": "NVIDIA <model>", '
                   '"memory_mib": 24564, "compute_capability": "8.9"}} (memory_mib as '
                   '`nvidia-smi --query-gpu=memory.total` prints it on such a card)')
_PCI_ID_FIELDS = ("name", "memory_mib", "compute_capability")

Runner = Callable[[List[str]], Tuple[int, str, str]]


class GpuParseError(ValueError):
    """nvidia-smi printed something this parser does not understand."""


class PciIdsError(ValueError):
    """llm_gpu_pci_ids (gpu_facts pci_ids) holds an entry this module cannot use."""


def _pci_ids_error(what: str) -> PciIdsError:
    return PciIdsError("%s %s. Example: %s" % (PCI_IDS_VAR, what, PCI_IDS_EXAMPLE))


def normalize_pci_id(raw: Any) -> str:
    """'0x29FF', '29ff' or '10de:29ff' -> '0x29ff'. Raises PciIdsError otherwise."""
    text = str(raw).strip().lower()
    if text.startswith("10de:"):
        text = text[len("10de:"):]
    if text.startswith("0x"):
        text = text[2:]
    if not re.match(r"^[0-9a-f]{4}$", text):
        raise _pci_ids_error(
            "key %r is not a PCI device id: write 4 hex digits as a QUOTED string "
            "(\"0x29ff\", \"29ff\" or \"10de:29ff\"; unquoted YAML 0x29ff becomes the "
            "number 10751), as `cat /sys/bus/pci/devices/*/device` prints it" % (raw,))
    return "0x" + text


def _declared_memory(key: str, value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise _pci_ids_error("entry %s: memory_mib is required (an integer, MiB)" % key)
    try:
        memory = int(str(value).strip())
    except ValueError:
        raise _pci_ids_error("entry %s: memory_mib is %r, expected an integer (MiB)"
                             % (key, value)) from None
    if memory <= 0:
        raise _pci_ids_error("entry %s: memory_mib is %d, expected MiB > 0" % (key, memory))
    return memory


def _declared_cc(key: str, value: Any) -> str:
    cc = "" if isinstance(value, bool) or value is None else str(value).strip()
    if not re.match(r"^\d{1,2}\.\d$", cc):
        raise _pci_ids_error("entry %s: compute_capability is %r, expected a string like "
                             "\"8.9\" (major.minor, as nvidia-smi --query-gpu=compute_cap "
                             "prints it)" % (key, value))
    return cc


def parse_pci_id_entry(key: str, entry: Any) -> PciDevice:
    """One llm_gpu_pci_ids value -> PciDevice; `key` is already normalised."""
    if isinstance(entry, PciDevice):
        return entry
    if not isinstance(entry, Mapping):
        raise _pci_ids_error("entry %s is %r, expected a dict with memory_mib and "
                             "compute_capability" % (key, entry))
    unknown = sorted(set(entry) - set(_PCI_ID_FIELDS))
    if unknown:
        raise _pci_ids_error("entry %s has unknown key(s) %s (allowed: %s)"
                             % (key, ", ".join(map(str, unknown)), ", ".join(_PCI_ID_FIELDS)))
    if "memory_mib" not in entry:
        raise _pci_ids_error("entry %s: memory_mib is required (an integer, MiB)" % key)
    if "compute_capability" not in entry:
        raise _pci_ids_error("entry %s: compute_capability is required (a string like "
                             "\"8.9\")" % key)
    memory = _declared_memory(key, entry["memory_mib"])
    cc = _declared_cc(key, entry["compute_capability"])
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise _pci_ids_error("entry %s: name is %r, expected a string" % (key, name))
    known = PCI_DEVICE_TABLE.get(key)
    default = known.name if known else "NVIDIA PCI device %s" % key
    return PciDevice((name or "").strip() or default, memory, cc)


def parse_pci_ids(raw: Optional[Mapping[Any, Any]]) -> Dict[str, PciDevice]:
    """Validate llm_gpu_pci_ids (gpu_facts pci_ids) into {'0x29ff': PciDevice}.

    Raises PciIdsError naming llm_gpu_pci_ids, the entry and a value that works.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _pci_ids_error("is %r, expected a dict keyed by PCI device id" % (raw,))
    parsed: Dict[str, PciDevice] = {}
    for raw_key, entry in raw.items():
        key = normalize_pci_id(raw_key)
        if key in parsed:
            raise _pci_ids_error("declares %s twice (keys are compared after normalising "
                                 "to 0x<4 hex digits>)" % key)
        parsed[key] = parse_pci_id_entry(key, entry)
    return parsed


def lookup_pci_device(device_id: str, declared: Mapping[str, PciDevice]
                      ) -> Tuple[Optional[PciDevice], Optional[str]]:
    """(entry, source) for a device id: the host's declaration wins over the table."""
    if device_id in declared:
        return declared[device_id], PCI_IDS_VAR
    if device_id in PCI_DEVICE_TABLE:
        return PCI_DEVICE_TABLE[device_id], "table"
    return None, None


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
                            % (line_no, field, value)) from None


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


def pci_device_facts(bus_id: str, device_id: str,
                     declared: Mapping[str, PciDevice]) -> Dict:
    """The pci_devices entry of gpu_facts for one NVIDIA display/3D controller."""
    entry, source = lookup_pci_device(device_id, declared)
    return {
        "pci_bus_id": bus_id, "device_id": device_id,
        "name": entry.name if entry else None,
        "memory_total_mib": entry.memory_mib if entry else None,
        "compute_capability": entry.cc if entry else None,
        "memory_note": (entry.memory_note or None) if entry else None,
        "known": entry is not None, "source": source,
    }


def scan_pci(sysfs_root: str = "/sys",
             pci_ids: Optional[Mapping[str, PciDevice]] = None) -> List[Dict]:
    """NVIDIA display/3D controllers on the PCI bus (vendor 0x10de, class 0x03xxxx).

    `pci_ids` is the parsed llm_gpu_pci_ids (parse_pci_ids); it extends and overrides
    PCI_DEVICE_TABLE for this host.
    """
    declared = pci_ids or {}
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    found: List[Dict] = []
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return found
    for entry in entries:
        def read(name: str, entry: str = entry) -> str:
            try:
                with open(os.path.join(base, entry, name)) as fh:
                    return fh.read().strip().lower()
            except OSError:
                return ""
        if read("vendor") != NVIDIA_PCI_VENDOR or not read("class").startswith("0x03"):
            continue
        found.append(pci_device_facts(entry, read("device"), declared))
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


#: The bundle's engine units: memory their processes hold is not "used by others" (a re-run
#: on a serving host must plan as if its own engine were not there, or it would shrink).
BUNDLE_UNITS: Tuple[str, ...] = ("vllm.service", "llamacpp.service")
COMPUTE_APPS_FIELDS: Tuple[str, ...] = ("gpu_uuid", "pid", "used_memory")


def parse_compute_apps(text: str) -> List[Tuple[str, int, int]]:
    """(gpu_uuid, pid, used MiB) from `nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory
    --format=csv,noheader,nounits`; lines it cannot read are skipped."""
    apps = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        uuid, pid, mem = parts
        if not pid.isdigit():
            continue
        used = _clean(mem)
        apps.append((uuid, int(pid), int(used.split()[0]) if used and used.split()[0].isdigit()
                     else 0))
    return apps


def unit_of_pid(pid: int, proc_root: str = "/proc") -> Optional[str]:
    """The systemd unit a process runs in (from /proc/<pid>/cgroup), None when unknown."""
    try:
        with open(os.path.join(proc_root, str(pid), "cgroup")) as fh:
            text = fh.read()
    except OSError:
        return None
    units = re.findall(r"/([^/\n]+\.(?:service|scope))(?=/|$)", text, re.M)
    return units[-1] if units else None  # the innermost unit


def bundle_memory(run: Runner, nvidia_smi: str, gpus: List[Dict],
                  proc_root: str = "/proc") -> None:
    """Set memory_used_by_bundle_mib on each GPU: what the bundle's engines hold there."""
    for gpu in gpus:
        gpu["memory_used_by_bundle_mib"] = 0
    rc, out, _err = run([nvidia_smi, "--query-compute-apps=" + ",".join(COMPUTE_APPS_FIELDS),
                         "--format=csv,noheader,nounits"])
    if rc != 0:
        return  # an old nvidia-smi or none running: nothing is ours
    by_uuid = {g.get("uuid"): g for g in gpus}
    for uuid, pid, used in parse_compute_apps(out or ""):
        if uuid in by_uuid and unit_of_pid(pid, proc_root) in BUNDLE_UNITS:
            by_uuid[uuid]["memory_used_by_bundle_mib"] += used


def gather(run: Runner, nvidia_smi: Optional[str], sysfs_root: str = "/sys",
           pci_ids: Optional[Mapping[Any, Any]] = None, proc_root: str = "/proc") -> Dict:
    """Build gpu_facts. `run(argv)` returns (rc, stdout, stderr) and must not raise.

    `nvidia_smi` is the resolved path of nvidia-smi, or None when it is not installed.
    `pci_ids` is llm_gpu_pci_ids, raw or parsed (parse_pci_ids): PCI ids this host
    declares, used when no driver answers. Never raises: every failure becomes a status
    with a message (the gpu_facts module validates pci_ids first and fails on a bad one).
    """
    try:
        return _gather(run, nvidia_smi, sysfs_root, parse_pci_ids(pci_ids), proc_root)
    except Exception as exc:  # the module must report, never crash
        return empty_facts("error", "could not read the GPUs: %s: %s"
                           % (type(exc).__name__, exc))


def _pci_notes(pci: List[Dict]) -> List[str]:
    """Per distinct device id: why its memory is unknown or only conservative."""
    notes: List[str] = []
    seen = set()
    for d in pci:
        if d["device_id"] in seen:
            continue
        seen.add(d["device_id"])
        if d["memory_total_mib"] is None or d["compute_capability"] is None:
            notes.append("device %s%s: memory unknown (%s); declare it in %s, e.g. %s"
                         % (d["device_id"], " (%s)" % d["name"] if d["name"] else "",
                            d["memory_note"] or "not in the PCI id table",
                            PCI_IDS_VAR, PCI_IDS_EXAMPLE.replace("0x29ff", d["device_id"])))
        elif d["memory_note"]:
            notes.append("device %s (%s): %d MiB assumed: %s"
                         % (d["device_id"], d["name"], d["memory_total_mib"],
                            d["memory_note"]))
    return notes


def _no_driver(pci: List[Dict], why: str) -> Dict:
    names = ", ".join("%s (%s)" % (d["name"] or "device " + d["device_id"], d["pci_bus_id"])
                      for d in pci)
    message = "NVIDIA GPU on the PCI bus (%s) but %s: run the nvidia_driver role first" \
        % (names, why)
    facts = empty_facts("no_driver", "; ".join([message] + _pci_notes(pci)))
    facts["pci_devices"] = pci
    facts["gpus"] = _pci_gpus(pci)
    return _finish(facts)


def _gather(run: Runner, nvidia_smi: Optional[str], sysfs_root: str,
            pci_ids: Mapping[str, PciDevice], proc_root: str = "/proc") -> Dict:
    pci = scan_pci(sysfs_root, pci_ids)
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
    bundle_memory(run, nvidia_smi, gpus, proc_root)

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


# --- GPU metrics for Prometheus (node-exporter's textfile collector) --------------------------
#: What the metrics collector asks nvidia-smi (`--format=csv,noheader,nounits`).
METRIC_FIELDS: Tuple[str, ...] = (
    "index", "uuid", "name", "pci.bus_id", "memory.total", "memory.used", "utilization.gpu",
    "temperature.gpu", "power.draw", "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total", "clocks_event_reasons.hw_thermal_slowdown",
)
#: The driver's kernel message for a GPU error, e.g. `NVRM: Xid (PCI:0000:00:06): 79, pid=...,
#: GPU has fallen off the bus.`: domain:bus:device of the GPU, then the Xid code.
XID_RE = re.compile(
    r"NVRM: Xid \(PCI:([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\): (\d+)")
_MIB = 1024 * 1024
_SERIES = (  # (metric, help, key of parse_metrics_csv's dict; None: the info series)
    ("llm_gpu_info", "One per GPU nvidia-smi lists: its name and PCI address.", None),
    ("llm_gpu_memory_total_bytes", "GPU memory size.", "memory_total_bytes"),
    ("llm_gpu_memory_used_bytes", "GPU memory in use, by every process.", "memory_used_bytes"),
    ("llm_gpu_utilization_ratio", "Share of the last sample period a kernel ran (0-1).",
     "utilization_ratio"),
    ("llm_gpu_temperature_celsius", "GPU core temperature.", "temperature_celsius"),
    ("llm_gpu_power_watts", "Power draw.", "power_watts"),
    ("llm_gpu_ecc_corrected_errors", "Corrected ECC errors since the driver loaded.",
     "ecc_corrected_errors"),
    ("llm_gpu_ecc_uncorrected_errors", "Uncorrected ECC errors since the driver loaded.",
     "ecc_uncorrected_errors"),
    ("llm_gpu_thermal_slowdown", "1 while the GPU slows its clocks because it is too hot.",
     "thermal_slowdown"),
)


def bus_key(bus_id: str) -> str:
    """One spelling for a PCI address: nvidia-smi's `00000000:00:06.0` and the kernel's
    `0000:00:06` are both `0000:00:06`."""
    match = re.match(r"^(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})",
                     bus_id.strip())
    if not match:
        return bus_id.strip().lower()
    domain = (match.group(1) or "0000")[-4:]
    return ("%s:%s:%s" % (domain, match.group(2), match.group(3))).lower()


def _float_field(value: Optional[str], field: str, line_no: int) -> Optional[float]:
    if value is None:
        return None
    try:
        return float(value.split()[0])  # tolerate units ("93.50 W") when they were not stripped
    except (ValueError, IndexError):
        raise GpuParseError("nvidia-smi line %d: %s is %r, expected a number"
                            % (line_no, field, value)) from None


def _scaled(value: Optional[float], factor: float) -> Optional[float]:
    return None if value is None else value * factor


def parse_metrics_csv(text: str) -> List[Dict]:
    """Parse `nvidia-smi --query-gpu=<METRIC_FIELDS> --format=csv,noheader,nounits` into one
    dict per GPU in base units (bytes, ratio 0-1, degrees Celsius, watts); a value the card
    does not report ([N/A]) is None."""
    gpus = []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for line_no, line in enumerate(lines, start=1):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(METRIC_FIELDS):
            raise GpuParseError(
                "nvidia-smi line %d has %d comma-separated fields, expected %d (%s): %r"
                % (line_no, len(parts), len(METRIC_FIELDS), ", ".join(METRIC_FIELDS),
                   line[:200]))
        raw = {f: _clean(v) for f, v in zip(METRIC_FIELDS, parts)}
        index = _int_field(raw["index"], "index", line_no)
        if index is None:
            raise GpuParseError("nvidia-smi line %d: no GPU index: %r" % (line_no, line[:200]))
        num = {f: _float_field(raw[f], f, line_no) for f in METRIC_FIELDS[4:-1]}
        slowdown = raw["clocks_event_reasons.hw_thermal_slowdown"]
        gpus.append({
            "index": index,
            "uuid": raw["uuid"],
            "name": raw["name"],
            "pci_bus_id": raw["pci.bus_id"],
            "memory_total_bytes": _scaled(num["memory.total"], _MIB),
            "memory_used_bytes": _scaled(num["memory.used"], _MIB),
            "utilization_ratio": _scaled(num["utilization.gpu"], 0.01),
            "temperature_celsius": num["temperature.gpu"],
            "power_watts": num["power.draw"],
            "ecc_corrected_errors": num["ecc.errors.corrected.volatile.total"],
            "ecc_uncorrected_errors": num["ecc.errors.uncorrected.volatile.total"],
            "thermal_slowdown": None if slowdown is None else slowdown.lower() == "active",
        })
    return gpus


def count_xids(kernel_log: str) -> Dict[str, Dict[str, Any]]:
    """Xid errors in a kernel log per GPU address (bus_key): {"count": n, "last": latest code}."""
    seen: Dict[str, Dict[str, Any]] = {}
    for match in XID_RE.finditer(kernel_log):
        key = bus_key("%s:%s:%s" % match.group(1, 2, 3))
        entry = seen.setdefault(key, {"count": 0, "last": None})
        entry["count"] += 1
        entry["last"] = int(match.group(4))
    return seen


def _label_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _block(name: str, help_text: str, rows: List[str], kind: str = "gauge") -> List[str]:
    if not rows:
        return []
    return ["# HELP %s %s" % (name, help_text), "# TYPE %s %s" % (name, kind)] + rows


def metrics_textfile(gpus: Optional[List[Dict]], xids: Mapping[str, Mapping[str, Any]],
                     error: Optional[str] = None) -> str:
    """Prometheus text exposition of parse_metrics_csv() and count_xids(), for node-exporter's
    textfile collector. gpus None: nvidia-smi failed (error says how): llm_gpu_collector_up is
    0 and only the Xid counts are written, so an Xid 79 (a GPU that fell off the bus, which
    nvidia-smi no longer lists) still shows."""
    out = ["# collector error: %s" % error.replace("\n", " ")[:300]] if error else []
    out += _block("llm_gpu_collector_up", "1 when nvidia-smi answered and was read, else 0.",
                  ["llm_gpu_collector_up %d" % (0 if gpus is None else 1)])
    gpus = gpus or []
    for name, help_text, key in _SERIES:
        rows = []
        for gpu in gpus:
            labels = 'gpu="%d",uuid="%s"' % (gpu["index"], _label_value(gpu["uuid"] or ""))
            if key is None:
                rows.append('%s{%s,name="%s",pci_bus_id="%s"} 1' % (
                    name, labels, _label_value(gpu["name"] or ""),
                    bus_key(gpu["pci_bus_id"] or "")))
            elif gpu[key] is not None:  # not reported by the card: no sample, not a made-up 0
                rows.append("%s{%s} %s" % (name, labels, _number(gpu[key])))
        out += _block(name, help_text, rows)
    # Every GPU nvidia-smi lists gets an Xid count, 0 included (so increase() sees the first
    # one), and so does an address only the kernel log names.
    counts = {bus_key(g["pci_bus_id"]): {"count": 0, "last": None} for g in gpus if g["pci_bus_id"]}
    counts.update({k: dict(v) for k, v in xids.items()})
    out += _block("llm_gpu_xid_errors_total", "Xid errors the NVIDIA driver logged since boot.",
                  ['llm_gpu_xid_errors_total{pci_bus_id="%s"} %d' % (k, counts[k]["count"])
                   for k in sorted(counts)], kind="counter")
    out += _block("llm_gpu_xid_last_code", "Code of the latest Xid error (NVIDIA's Xid table).",
                  ['llm_gpu_xid_last_code{pci_bus_id="%s"} %d' % (k, counts[k]["last"])
                   for k in sorted(counts) if counts[k]["last"] is not None])
    return "\n".join(out) + "\n"


def _run_or_missing(run: Runner, argv: List[str]) -> Tuple[int, str, str]:
    try:
        return run(argv)
    except OSError as exc:  # not installed
        return 127, "", "%s: %s" % (argv[0], exc)


def collect_metrics(run: Runner, nvidia_smi: str = "nvidia-smi",
                    journalctl: str = "journalctl") -> str:
    """One textfile collector pass: nvidia-smi's metrics and this boot's Xid errors."""
    rc, out, _err = _run_or_missing(run, [journalctl, "--dmesg", "--boot", "--output=cat",
                                          "--no-pager", "--grep=NVRM: Xid"])
    xids = count_xids(out or "") if rc == 0 else {}  # rc 1: no entry matched
    rc, out, err = _run_or_missing(run, [nvidia_smi] + query_args(METRIC_FIELDS))
    if rc != 0:
        return metrics_textfile(None, xids, error="%s exited %d: %s"
                                % (nvidia_smi, rc, (err or out or "").strip()))
    try:
        return metrics_textfile(parse_metrics_csv(out), xids)
    except GpuParseError as exc:
        return metrics_textfile(None, xids, error=str(exc))
