"""The nvidia_driver role's decision (llm_driver + the driver_plan module).

Every path molecule/driver/side_effect.yml walks on its Debian 12 host is pinned here with the
same recorded nvidia-smi outputs (tests/unit/fixtures/nvidia-smi/), plus the paths CI cannot run
(Ubuntu precompiled modules, OS and source refusals; RHEL/Rocky are refused: the bundle is apt-only).
"""

import re

import driver_plan as driver_plan_module
import pytest
from ansible.module_utils import llm_driver, llm_gpu, llm_planner
from ansible.module_utils.llm_driver import DriverError, check, decide

from conftest import SYSFS, fixture_runner

KERNEL = "6.8.0-ci"
DEBIAN = {"distribution": "Debian", "distribution_version": "12.8",
          "distribution_major_version": "12", "kernel": KERNEL}
UBUNTU = {"distribution": "Ubuntu", "distribution_version": "24.04",
          "distribution_major_version": "24", "kernel": KERNEL}
ROCKY = {"distribution": "Rocky", "distribution_version": "9.4",
         "distribution_major_version": "9", "kernel": KERNEL}
SB_ON = {"rc": 0, "stdout": "SecureBoot enabled", "stderr": ""}
SB_OFF = {"rc": 0, "stdout": "SecureBoot disabled", "stderr": ""}
HEADERS = "linux-headers-" + KERNEL
DEBIAN_535 = ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"]


def facts(card, sysfs="rtx4090"):
    return llm_gpu.gather(fixture_runner(card), "/usr/bin/nvidia-smi", str(SYSFS / sysfs))


def apt(*found, missing=()):
    """apt-cache show loop results: rc 0 for found packages, 100 for missing ones."""
    return [{"item": p, "rc": 0} for p in found] + [{"item": p, "rc": 100} for p in missing]


def run(branch, card=None, host=DEBIAN, sysfs="rtx4090", sb=SB_OFF, found=(), check_mode=False,
        **params):
    params = dict(params, branch=branch)
    gpu = facts(card, sysfs) if card else None
    return decide(params, host, gpu_facts=gpu, sb_probe=sb, apt_results=apt(*found),
                  check_mode=check_mode)


# --- branch, OS and source: refused before any probe ------------------------------------------

def test_branch_470_is_refused_with_the_branches_to_set():
    with pytest.raises(DriverError) as exc:
        check({"branch": 470}, DEBIAN)
    assert str(exc.value) == (
        "nvidia_driver_branch 470 is not supported: the bundle needs driver branch 535 or newer "
        "(set nvidia_driver_branch: 580 for vLLM's default CUDA 13 wheels, or 535 for the +cu129 "
        "wheels).")


@pytest.mark.parametrize("branch,ok", [(534, False), (535, True), ("535", True), (536, True),
                                       ("580.95", False), ("latest", False), ("", False)])
def test_branch_boundary_and_format(branch, ok):
    assert (llm_driver.branch_error(branch) is None) is ok


@pytest.mark.parametrize("host,key", [
    (DEBIAN, "Debian-12"), (UBUNTU, "Ubuntu"), (dict(UBUNTU, distribution_version="22.04"), "Ubuntu"),
    (ROCKY, None), (dict(ROCKY, distribution="RedHat"), None),
    (dict(DEBIAN, distribution_major_version="11", distribution_version="11.9"), None),
    (dict(UBUNTU, distribution_version="20.04"), None),
])
def test_supported_systems(host, key):
    assert llm_driver.os_key(host) == key


def test_unsupported_os_names_the_supported_ones():
    host = dict(UBUNTU, distribution_version="20.04")
    with pytest.raises(DriverError, match=r"^Ubuntu 20\.04 is not supported by nvidia_driver: "
                       r"Debian 12 and Ubuntu 22\.04/24\.04 are\.$"):
        check({"branch": 580}, host)


def test_rhel_is_refused_before_any_probe():
    with pytest.raises(DriverError, match=r"^Rocky 9\.4 is not supported by nvidia_driver: "):
        check({"branch": 580}, ROCKY)


@pytest.mark.parametrize("branch,modules", [(535, "proprietary"), (559, "proprietary"),
                                            (560, "open"), (580, "open")])
def test_auto_modules_are_open_from_560(branch, modules):
    assert check({"branch": branch}, DEBIAN)["modules"] == modules


@pytest.mark.parametrize("host,branch,source", [
    (DEBIAN, 535, "distro"), (DEBIAN, 580, "cuda_repo"), (UBUNTU, 570, "distro"),
    (UBUNTU, 575, "cuda_repo"),
])
def test_auto_source_is_the_distro_when_it_ships_the_branch(host, branch, source):
    assert check({"branch": branch}, host)["source"] == source


def test_distro_source_without_that_branch_is_refused():
    with pytest.raises(DriverError) as exc:
        check({"branch": 580, "package_source": "distro"}, DEBIAN)
    assert str(exc.value) == (
        "Debian 12.8 ships no open driver of branch 580 (line current; distro branches: 535). Set "
        "nvidia_driver_package_source: cuda_repo (NVIDIA's repo), another nvidia_driver_branch, "
        "or nvidia_driver_kernel_modules: proprietary.")


def test_debian_tesla_line_has_no_open_modules():
    with pytest.raises(DriverError, match="ships no open driver of branch 535 .line tesla"):
        check({"branch": 535, "kernel_modules": "open", "debian_line": "tesla"}, DEBIAN)


@pytest.mark.parametrize("host,params,probe", [
    (DEBIAN, {"branch": 535}, [HEADERS, "nvidia-kernel-dkms"]),
    (DEBIAN, {"branch": 580}, [HEADERS]),
    (UBUNTU, {"branch": 580}, [HEADERS, "nvidia-headless-580-server-open",
                               "linux-modules-nvidia-580-server-open-" + KERNEL]),
    (UBUNTU, {"branch": 570, "ubuntu_precompiled": False}, [HEADERS, "nvidia-headless-570-server-open"]),
])
def test_packages_probed_in_the_archive(host, params, probe):
    assert check(params, host)["probe_packages"] == probe


# --- decisions from recorded nvidia-smi outputs (the molecule side_effect cases) ---------------

def test_suitable_driver_is_kept():
    out = run(580, "rtx4090", found=[HEADERS])
    assert out == {"refusal": "", "decision": {
        "action": "skip",
        "reason": "working driver 580.95.05 (branch 580 >= 580): nothing to install",
        "gpu_status": "ok", "gpu_message": "1 GPU(s): NVIDIA GeForce RTX 4090 24564 MiB",
        "installed_major": 580, "branch": 580, "source": "cuda_repo", "modules": "open",
        "precompiled": False, "dkms": True, "headers_package": HEADERS, "headers_available": True,
        "packages": ["nvidia-open-580"], "secure_boot": "disabled"}}


@pytest.mark.parametrize("card,branch,action", [
    ("t4", 535, "skip"), ("t4", 536, "install"),          # 535.261.03: at the branch, one above
    ("h200", 580, "skip"), ("h200", 581, "install"),      # 580.159.04
    ("driver470", 470 + 65, "install"),
])
def test_installed_major_against_the_branch_boundary(card, branch, action):
    assert run(branch, card, check_mode=True)["decision"]["action"] == action


def test_old_535_plans_nvidia_open_580_from_nvidias_repo_then_stops_without_headers():
    out = run(580, "t4")
    d = out["decision"]
    assert (d["action"], d["source"], d["modules"], d["packages"]) == \
        ("install", "cuda_repo", "open", ["nvidia-open-580"])
    assert d["reason"] == "driver 535.261.03 is older than branch 580: upgrade planned"
    assert out["refusal"] == (
        HEADERS + " is not in the package sources: DKMS cannot build the NVIDIA module for the "
        "running kernel " + KERNEL + ". Boot a distribution kernel (Debian: linux-image-amd64; "
        "Ubuntu: linux-generic) and run again.")


def test_old_470_plans_debians_packages_then_stops_without_headers():
    out = run(535, "driver470", found=["nvidia-kernel-dkms"])
    d = out["decision"]
    assert (d["action"], d["source"], d["packages"], d["headers_available"]) == \
        ("install", "distro", DEBIAN_535, False)
    assert "470.256.02 is older than branch 535" in d["reason"]
    assert out["refusal"].startswith(HEADERS + " is not in the package sources")


def test_old_470_with_headers_goes_on():
    assert run(535, "driver470", found=["nvidia-kernel-dkms", HEADERS])["refusal"] == ""


def test_debian_without_non_free_stops_before_the_headers():
    out = run(535, "driver470")
    assert out["refusal"] == (
        "nvidia-kernel-dkms is not in the apt sources. On Debian it lives in non-free: enable the "
        "components contrib non-free non-free-firmware (the base role does with "
        "base_debian_components), then run again.")


def test_check_mode_needs_neither_archive_nor_headers():
    assert run(535, "driver470", check_mode=True)["refusal"] == ""


def test_image_build_needs_no_headers_but_the_archive():
    assert run(535, image_build=True, found=["nvidia-kernel-dkms"])["refusal"] == ""
    assert run(535, image_build=True)["refusal"].startswith("nvidia-kernel-dkms is not in the apt")


def test_mismatch_requests_a_reboot():
    out = run(535, "mismatch")
    assert (out["decision"]["action"], out["decision"]["gpu_status"], out["refusal"]) == \
        ("reboot", "driver_mismatch", "")
    assert out["decision"]["reason"] == ("driver/library version mismatch: the driver changed "
                                         "without a reboot, reboot requested")


def test_secure_boot_with_dkms_stops_with_three_ways_out():
    out = run(535, "no-driver-smi", sb=SB_ON, found=DEBIAN_535 + [HEADERS])
    d = out["decision"]
    assert (d["action"], d["reason"], d["secure_boot"], d["dkms"]) == \
        ("install", "GPU without a working driver: install planned", "enabled", True)
    assert out["refusal"] == (
        "Secure Boot is enabled and the NVIDIA module would be built by DKMS: an unsigned module "
        "does not load. Choose one: (1) Ubuntu only: nvidia_driver_secure_boot: signed_precompiled "
        "with nvidia_driver_package_source: distro, which uses Canonical's signed "
        "linux-modules-nvidia-535-server-<kernel> (run a kernel they exist for); "
        "(2) nvidia_driver_secure_boot: mok: DKMS signs the module with its MOK key "
        "(/var/lib/dkms/mok.pub); then run 'mokutil --import /var/lib/dkms/mok.pub', reboot and "
        "confirm the key in the MOK manager on the console; (3) turn Secure Boot off in the "
        "firmware.")


def test_signed_precompiled_on_debian_names_the_kernel():
    out = run(535, "no-driver-smi", sb=SB_ON, found=DEBIAN_535 + [HEADERS],
              secure_boot="signed_precompiled")
    assert out["refusal"].startswith(
        "Secure Boot is enabled and the NVIDIA module would be built by DKMS (no signed "
        "precompiled modules for kernel %s): an unsigned module" % KERNEL)


def test_secure_boot_before_headers_and_mok_goes_on():
    assert run(535, "no-driver-smi", sb=SB_ON, found=DEBIAN_535)["refusal"].startswith("Secure Boot")
    out = run(535, sb=SB_ON, found=DEBIAN_535, secure_boot="mok", image_build=True)
    assert (out["decision"]["action"], out["decision"]["secure_boot"], out["refusal"]) == \
        ("install", "enabled", "")
    assert out["decision"]["reason"] == ("image build (nvidia_driver_image_build): install without "
                                         "GPU probe or reboot")


def test_no_gpu_stops_pointing_at_image_build():
    out = run(535, "no-devices", sysfs="empty")
    assert out["decision"]["action"] == "stop"
    assert out["refusal"] == (
        "nvidia_driver: no NVIDIA GPU found (nvidia-smi: No devices were found) (gpu_facts status "
        "no_gpu). Set nvidia_driver_image_build: true to install the driver on a host or image "
        "without a GPU attached.")


def test_unreadable_nvidia_smi_stops_with_its_message_only():
    out = run(535, "garbage", sysfs="empty")
    assert out["decision"]["action"] == "stop"
    assert out["refusal"].startswith("nvidia_driver: cannot parse nvidia-smi output: ")
    assert out["refusal"].endswith("(gpu_facts status error).")


@pytest.mark.parametrize("probe,state", [
    (SB_ON, "enabled"), (SB_OFF, "disabled"),
    ({"rc": 255, "stdout": "", "stderr": "This system doesn't support Secure Boot"}, "unknown"),
    ({"rc": 1, "stdout": "", "stderr": "EFI variables are not supported on this system"}, "disabled"),
    ({"rc": 2, "stdout": "", "stderr": ""}, "unknown"),   # mokutil missing
    (None, "unknown"),
])
def test_secure_boot_state(probe, state):
    assert llm_driver.secure_boot_state(probe) == state


# --- paths CI cannot run: Ubuntu --------------------------------------------------------

PRECOMPILED = "linux-modules-nvidia-580-server-open-" + KERNEL


def test_ubuntu_signed_precompiled_modules_need_no_dkms_even_under_secure_boot():
    out = run(580, "no-driver-smi", host=UBUNTU, sb=SB_ON,
              found=["nvidia-headless-580-server-open", PRECOMPILED])
    d = out["decision"]
    assert (d["source"], d["precompiled"], d["dkms"], d["headers_package"], out["refusal"]) == \
        ("distro", True, False, "", "")
    assert d["packages"] == ["nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server",
                             PRECOMPILED]


def test_ubuntu_without_precompiled_modules_falls_back_to_dkms():
    out = run(570, "no-driver-smi", host=UBUNTU, kernel_modules="proprietary",
              found=["nvidia-headless-570-server", HEADERS])
    d = out["decision"]
    assert (d["precompiled"], d["dkms"], d["headers_package"], out["refusal"]) == \
        (False, True, HEADERS, "")
    assert d["packages"] == ["nvidia-headless-570-server", "nvidia-utils-570-server"]


def test_ubuntu_precompiled_switched_off_uses_dkms():
    out = run(580, "no-driver-smi", host=UBUNTU, ubuntu_precompiled=False,
              found=["nvidia-headless-580-server-open", PRECOMPILED, HEADERS])
    assert out["decision"]["packages"] == ["nvidia-headless-580-server-open",
                                           "nvidia-utils-580-server"]


def test_debian_tesla_line_names_the_branch():
    d = run(535, "driver470", found=["nvidia-tesla-535-kernel-dkms", HEADERS],
            debian_line="tesla")["decision"]
    assert d["packages"] == ["nvidia-tesla-535-kernel-dkms", "nvidia-tesla-535-smi",
                             "libnvidia-tesla-535-cuda1", "nvidia-persistenced"]


# --- one source of truth, the module wrapper -------------------------------------------------------

def test_planner_uses_the_driver_thresholds():
    assert llm_planner.BUNDLE_MIN_DRIVER == llm_driver.MIN_BRANCH == 535
    assert llm_planner.CUDA13_MIN_DRIVER == llm_driver.CUDA13_MIN_DRIVER == 580
    assert llm_planner.LAST_DRIVER_FOR_PRE_TURING == llm_driver.LAST_DRIVER_FOR_PRE_TURING
    # imported, not a second copy that could drift
    source = open(llm_planner.__file__).read()
    assert not re.search(r"^(BUNDLE_MIN_DRIVER|CUDA1[23]_MIN_DRIVER|LAST_DRIVER_FOR_PRE_TURING) *=",
                         source, re.M)


def test_module_check_stage_fails_with_the_branch_message(run_module):
    out = run_module(driver_plan_module, {"stage": "check", "branch": 470, "host": DEBIAN})
    assert out["failed"] is True
    assert out["msg"].startswith("nvidia_driver_branch 470 is not supported")


def test_module_check_stage_returns_what_to_probe(run_module):
    out = run_module(driver_plan_module, {"stage": "check", "branch": "535", "host": DEBIAN})
    assert (out["modules"], out["source"], out["probe_packages"]) == \
        ("proprietary", "distro", [HEADERS, "nvidia-kernel-dkms"])


def test_module_decide_sets_the_fact_and_keeps_it_on_a_refusal(run_module):
    out = run_module(driver_plan_module, {
        "branch": 535, "host": DEBIAN, "gpu_facts": facts("no-driver-smi"),
        "secure_boot_probe": SB_ON, "apt_probe": apt(*DEBIAN_535)})
    assert "failed" not in out
    assert out["ansible_facts"]["nvidia_driver_decision"]["action"] == "install"
    assert out["refusal"].startswith("Secure Boot is enabled")
    assert out["summary"] == (
        "nvidia_driver: install: GPU without a working driver: install planned (source distro, "
        "proprietary modules, DKMS, Secure Boot enabled) packages: " + " ".join(DEBIAN_535))


def test_module_decide_in_check_mode_skips_the_headers_check(run_module):
    # run_module runs modules in check mode, like ansible-playbook --check.
    out = run_module(driver_plan_module, {
        "branch": 580, "host": DEBIAN, "gpu_facts": facts("t4"), "secure_boot_probe": SB_OFF})
    assert (out["ansible_facts"]["nvidia_driver_decision"]["action"], out["refusal"]) == \
        ("install", "")
