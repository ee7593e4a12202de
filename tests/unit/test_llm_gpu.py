"""nvidia-smi parsing and the gpu_facts module, against recorded outputs."""

import os

import pytest

from ansible.module_utils import llm_gpu

import gpu_facts as gpu_facts_module
from conftest import NVSMI, SYSFS, fixture_runner, read_fixture

EMPTY_SYS = str(SYSFS / "empty")


def facts_for(card, sysfs=EMPTY_SYS):
    return llm_gpu.gather(fixture_runner(card), "/usr/bin/nvidia-smi", sysfs)


# --- parsing -----------------------------------------------------------------

def test_parse_real_h200_query_recorded_on_the_device():
    gpus = llm_gpu.parse_query_csv(read_fixture("nvidia-smi", "h200", "query-gpu-facts.csv"))
    assert gpus == [{
        "index": 0, "name": "NVIDIA H200", "uuid": "GPU-530bb216-0aa9-9cbc-a02f-19515e44808f",
        "memory_total_mib": 143771, "memory_used_mib": 0, "compute_capability": "9.0",
        "pci_bus_id": "00000000:00:06.0", "mig_mode": "Disabled",
        "driver_version": "580.159.04",
    }]


def test_parse_the_shared_real_query_csv_with_its_own_field_order():
    fields = ("index", "name", "uuid", "memory.total", "memory.used", "memory.free",
              "compute_cap", "driver_version", "pci.bus_id")
    gpu = llm_gpu.parse_query_csv(read_fixture("nvidia-smi", "h200", "query.csv"), fields)[0]
    assert (gpu["memory_total_mib"], gpu["compute_capability"], gpu["driver_version"]) == \
        (143771, "9.0", "580.159.04")


def test_parse_version_reads_driver_and_cuda_from_nvidia_smi_version():
    assert llm_gpu.parse_version(read_fixture("nvidia-smi", "h200", "nvidia-smi-version.txt")) \
        == {"driver_version": "580.159.04", "cuda_driver_version": "13.0"}


def test_parse_version_reads_the_banner_of_plain_nvidia_smi():
    assert llm_gpu.parse_version(read_fixture("nvidia-smi", "h200", "nvidia-smi.txt")) \
        == {"driver_version": "580.159.04", "cuda_driver_version": "13.0"}


def test_parse_rejects_garbage_with_the_expected_fields_named():
    with pytest.raises(llm_gpu.GpuParseError, match="expected 9 .*compute_cap"):
        llm_gpu.parse_query_csv("Segmentation fault\n")


def test_parse_rejects_non_integer_memory():
    line = "0, NVIDIA L4, GPU-x, lots, 0, 8.9, 00000000:00:03.0, 570.172.08, [N/A]"
    with pytest.raises(llm_gpu.GpuParseError, match="memory.total is 'lots'"):
        llm_gpu.parse_query_csv(line)


def test_na_values_become_none():
    gpu = llm_gpu.parse_query_csv(read_fixture("nvidia-smi", "rtx4090", "query-gpu-facts.csv"))[0]
    assert gpu["mig_mode"] is None


def test_cc_from_name_table_knows_t4_a10g_and_l4():
    assert [llm_gpu.cc_from_name(n) for n in ("Tesla T4", "NVIDIA A10G", "NVIDIA L4",
                                              "NVIDIA GeForce RTX 3090", "Mystery GPU")] \
        == ["7.5", "8.6", "8.9", "8.6", None]


# --- gather (in-process runner over fixture files) --------------------------

def test_gather_h200_is_ok_with_cuda_13():
    f = facts_for("h200")
    assert (f["status"], f["gpu_count"], f["driver_version"], f["driver_major"],
            f["cuda_driver_version"], f["total_memory_mib"]) == \
        ("ok", 1, "580.159.04", 580, "13.0", 143771)
    assert f["gpus"][0]["compute_capability"] == "9.0"
    assert "driver_version" not in f["gpus"][0]


@pytest.mark.parametrize("card,name,mib,cc,driver,cuda", [
    ("rtx3060", "NVIDIA GeForce RTX 3060", 12288, "8.6", "550.163.01", "12.4"),
    ("rtx4090", "NVIDIA GeForce RTX 4090", 24564, "8.9", "580.95.05", "13.0"),
    ("a10g", "NVIDIA A10G", 23028, "8.6", "535.230.02", "12.2"),
    ("l4", "NVIDIA L4", 23034, "8.9", "570.172.08", "12.8"),
    ("t4", "Tesla T4", 15360, "7.5", "535.261.03", "12.2"),
    ("a100-80gb", "NVIDIA A100-SXM4-80GB", 81920, "8.0", "580.95.05", "13.0"),
])
def test_gather_single_gpu_cards(card, name, mib, cc, driver, cuda):
    f = facts_for(card)
    g = f["gpus"][0]
    assert (f["status"], g["name"], g["memory_total_mib"], g["compute_capability"],
            f["driver_version"], f["cuda_driver_version"]) == ("ok", name, mib, cc, driver, cuda)


def test_gather_two_rtx4090_sums_memory():
    f = facts_for("2x-rtx4090")
    assert (f["gpu_count"], f["total_memory_mib"], [g["index"] for g in f["gpus"]]) == \
        (2, 49128, [0, 1])


def test_gather_mixed_gpus_keeps_each_card():
    f = facts_for("mixed-4090-3060")
    assert [(g["name"], g["memory_total_mib"]) for g in f["gpus"]] == \
        [("NVIDIA GeForce RTX 4090", 24564), ("NVIDIA GeForce RTX 3060", 12288)]


def test_gather_reports_mig_mode_enabled_on_a100():
    f = facts_for("a100-mig")
    assert f["status"] == "ok"
    assert f["gpus"][0]["mig_mode"] == "Enabled"
    assert "MIG mode enabled on GPU 0" in f["message"]


def test_gather_driver_470_retries_without_compute_cap_and_maps_the_name():
    f = facts_for("driver470")
    assert (f["status"], f["driver_major"], f["cuda_driver_version"]) == ("ok", 470, "11.4")
    assert f["gpus"][0]["compute_capability"] == "7.5"
    assert "compute_cap is not a valid field" in f["message"]


def test_gather_version_mismatch_says_reboot():
    f = facts_for("mismatch")
    assert f["status"] == "driver_mismatch"
    assert "reboot" in f["message"]


def test_gather_garbage_is_status_error_not_a_crash():
    f = facts_for("garbage")
    assert f["status"] == "error"
    assert f["message"].startswith("cannot parse nvidia-smi output: nvidia-smi line 1 has 1 ")
    assert f["gpus"] == []


def test_gather_without_nvidia_smi_and_empty_pci_is_no_gpu():
    f = llm_gpu.gather(fixture_runner("h200"), None, EMPTY_SYS)
    assert f["status"] == "no_gpu"
    assert f["gpu_count"] == 0


def test_gather_nvidia_pci_device_without_nvidia_smi_is_no_driver():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "rtx4090"))
    assert f["status"] == "no_driver"
    assert [d["device_id"] for d in f["pci_devices"]] == ["0x2684"]  # HDMI audio skipped
    assert f["gpus"][0]["name"] == "NVIDIA GeForce RTX 4090"
    assert f["gpus"][0]["memory_total_mib"] == 24564
    assert "run the nvidia_driver role first" in f["message"]


def test_gather_failing_nvidia_smi_with_pci_device_is_no_driver():
    f = facts_for("no-driver-smi", str(SYSFS / "rtx4090"))
    assert f["status"] == "no_driver"
    assert "rc 9" in f["message"]


def test_gather_no_devices_found_is_no_gpu():
    assert facts_for("no-devices")["status"] == "no_gpu"


def test_gather_never_raises_when_the_runner_explodes():
    def boom(argv):
        raise RuntimeError("exec format error")
    f = llm_gpu.gather(boom, "/usr/bin/nvidia-smi", EMPTY_SYS)
    assert f["status"] == "error"
    assert "exec format error" in f["message"]


# --- the gpu_facts module end-to-end with a fake nvidia-smi script ---------------

def test_module_gpu_facts_with_fake_nvidia_smi_h200(run_module, fake_nvidia_smi):
    out = run_module(gpu_facts_module, {"nvidia_smi_path": fake_nvidia_smi("h200"),
                                        "sysfs_root": EMPTY_SYS})
    f = out["ansible_facts"]["gpu_facts"]
    assert out["changed"] is False
    assert (f["status"], f["gpus"][0]["name"], f["cuda_driver_version"]) == \
        ("ok", "NVIDIA H200", "13.0")


def test_module_gpu_facts_driver_470_fallback(run_module, fake_nvidia_smi):
    out = run_module(gpu_facts_module, {"nvidia_smi_path": fake_nvidia_smi("driver470"),
                                        "sysfs_root": EMPTY_SYS})
    f = out["ansible_facts"]["gpu_facts"]
    assert (f["status"], f["driver_version"], f["gpus"][0]["compute_capability"],
            f["cuda_driver_version"]) == ("ok", "470.256.02", "7.5", "11.4")


@pytest.mark.parametrize("card,status", [("mismatch", "driver_mismatch"), ("garbage", "error"),
                                         ("no-devices", "no_gpu"), ("a100-mig", "ok")])
def test_module_gpu_facts_statuses(run_module, fake_nvidia_smi, card, status):
    out = run_module(gpu_facts_module, {"nvidia_smi_path": fake_nvidia_smi(card),
                                        "sysfs_root": EMPTY_SYS})
    assert out.get("failed") is not True
    assert out["ansible_facts"]["gpu_facts"]["status"] == status


def test_module_gpu_facts_missing_nvidia_smi_with_pci_gpu_is_no_driver(run_module, tmp_path):
    out = run_module(gpu_facts_module, {"nvidia_smi_path": str(tmp_path / "nvidia-smi"),
                                        "sysfs_root": str(SYSFS / "rtx4090")})
    assert out["ansible_facts"]["gpu_facts"]["status"] == "no_driver"


def test_module_gpu_facts_missing_nvidia_smi_and_no_pci_gpu_is_no_gpu(run_module, tmp_path):
    out = run_module(gpu_facts_module, {"nvidia_smi_path": str(tmp_path / "nvidia-smi"),
                                        "sysfs_root": EMPTY_SYS})
    assert out["ansible_facts"]["gpu_facts"]["status"] == "no_gpu"


def test_fixture_dirs_for_every_card_exist():
    assert sorted(p.name for p in NVSMI.iterdir() if p.is_dir()) == sorted([
        "2x-rtx3060", "2x-rtx4090", "a100-80gb", "a100-mig", "a10g", "driver470", "garbage",
        "h200", "l4", "mismatch", "mixed-4090-3060", "no-devices", "no-driver-smi", "rtx3060",
        "rtx3070", "rtx4090", "t4"])
    assert os.path.isdir(EMPTY_SYS + "/bus/pci/devices")
