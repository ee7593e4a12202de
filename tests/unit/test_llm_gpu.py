"""nvidia-smi parsing and the gpu_facts module, against recorded outputs."""

import os
import re

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
    # A subset check: other tests add card directories of their own.
    assert set(p.name for p in NVSMI.iterdir() if p.is_dir()) >= {
        "2x-rtx3060", "2x-rtx4090", "a100-80gb", "a100-mig", "a10g", "driver470", "garbage",
        "h200", "l4", "mismatch", "mixed-4090-3060", "no-devices", "no-driver-smi", "rtx3060",
        "rtx3070", "rtx4090", "t4"}
    assert set(p.name for p in SYSFS.iterdir() if p.is_dir()) >= {
        "empty", "rtx4090", "unknown-nvidia", "p100", "2x-a10g"}
    assert os.path.isdir(EMPTY_SYS + "/bus/pci/devices")


# --- the PCI id table ------------------------------------------------------------
# Pinned by hand from the sources cited in llm_gpu.PCI_DEVICE_TABLE: a typo in an id, a
# name, a memory size or a compute capability there fails here.

PCI_TABLE_EXPECTED = [
    # id, nvidia-smi name, memory.total MiB (None: must be declared), cc
    ("0x2503", "NVIDIA GeForce RTX 3060", 8192, "8.6"),
    ("0x2504", "NVIDIA GeForce RTX 3060", 8192, "8.6"),
    ("0x2544", "NVIDIA GeForce RTX 3060", 8192, "8.6"),
    ("0x2487", "NVIDIA GeForce RTX 3060", 12288, "8.6"),
    ("0x24c7", "NVIDIA GeForce RTX 3060", 8192, "8.6"),
    ("0x2414", "NVIDIA GeForce RTX 3060 Ti", 8192, "8.6"),
    ("0x2486", "NVIDIA GeForce RTX 3060 Ti", 8192, "8.6"),
    ("0x2489", "NVIDIA GeForce RTX 3060 Ti", 8192, "8.6"),
    ("0x24c9", "NVIDIA GeForce RTX 3060 Ti", 8192, "8.6"),
    ("0x2484", "NVIDIA GeForce RTX 3070", 8192, "8.6"),
    ("0x2488", "NVIDIA GeForce RTX 3070", 8192, "8.6"),
    ("0x2206", "NVIDIA GeForce RTX 3080", 10240, "8.6"),
    ("0x2216", "NVIDIA GeForce RTX 3080", 10240, "8.6"),
    ("0x220a", "NVIDIA GeForce RTX 3080", 12288, "8.6"),
    ("0x2204", "NVIDIA GeForce RTX 3090", 24576, "8.6"),
    ("0x2803", "NVIDIA GeForce RTX 4060 Ti", None, "8.9"),
    ("0x2805", "NVIDIA GeForce RTX 4060 Ti", 16380, "8.9"),
    ("0x2786", "NVIDIA GeForce RTX 4070", 12282, "8.9"),
    ("0x2709", "NVIDIA GeForce RTX 4070", 12282, "8.9"),
    ("0x2782", "NVIDIA GeForce RTX 4070 Ti", 12282, "8.9"),
    ("0x2704", "NVIDIA GeForce RTX 4080", 16376, "8.9"),
    ("0x2684", "NVIDIA GeForce RTX 4090", 24564, "8.9"),
    ("0x2236", "NVIDIA A10", 23028, "8.6"),
    ("0x2237", "NVIDIA A10G", 23028, "8.6"),
    ("0x27b8", "NVIDIA L4", 23034, "8.9"),
    ("0x26b9", "NVIDIA L40S", 46068, "8.9"),
    ("0x20b0", "NVIDIA A100-SXM4-40GB", 40960, "8.0"),
    ("0x20f1", "NVIDIA A100-PCIE-40GB", 40960, "8.0"),
    ("0x20b2", "NVIDIA A100-SXM4-80GB", 81920, "8.0"),
    ("0x20b5", "NVIDIA A100 80GB PCIe", 81920, "8.0"),
    ("0x1eb8", "Tesla T4", 15360, "7.5"),
    ("0x2330", "NVIDIA H100 80GB HBM3", 81559, "9.0"),
    ("0x2331", "NVIDIA H100 PCIe", 81559, "9.0"),
    ("0x2321", "NVIDIA H100 NVL", 95830, "9.0"),
    ("0x2335", "NVIDIA H200", 143771, "9.0"),
    ("0x1db1", "Tesla V100-SXM2-16GB", 16160, "7.0"),
    ("0x1db4", "Tesla V100-PCIE-16GB", 16160, "7.0"),
    ("0x1db5", "Tesla V100-SXM2-32GB", 32510, "7.0"),
    ("0x1db6", "Tesla V100-PCIE-32GB", 32510, "7.0"),
    ("0x15f8", "Tesla P100-PCIE-16GB", 16280, "6.0"),
    ("0x1b38", "Tesla P40", 23040, "6.1"),
]


@pytest.mark.parametrize("device_id,name,mib,cc", PCI_TABLE_EXPECTED,
                         ids=[row[0] for row in PCI_TABLE_EXPECTED])
def test_pci_table_entry_is_pinned(device_id, name, mib, cc):
    entry = llm_gpu.PCI_DEVICE_TABLE[device_id]
    assert (entry.name, entry.memory_mib, entry.cc) == (name, mib, cc)


def test_pci_table_has_exactly_the_pinned_ids():
    assert sorted(llm_gpu.PCI_DEVICE_TABLE) == sorted(row[0] for row in PCI_TABLE_EXPECTED)


def test_pci_table_ids_are_normalised_and_names_agree_with_the_cc_name_table():
    for device_id, entry in llm_gpu.PCI_DEVICE_TABLE.items():
        assert llm_gpu.normalize_pci_id(device_id) == device_id
        assert llm_gpu.cc_from_name(entry.name) == entry.cc, device_id


def test_shared_or_uncertain_ids_carry_a_memory_note():
    table = llm_gpu.PCI_DEVICE_TABLE
    for device_id in ("0x2503", "0x2504", "0x2544", "0x2803", "0x2206", "0x1b38"):
        assert table[device_id].memory_note, device_id
    assert "12288" in table["0x2503"].memory_note
    assert "llm_gpu_pci_ids" in table["0x2503"].memory_note


@pytest.mark.parametrize("name,cc", [
    ("NVIDIA L40S", "8.9"), ("NVIDIA L40", "8.9"), ("NVIDIA L4", "8.9"),
    ("NVIDIA A10", "8.6"), ("NVIDIA A100-PCIE-40GB", "8.0"), ("NVIDIA A100 80GB PCIe", "8.0"),
    ("NVIDIA RTX A1000", "8.6"), ("NVIDIA RTX A6000", "8.6"), ("Quadro RTX 4000", "7.5"),
    ("NVIDIA RTX 4000 Ada Generation", "8.9"), ("NVIDIA GeForce RTX 4060 Ti", "8.9"),
    ("NVIDIA GH200 480GB", "9.0"), ("NVIDIA H100 NVL", "9.0"),
    ("Tesla V100-SXM2-32GB", "7.0"), ("Tesla P100-PCIE-16GB", "6.0"), ("Tesla P40", "6.1"),
    ("Tesla P4", "6.1"),
])
def test_cc_from_name_first_match_is_the_right_one(name, cc):
    assert llm_gpu.cc_from_name(name) == cc


# --- PCI ids declared by the host (llm_gpu_pci_ids / gpu_facts pci_ids) ------------

DECLARED_29FF = {"0x29ff": {"name": "NVIDIA Test GPU", "memory_mib": 24564,
                            "compute_capability": "8.9"}}


@pytest.mark.parametrize("raw", ["0x29ff", "0x29FF", "29ff", "10de:29ff", "10DE:29FF",
                                 " 29ff "])
def test_pci_id_keys_are_normalised(raw):
    assert llm_gpu.normalize_pci_id(raw) == "0x29ff"


@pytest.mark.parametrize("raw", ["10751", "0x29f", "29ff0", "1002:29ff", "gpu", ""])
def test_bad_pci_id_key_names_the_variable_and_says_quote_it(raw):
    with pytest.raises(llm_gpu.PciIdsError, match=r"^llm_gpu_pci_ids key .* QUOTED .*"
                                                  r"Example: llm_gpu_pci_ids: \{"):
        llm_gpu.normalize_pci_id(raw)


def test_parse_pci_ids_normalises_keys_and_defaults_the_name():
    parsed = llm_gpu.parse_pci_ids({
        "10de:29FF": {"memory_mib": 24564, "compute_capability": "8.9"},
        "2503": {"memory_mib": "12288", "compute_capability": 8.6},
    })
    assert parsed == {
        "0x29ff": llm_gpu.PciDevice("NVIDIA PCI device 0x29ff", 24564, "8.9"),
        "0x2503": llm_gpu.PciDevice("NVIDIA GeForce RTX 3060", 12288, "8.6"),
    }


@pytest.mark.parametrize("entry,match", [
    ({"compute_capability": "8.9"}, "entry 0x29ff: memory_mib is required"),
    ({"memory_mib": None, "compute_capability": "8.9"}, "memory_mib is required"),
    ({"memory_mib": "24 GB", "compute_capability": "8.9"},
     "memory_mib is '24 GB', expected an integer"),
    ({"memory_mib": 0, "compute_capability": "8.9"}, "memory_mib is 0, expected MiB > 0"),
    ({"memory_mib": True, "compute_capability": "8.9"}, "memory_mib is required"),
    ({"memory_mib": 24564}, "entry 0x29ff: compute_capability is required"),
    ({"memory_mib": 24564, "compute_capability": "sm_89"},
     "compute_capability is 'sm_89', expected a string like \"8.9\""),
    ({"memory_mib": 24564, "compute_capability": "89"}, "compute_capability is '89'"),
    ({"memory_mib": 24564, "compute_capability": "8.9", "memory": 24}, "unknown key.*memory"),
    ({"memory_mib": 24564, "compute_capability": "8.9", "name": 42}, "name is 42"),
    ("24564", "expected a dict with memory_mib"),
])
def test_bad_pci_ids_entry_is_refused_naming_llm_gpu_pci_ids(entry, match):
    with pytest.raises(llm_gpu.PciIdsError) as err:
        llm_gpu.parse_pci_ids({"0x29ff": entry})
    assert str(err.value).startswith("llm_gpu_pci_ids ")
    assert "Example: llm_gpu_pci_ids: {\"0x29ff\": {" in str(err.value)
    assert re.search(match, str(err.value)), str(err.value)


def test_pci_ids_declaring_one_id_twice_is_refused():
    with pytest.raises(llm_gpu.PciIdsError, match="declares 0x29ff twice"):
        llm_gpu.parse_pci_ids({"0x29ff": DECLARED_29FF["0x29ff"],
                               "29ff": DECLARED_29FF["0x29ff"]})


def test_pci_ids_that_is_not_a_dict_is_refused():
    with pytest.raises(llm_gpu.PciIdsError, match="^llm_gpu_pci_ids is .*expected a dict"):
        llm_gpu.parse_pci_ids(["0x29ff"])


def test_unknown_pci_device_without_declaration_is_unknown_and_says_how_to_declare():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "unknown-nvidia"))
    d = f["pci_devices"][0]
    assert (f["status"], d["device_id"], d["known"], d["source"], d["memory_total_mib"]) == \
        ("no_driver", "0x29ff", False, None, None)
    assert "device 0x29ff: memory unknown (not in the PCI id table); declare it in " \
           "llm_gpu_pci_ids, e.g. llm_gpu_pci_ids: {\"0x29ff\": {" in f["message"]


def test_unknown_pci_device_declared_through_pci_ids_is_planned_from_the_declaration():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "unknown-nvidia"),
                       pci_ids=DECLARED_29FF)
    assert (f["status"], f["gpu_count"], f["total_memory_mib"]) == ("no_driver", 1, 24564)
    assert f["gpus"][0] == {
        "index": 0, "name": "NVIDIA Test GPU", "uuid": None, "memory_total_mib": 24564,
        "memory_used_mib": None, "compute_capability": "8.9", "pci_bus_id": "0000:01:00.0",
        "mig_mode": None}
    assert f["pci_devices"] == [{
        "pci_bus_id": "0000:01:00.0", "device_id": "0x29ff", "name": "NVIDIA Test GPU",
        "memory_total_mib": 24564, "compute_capability": "8.9", "memory_note": None,
        "known": True, "source": "llm_gpu_pci_ids"}]
    assert "memory unknown" not in f["message"]


def test_declared_pci_id_overrides_the_table_entry():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "rtx4090"),
                       pci_ids={"2684": {"memory_mib": 24000, "compute_capability": "8.9"}})
    d = f["pci_devices"][0]
    assert (d["name"], d["memory_total_mib"], d["source"]) == \
        ("NVIDIA GeForce RTX 4090", 24000, "llm_gpu_pci_ids")


def test_table_pci_device_carries_source_table():
    d = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "rtx4090"))["pci_devices"][0]
    assert (d["known"], d["source"], d["memory_note"]) == (True, "table", None)


def test_gather_with_invalid_pci_ids_is_status_error_not_a_crash():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "unknown-nvidia"),
                       pci_ids={"0x29ff": {"memory_mib": 1}})
    assert f["status"] == "error"
    assert "llm_gpu_pci_ids entry 0x29ff: compute_capability is required" in f["message"]


def test_pascal_p100_host_without_driver_is_no_driver_with_the_table_memory():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "p100"))
    assert (f["status"], f["gpu_count"], f["total_memory_mib"]) == ("no_driver", 1, 16280)
    g = f["gpus"][0]
    assert (g["name"], g["compute_capability"], g["pci_bus_id"]) == \
        ("Tesla P100-PCIE-16GB", "6.0", "0000:04:00.0")
    assert "device 0x15f8 (Tesla P100-PCIE-16GB): 16280 MiB assumed: drivers 515+ " \
           "report 16384 MiB" in f["message"]


def test_two_a10g_without_driver_sum_their_memory():
    f = llm_gpu.gather(fixture_runner("h200"), None, str(SYSFS / "2x-a10g"))
    assert (f["status"], f["gpu_count"], f["total_memory_mib"]) == ("no_driver", 2, 46056)
    assert [(g["index"], g["pci_bus_id"]) for g in f["gpus"]] == \
        [(0, "0000:00:1d.0"), (1, "0000:00:1e.0")]


def write_sysfs(root, devices):
    """A /sys/bus/pci/devices tree under root: {bus_id: (device, class)}, vendor NVIDIA."""
    for bus_id, (device, klass) in devices.items():
        d = root / "bus" / "pci" / "devices" / bus_id
        d.mkdir(parents=True)
        (d / "vendor").write_text("0x10de\n")
        (d / "device").write_text(device + "\n")
        (d / "class").write_text(klass + "\n")
    return str(root)


def test_shared_3060_id_is_planned_as_8_gb_and_the_message_says_how_to_declare_12(tmp_path):
    root = write_sysfs(tmp_path, {"0000:01:00.0": ("0x2503", "0x030000")})
    f = llm_gpu.gather(fixture_runner("h200"), None, root)
    assert (f["status"], f["total_memory_mib"]) == ("no_driver", 8192)
    assert "device 0x2503 (NVIDIA GeForce RTX 3060): 8192 MiB assumed: one id for the " \
           "12 GB (12288 MiB) and the 8 GB card" in f["message"]
    declared = llm_gpu.gather(fixture_runner("h200"), None, root, pci_ids={
        "0x2503": {"memory_mib": 12288, "compute_capability": "8.6"}})
    assert declared["total_memory_mib"] == 12288


def test_id_with_unknown_memory_in_the_table_is_known_but_must_be_declared(tmp_path):
    root = write_sysfs(tmp_path, {"0000:01:00.0": ("0x2803", "0x030000")})
    f = llm_gpu.gather(fixture_runner("h200"), None, root)
    d = f["pci_devices"][0]
    assert (d["known"], d["source"], d["name"], d["memory_total_mib"]) == \
        (True, "table", "NVIDIA GeForce RTX 4060 Ti", None)
    assert "device 0x2803 (NVIDIA GeForce RTX 4060 Ti): memory unknown (8 GB and 16 GB " \
           "boards" in f["message"]
    assert "llm_gpu_pci_ids: {\"0x2803\": {" in f["message"]


def test_module_gpu_facts_pci_ids_plans_an_undeclared_card(run_module, tmp_path):
    out = run_module(gpu_facts_module, {
        "nvidia_smi_path": str(tmp_path / "nvidia-smi"),
        "sysfs_root": str(SYSFS / "unknown-nvidia"),
        "pci_ids": {"10de:29ff": {"memory_mib": 24564, "compute_capability": "8.9"}}})
    f = out["ansible_facts"]["gpu_facts"]
    assert (f["status"], f["gpus"][0]["memory_total_mib"], f["pci_devices"][0]["source"]) == \
        ("no_driver", 24564, "llm_gpu_pci_ids")


def test_module_gpu_facts_bad_pci_ids_fails_naming_llm_gpu_pci_ids(run_module, tmp_path):
    out = run_module(gpu_facts_module, {
        "nvidia_smi_path": str(tmp_path / "nvidia-smi"),
        "sysfs_root": str(SYSFS / "unknown-nvidia"),
        "pci_ids": {"0x29ff": {"compute_capability": "8.9"}}})
    assert out["failed"] is True
    assert out["msg"].startswith("llm_gpu_pci_ids entry 0x29ff: memory_mib is required")
    assert "Example: llm_gpu_pci_ids: {" in out["msg"]
