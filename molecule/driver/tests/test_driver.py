"""Behaviour of the Debian 12 test host after the driver scenario (converge + side_effect)."""

import pytest

testinfra_hosts = ["podman://llm-driver"]

DRIVER_PACKAGES = ["libcuda1", "nvidia-kernel-dkms", "nvidia-persistenced", "nvidia-smi"]


def test_driver_packages_come_from_debian_non_free_branch_535(host):
    for name in DRIVER_PACKAGES:
        pkg = host.package(name)
        assert pkg.is_installed, name
        assert pkg.version.startswith("535."), (name, pkg.version)
    sources = host.file("/etc/apt/sources.list.d/debian.sources")
    assert sources.contains("Components: main contrib non-free non-free-firmware")


def test_exactly_the_driver_packages_are_held(host):
    # The side_effect held libnvidia-ml1 as if left from another branch: the role released it.
    held = sorted(host.check_output("apt-mark showhold").split())
    assert held == DRIVER_PACKAGES


def test_unattended_upgrades_skip_the_driver(host):
    conf = host.file("/etc/apt/apt.conf.d/51llm-nvidia-driver")
    assert conf.mode == 0o644
    for pattern in ("nvidia-", "libnvidia-", "libcuda", "linux-modules-nvidia-"):
        assert conf.contains(f'"{pattern}";'), pattern
    # apt itself parses the drop-in into the list unattended-upgrades reads.
    dump = host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    assert '"nvidia-"' in dump and '"libcuda"' in dump


def test_nouveau_is_blacklisted(host):
    conf = host.file("/etc/modprobe.d/llm-blacklist-nouveau.conf")
    lines = [line for line in conf.content_string.splitlines() if line and not line.startswith("#")]
    assert lines == ["blacklist nouveau", "options nouveau modeset=0"]


def test_initramfs_tooling_present_for_the_handler(host):
    assert host.package("initramfs-tools").is_installed
    assert host.run("update-initramfs -u -k all").rc == 0


def test_persistenced_unit_is_enabled(host):
    assert host.service("nvidia-persistenced").is_enabled


def test_dkms_registered_the_module_but_built_none_for_the_foreign_kernel(host):
    # Honest limit of a container: the running kernel is the CI machine's, without a headers package.
    status = host.check_output("dkms status")
    assert "nvidia-current/535." in status
    assert "installed" not in status


def test_cuda_profile_puts_the_picked_toolkit_on_login_path(host):
    profile = host.file("/etc/profile.d/cuda.sh")
    assert profile.contains("CUDA_HOME=/usr/local/cuda-12.3")
    login_path = host.check_output("bash -lc 'echo $PATH'")
    assert login_path.split(":")[0] == "/usr/local/cuda-12.3/bin"
    # Idempotent: a nested login shell does not add it twice.
    assert host.check_output("bash -lc 'bash -lc \"echo \\$PATH\"'").count("cuda-12.3") == 1


def test_no_service_unit_carries_the_cuda_path(host):
    assert host.run("grep -rl cuda- /etc/systemd/system").rc == 1


@pytest.mark.parametrize("case", ["rtx4090", "t4", "driver470", "mismatch", "no-driver-smi", "no-devices"])
def test_fake_gpu_fixtures_are_in_place(host, case):
    assert host.file(f"/etc/fake-gpu/fixtures/{case}/query-gpu-facts.csv").exists


# --- fresh host: plan from PCI ids, driver, re-plan, engine configured from the real plan -----------

def test_the_first_plan_was_provisional_for_the_driver_roles_branch(host):
    import json
    before = json.loads(host.file("/var/tmp/llm-plan-before-driver.json").content_string)
    assert (before["provisional"], before["driver_version"], before["gpu_memory_utilization"],
            before["data_parallel_size"], before["gpu_memory_used_mib"]) == \
        (True, "535 (planned)", 0.931, 2, 0)


def test_vllm_config_carries_the_replanned_gpu_settings(host):
    import yaml
    config = yaml.safe_load(host.file("/etc/llm/vllm.yaml").content_string)
    assert (config["gpu-memory-utilization"], config["data-parallel-size"],
            config["tensor-parallel-size"], config["max-model-len"], config["dtype"]) == \
        (0.862, 2, 1, 32768, "bfloat16")


def test_vllm_unit_can_open_the_gpus_it_is_given(host):
    unit = host.file("/etc/systemd/system/vllm.service").content_string
    lines = unit.splitlines()
    assert "DevicePolicy=closed" in lines
    assert "DeviceAllow=char-nvidia* rw" in lines
    assert "PrivateDevices=yes" not in lines
    assert 'Environment="CUDA_VISIBLE_DEVICES=0,1"' in lines
    assert 'Environment="CUDA_DEVICE_ORDER=PCI_BUS_ID"' in lines
    unit_section = unit.split("[Service]")[0]
    assert "StartLimitBurst=" in unit_section and "StartLimitIntervalSec=" in unit_section
    # the unit was written, not started (vllm_start: false)
    assert not host.service("vllm").is_running


# --- the GPU collector (roles/exporters) ------------------------------------------------------------------------

def _node_metrics(host, prefix):
    """{series with labels: value} of node-exporter's llm_gpu_* lines, as Prometheus would read them."""
    text = host.check_output("python3 -c \"import urllib.request; "
                             "print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())\"")
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


def _collect_on(host, case):
    assert host.run(f"echo {case} > /etc/fake-gpu/case").rc == 0
    run = host.run("systemctl start llm-gpu-metrics.service")  # a oneshot: returns when the file is written
    assert run.rc == 0, run.stderr
    return _node_metrics(host, "llm_gpu_")


def test_gpu_collector_serves_the_recorded_h200_through_node_exporter(host):
    assert host.service("llm-gpu-metrics.timer").is_enabled
    assert host.service("prometheus-node-exporter").is_running
    case = host.file("/etc/fake-gpu/case").content_string.strip()
    try:
        m = _collect_on(host, "h200")  # tests/unit/fixtures/nvidia-smi/h200/query-metrics.csv, a busy H200
        gpu = 'gpu="0",uuid="GPU-14d4cd92-cd67-5ed1-9600-cf3980f507e0"'  # labels sorted (node-exporter); bus id as the kernel writes it
        assert m["llm_gpu_collector_up"] == 1
        assert m['llm_gpu_info{gpu="0",name="NVIDIA H200",pci_bus_id="0000:00:06",'
                 'uuid="GPU-14d4cd92-cd67-5ed1-9600-cf3980f507e0"}'] == 1
        assert m[f"llm_gpu_memory_total_bytes{{{gpu}}}"] == 143771 * 1024 * 1024
        assert m[f"llm_gpu_memory_used_bytes{{{gpu}}}"] == 42099 * 1024 * 1024
        assert m[f"llm_gpu_utilization_ratio{{{gpu}}}"] == 1.0
        assert m[f"llm_gpu_temperature_celsius{{{gpu}}}"] == 60
        assert m[f"llm_gpu_power_watts{{{gpu}}}"] == 692.02
        assert m[f"llm_gpu_ecc_uncorrected_errors{{{gpu}}}"] == 0
        assert m['llm_gpu_xid_errors_total{pci_bus_id="0000:00:06"}'] == 0
        # A card whose nvidia-smi refuses the query: the collector says so instead of keeping old numbers.
        m = _collect_on(host, "no-devices")
        assert m["llm_gpu_collector_up"] == 0
        assert not [k for k in m if k.startswith("llm_gpu_memory_total_bytes")]
    finally:
        host.run(f"echo {case} > /etc/fake-gpu/case")
        host.run("systemctl start llm-gpu-metrics.service")
    listening = host.check_output("ss -Htln")
    assert "127.0.0.1:9100 " in listening and "*:9100 " not in listening and "0.0.0.0:9100 " not in listening
