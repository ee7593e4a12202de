# -*- coding: utf-8 -*-
"""NVIDIA driver decision of the nvidia_driver role: what to install, keep or refuse.

Pure Python (no Ansible imports). The module plugins/modules/driver_plan.py passes the role's
variables, the host's facts and the read-only probes in (gpu_facts, `mokutil --sb-state`,
`apt-cache show`); tests pass recorded outputs (tests/unit/fixtures/nvidia-smi/).

Two steps, because what the archive is probed for depends on the first:
- check(): validate the branch, the OS and the package source before any probe or change;
  returns the resolved modules/source and the packages to probe, or raises DriverError.
- decide(): the decision dict the role keeps as the fact nvidia_driver_decision (action
  skip|install|reboot|stop, reason, source, modules, dkms, packages, secure_boot, ...) and
  the refusal text ("" when the role may go on). A refusal never hides the decision: the
  role sets the fact first, then stops with the text.

Driver branch thresholds (FACTS.md) live here only; llm_planner imports them.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

#: The oldest branch the bundle supports (vLLM's +cu129 wheels need >= 525; the line is 535).
MIN_BRANCH = 535
#: vLLM's default PyPI wheels are CUDA 13.0 builds: driver >= 580.
CUDA13_MIN_DRIVER = 580
#: CUDA 12.x runtime works on driver >= 525 (minor-version compatibility).
CUDA12_MIN_DRIVER = 525
#: NVIDIA's 580 branch is the last with Maxwell/Pascal/Volta support.
LAST_DRIVER_FOR_PRE_TURING = 580
#: NVIDIA's default kernel modules are the open ones from branch 560 on.
OPEN_MODULES_SINCE = 560

#: Branches the distributions' own archives ship (Debian 12 non-free: 535 only; Ubuntu's
#: -server packages).
DISTRO_BRANCHES: Dict[str, List[int]] = {
    "Debian-12": [535],
    "Ubuntu": [535, 550, 570, 580],
}

#: Debian 12: headless subsets of nvidia-driver / nvidia-tesla-<branch>-driver (no X server):
#: kernel module (DKMS), nvidia-smi, libcuda, persistence daemon. {b} = branch.
DEBIAN_LINES: Dict[str, Dict[str, List[str]]] = {
    "current": {
        "proprietary": ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"],
        "open": ["nvidia-open-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"],
    },
    "tesla": {
        "proprietary": ["nvidia-tesla-{b}-kernel-dkms", "nvidia-tesla-{b}-smi",
                        "libnvidia-tesla-{b}-cuda1", "nvidia-persistenced"],
        "open": [],
    },
}

SECURE_BOOT_POLICIES = ("fail", "signed_precompiled", "mok")

_ACTIONS = {"image_build": "install", "current": "skip", "old": "install",
            "no_driver": "install", "driver_mismatch": "reboot"}


class DriverError(Exception):
    """A refusal before any probe: the message says what is wrong and what to set."""


def os_key(host: Mapping[str, Any]) -> Optional[str]:
    """Debian-12 | Ubuntu for the supported systems, None otherwise (the bundle is apt-only)."""
    dist = str(host.get("distribution", ""))
    if dist == "Debian" and str(host.get("distribution_major_version")) == "12":
        return "Debian-12"
    if dist == "Ubuntu" and str(host.get("distribution_version")) in ("22.04", "24.04"):
        return "Ubuntu"
    return None


def branch_error(branch: Any, min_branch: int = MIN_BRANCH) -> Optional[str]:
    """The refusal of an unusable nvidia_driver_branch, or None."""
    if re.match(r"^[0-9]+$", str(branch)) and int(str(branch)) >= min_branch:
        return None
    return ("nvidia_driver_branch %s is not supported: the bundle needs driver branch %d or "
            "newer (set nvidia_driver_branch: %d for vLLM's default CUDA 13 wheels, or %d for "
            "the +cu129 wheels)." % (branch, min_branch, CUDA13_MIN_DRIVER, MIN_BRANCH))


def resolve_modules(branch: int, kernel_modules: str) -> str:
    """open | proprietary; auto follows NVIDIA's default (open from 560 on)."""
    if kernel_modules != "auto":
        return kernel_modules
    return "open" if branch >= OPEN_MODULES_SINCE else "proprietary"


def resolve_source(branch: int, package_source: str, key: str) -> str:
    """distro | cuda_repo; auto takes the distribution's package when it ships the branch."""
    if package_source != "auto":
        return package_source
    return "distro" if branch in DISTRO_BRANCHES[key] else "cuda_repo"


def distro_packages(key: str, branch: int, modules: str, debian_line: str = "current",
                    precompiled: bool = False) -> List[str]:
    """The distribution's driver packages ([] when it ships none of that kind)."""
    if key == "Debian-12":
        return [p.format(b=branch) for p in DEBIAN_LINES[debian_line][modules]]
    if key == "Ubuntu":
        suffix = "-open" if modules == "open" else ""
        headless = "nvidia-headless-no-dkms-" if precompiled else "nvidia-headless-"
        return ["%s%d-server%s" % (headless, branch, suffix), "nvidia-utils-%d-server" % branch]
    return []


def precompiled_packages(key: str, branch: int, modules: str, kernel: str) -> List[str]:
    """Canonical-signed modules for the running kernel (Ubuntu only; work under Secure Boot)."""
    if key != "Ubuntu":
        return []
    suffix = "-open" if modules == "open" else ""
    return ["linux-modules-nvidia-%d-server%s-%s" % (branch, suffix, kernel)]


def cuda_repo_packages(branch: int, modules: str) -> List[str]:
    """NVIDIA's repo: the apt meta-package of the branch."""
    return ["%s%d" % ("nvidia-open-" if modules == "open" else "cuda-drivers-", branch)]


def headers_package(kernel: str) -> str:
    return "linux-headers-%s" % kernel


def check(params: Mapping[str, Any], host: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate before any probe; return modules, source and the packages to probe.

    params: branch, kernel_modules, package_source, debian_line, ubuntu_precompiled.
    host: distribution, distribution_version, distribution_major_version, kernel.
    """
    error = branch_error(params["branch"])
    if error:
        raise DriverError(error)
    branch = int(str(params["branch"]))
    key = os_key(host)
    if key is None:
        raise DriverError("%s %s is not supported by nvidia_driver: Debian 12 and Ubuntu "
                          "22.04/24.04 are." % (host.get("distribution"),
                                                host.get("distribution_version")))
    modules = resolve_modules(branch, params.get("kernel_modules", "auto"))
    source = resolve_source(branch, params.get("package_source", "auto"), key)
    line = params.get("debian_line", "current")
    distro = distro_packages(key, branch, modules, line)
    if source == "distro" and not (branch in DISTRO_BRANCHES[key] and distro):
        raise DriverError(
            "%s %s ships no %s driver of branch %d (line %s; distro branches: %s). Set "
            "nvidia_driver_package_source: cuda_repo (NVIDIA's repo), another "
            "nvidia_driver_branch, "
            "or nvidia_driver_kernel_modules: proprietary."
            % (host.get("distribution"), host.get("distribution_version"), modules, branch, line,
               ", ".join(str(b) for b in DISTRO_BRANCHES[key]) or "none"))
    kernel = str(host.get("kernel", ""))
    probe: List[str] = [headers_package(kernel)]
    if source == "distro":
        probe.append(distro[0])
        if params.get("ubuntu_precompiled", True):
            probe.extend(precompiled_packages(key, branch, modules, kernel))
    return {"os": key, "branch": branch, "modules": modules, "source": source,
            "probe_packages": list(dict.fromkeys(probe))}


def secure_boot_state(probe: Optional[Mapping[str, Any]]) -> str:
    """enabled | disabled | unknown from `mokutil --sb-state` (rc, stdout, stderr)."""
    probe = probe or {}
    stdout = str(probe.get("stdout") or "")
    if "SecureBoot enabled" in stdout:
        return "enabled"
    if probe.get("rc", 1) == 0 or "not supported" in stdout + str(probe.get("stderr") or ""):
        return "disabled"
    return "unknown"


def found_packages(apt_results: Optional[Sequence[Mapping[str, Any]]]) -> List[str]:
    """Packages `apt-cache show` found (the loop results whose rc is 0)."""
    return [r.get("item") for r in (apt_results or []) if r.get("rc", None) == 0]


def _stop_message(decision: Mapping[str, Any]) -> str:
    text = "nvidia_driver: %s (gpu_facts status %s)." % (decision["reason"], decision["gpu_status"])
    if decision["gpu_status"] == "no_gpu":
        text += (" Set nvidia_driver_image_build: true to install the driver on a host or image "
                 "without a GPU attached.")
    return text


def _secure_boot_message(policy: str, branch: int, kernel: str) -> str:
    why = (" (no signed precompiled modules for kernel %s)" % kernel
           if policy == "signed_precompiled" else "")
    return (
        "Secure Boot is enabled and the NVIDIA module would be built by DKMS%s: an unsigned module "
        "does not load. Choose one: (1) Ubuntu only: nvidia_driver_secure_boot: signed_precompiled "
        "with nvidia_driver_package_source: distro, which uses Canonical's signed "
        "linux-modules-nvidia-%d-server-<kernel> (run a kernel they exist for); "
        "(2) nvidia_driver_secure_boot: mok: DKMS signs the module with its MOK key "
        "(/var/lib/dkms/mok.pub); then run 'mokutil --import /var/lib/dkms/mok.pub', reboot and "
        "confirm the key in the MOK manager on the console; (3) turn Secure Boot off in the "
        "firmware." % (why, branch))


def decide(params: Mapping[str, Any], host: Mapping[str, Any],
           gpu_facts: Optional[Mapping[str, Any]] = None,
           sb_probe: Optional[Mapping[str, Any]] = None,
           apt_results: Optional[Sequence[Mapping[str, Any]]] = None,
           check_mode: bool = False) -> Dict[str, Any]:
    """The driver decision and its refusal ("" when the role may go on).

    params: as check(), plus secure_boot (fail|signed_precompiled|mok) and image_build.
    gpu_facts: the gpu_facts fact (ignored for image builds). sb_probe: mokutil's rc/stdout/
    stderr. apt_results: the `apt-cache show` loop results. check_mode: the
    archive and headers are not required (nothing would be installed).
    Returns {"decision": {...}, "refusal": str}. Raises DriverError as check() does.
    """
    plan = check(params, host)
    key, branch, modules, source = plan["os"], plan["branch"], plan["modules"], plan["source"]
    kernel = str(host.get("kernel", ""))
    image_build = bool(params.get("image_build"))
    found = found_packages(apt_results)

    gpu = (dict(status="image_build", message="image build: GPU not probed") if image_build
           else dict(gpu_facts or {"status": "error", "message": "gpu_facts not given"}))
    status = gpu.get("status")
    major = int(gpu.get("driver_major") or 0)
    if image_build:
        state = "image_build"
    elif status == "ok":
        state = "current" if major >= branch else "old"
    else:
        state = str(status)
    action = _ACTIONS.get(state, "stop")
    version = gpu.get("driver_version") or ""
    reasons = {
        "image_build": "image build (nvidia_driver_image_build): "
                       "install without GPU probe or reboot",
        "current": "working driver %s (branch %d >= %d): nothing to install"
                   % (version, major, branch),
        "old": "driver %s is older than branch %d: upgrade planned" % (version, branch),
        "no_driver": "GPU without a working driver: install planned",
        "driver_mismatch": "driver/library version mismatch: the driver changed without a reboot, "
                           "reboot requested",
    }
    reason = reasons.get(state, gpu.get("message", state))

    compiled = precompiled_packages(key, branch, modules, kernel)
    precompiled = bool(source == "distro" and params.get("ubuntu_precompiled", True) and compiled
                       and all(p in found for p in compiled))
    headers = headers_package(kernel)
    if precompiled:
        packages = distro_packages(key, branch, modules, precompiled=True) + compiled
    elif source == "distro":
        packages = distro_packages(key, branch, modules, params.get("debian_line", "current"))
    else:
        packages = cuda_repo_packages(branch, modules)
    secure_boot = secure_boot_state(sb_probe)
    decision = {
        "action": action,
        "reason": reason,
        "gpu_status": status,
        "gpu_message": gpu.get("message", ""),
        "installed_major": gpu.get("driver_major"),
        "branch": branch,
        "source": source,
        "modules": modules,
        "precompiled": precompiled,
        "dkms": not precompiled,
        "headers_package": "" if precompiled else headers,
        "headers_available": headers in found,
        "packages": packages,
        "secure_boot": secure_boot,
    }

    policy = params.get("secure_boot", "fail")
    install = action == "install"
    first = distro_packages(key, branch, modules, params.get("debian_line", "current"))[:1]
    if action == "stop":
        refusal = _stop_message(decision)
    elif (install and not check_mode and source == "distro"
          and (first[0] if first else "") not in found):
        refusal = ("%s is not in the apt sources. On Debian it lives in non-free: enable the "
                   "components contrib non-free non-free-firmware (the base role does with "
                   "base_debian_components), then run again." % (first[0] if first else ""))
    elif install and secure_boot == "enabled" and not precompiled and policy != "mok":
        refusal = _secure_boot_message(policy, branch, kernel)
    elif (install and not check_mode and not image_build and not precompiled
          and not decision["headers_available"]):
        refusal = ("%s is not in the package sources: DKMS cannot build the NVIDIA module for the "
                   "running kernel %s. Boot a distribution kernel (Debian: linux-image-amd64; "
                   "Ubuntu: linux-generic) and run again." % (headers, kernel))
    else:
        refusal = ""
    return {"decision": decision, "refusal": refusal}


def summary(decision: Mapping[str, Any]) -> str:
    """One line for the role's output."""
    text = "nvidia_driver: %s: %s (source %s, %s modules, %s, Secure Boot %s)" % (
        decision["action"], decision["reason"], decision["source"], decision["modules"],
        "DKMS" if decision["dkms"] else "precompiled", decision["secure_boot"])
    if decision["action"] == "install":
        text += " packages: " + " ".join(decision["packages"])
    return text
