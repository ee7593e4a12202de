"""GPU metrics for Prometheus (plugins/module_utils/llm_gpu.py: parse_metrics_csv, count_xids, metrics_textfile,
collect_metrics) and the collector program of roles/exporters, pinned with nvidia-smi output recorded on the H200
(fixtures/nvidia-smi/h200/: metrics-idle.csv, and query-metrics.csv, busy with a bf16 matmul loop holding 40 GiB) and Xid lines in the driver's kernel format."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.module_utils import llm_gpu

from conftest import read_fixture

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = REPO / "roles" / "exporters" / "files" / "llm_gpu_metrics.py"
MODULE_UTILS = REPO / "plugins" / "module_utils"
UUID = "GPU-14d4cd92-cd67-5ed1-9600-cf3980f507e0"
LABELS = 'gpu="0",uuid="%s"' % UUID
# The kernel's Xid message (open-gpu-kernel-modules: "NVRM: Xid (PCI:%04x:%02x:%02x): %d, ..."), as journalctl
# --output=cat prints it; the H200 above sits at 00000000:00:06.0, the third line names a GPU nvidia-smi no longer
# lists (it fell off the bus).
XID_LOG = """NVRM: Xid (PCI:0000:00:06): 31, pid=79749, name=python3, Ch 0000000a, intr 00000000. MMU Fault: ENGINE GRAPHICS
NVRM: Xid (PCI:0000:00:06): 48, pid=79749, name=python3, An uncorrectable double bit error (DBE) has been detected.
NVRM: Xid (PCI:0000:3b:00): 79, pid=1122, GPU has fallen off the bus.
"""


def samples(text):
    """{series: value} of a Prometheus text exposition."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def test_busy_h200_in_base_units():
    gpus = llm_gpu.parse_metrics_csv(read_fixture("nvidia-smi", "h200", "query-metrics.csv"))
    assert gpus == [{
        "index": 0, "uuid": UUID, "name": "NVIDIA H200", "pci_bus_id": "00000000:00:06.0",
        "memory_total_bytes": 143771 * 2**20, "memory_used_bytes": 42099 * 2**20, "utilization_ratio": 1.0,
        "temperature_celsius": 60.0, "power_watts": 692.02, "ecc_corrected_errors": 0.0,
        "ecc_uncorrected_errors": 0.0, "thermal_slowdown": False,
    }]
    got = samples(llm_gpu.metrics_textfile(gpus, {}))
    assert got == {
        "llm_gpu_collector_up": 1,
        'llm_gpu_info{%s,name="NVIDIA H200",pci_bus_id="0000:00:06"}' % LABELS: 1,
        "llm_gpu_memory_total_bytes{%s}" % LABELS: 150754820096,
        "llm_gpu_memory_used_bytes{%s}" % LABELS: 44144001024,
        "llm_gpu_utilization_ratio{%s}" % LABELS: 1,
        "llm_gpu_temperature_celsius{%s}" % LABELS: 60,
        "llm_gpu_power_watts{%s}" % LABELS: 692.02,
        "llm_gpu_ecc_corrected_errors{%s}" % LABELS: 0,
        "llm_gpu_ecc_uncorrected_errors{%s}" % LABELS: 0,
        "llm_gpu_thermal_slowdown{%s}" % LABELS: 0,
        'llm_gpu_xid_errors_total{pci_bus_id="0000:00:06"}': 0,
    }


def test_idle_h200_and_the_same_query_with_units():
    idle = llm_gpu.parse_metrics_csv(read_fixture("nvidia-smi", "h200", "metrics-idle.csv"))[0]
    assert (idle["memory_used_bytes"], idle["utilization_ratio"], idle["temperature_celsius"],
            idle["power_watts"]) == (0, 0.0, 39.0, 95.3)
    # The recording with a header and units (no `nounits`), taken a moment earlier: units are tolerated.
    with_units = read_fixture("nvidia-smi", "h200", "metrics-header.csv").splitlines()[1]
    again = llm_gpu.parse_metrics_csv(with_units)[0]
    assert (again["memory_total_bytes"], again["memory_used_bytes"], again["utilization_ratio"],
            again["power_watts"]) == (143771 * 2**20, 0, 0.0, 93.5)


def test_values_a_card_does_not_report_leave_no_sample():
    line = read_fixture("nvidia-smi", "h200", "metrics-idle.csv").strip().split(", ")
    fields = list(llm_gpu.METRIC_FIELDS)
    for field in ("power.draw", "ecc.errors.corrected.volatile.total", "ecc.errors.uncorrected.volatile.total"):
        line[fields.index(field)] = "[N/A]"  # a GeForce card: no ECC; some report no power
    line[fields.index("clocks_event_reasons.hw_thermal_slowdown")] = "[Not Supported]"
    text = llm_gpu.metrics_textfile(llm_gpu.parse_metrics_csv(", ".join(line)), {})
    assert "llm_gpu_temperature_celsius{%s} 39" % LABELS in text
    for name in ("llm_gpu_power_watts", "llm_gpu_ecc_corrected_errors", "llm_gpu_ecc_uncorrected_errors",
                 "llm_gpu_thermal_slowdown"):
        assert name not in text


def test_xid_errors_are_counted_per_gpu_address_with_the_latest_code():
    assert llm_gpu.count_xids(XID_LOG) == {"0000:00:06": {"count": 2, "last": 48},
                                           "0000:3b:00": {"count": 1, "last": 79}}
    # The H200's own (real) kernel lines hold no Xid.
    assert llm_gpu.count_xids(read_fixture("nvidia-smi", "h200", "kernel-nvrm.txt")) == {}
    gpus = llm_gpu.parse_metrics_csv(read_fixture("nvidia-smi", "h200", "metrics-idle.csv"))
    got = samples(llm_gpu.metrics_textfile(gpus, llm_gpu.count_xids(XID_LOG)))
    assert {k: v for k, v in got.items() if k.startswith("llm_gpu_xid")} == {
        'llm_gpu_xid_errors_total{pci_bus_id="0000:00:06"}': 2,
        'llm_gpu_xid_errors_total{pci_bus_id="0000:3b:00"}': 1,
        'llm_gpu_xid_last_code{pci_bus_id="0000:00:06"}': 48,
        'llm_gpu_xid_last_code{pci_bus_id="0000:3b:00"}': 79,
    }


@pytest.mark.parametrize("smi, error", [
    ((9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", ""),
     "# collector error: nvidia-smi exited 9: NVIDIA-SMI has failed because it couldn't communicate"),
    ((0, "0, GPU-x, NVIDIA H200\n", ""), "# collector error: nvidia-smi line 1 has 3 comma-separated fields"),
    (OSError(2, "No such file or directory"), "# collector error: nvidia-smi exited 127: nvidia-smi: [Errno 2]"),
])
def test_a_failing_nvidia_smi_reports_collector_down_and_still_counts_xids(smi, error):
    calls = []

    def run(argv):
        calls.append(argv)
        if argv[0] == "journalctl":
            return 0, XID_LOG, ""
        if isinstance(smi, Exception):
            raise smi
        return smi

    text = llm_gpu.collect_metrics(run)
    assert calls[0] == ["journalctl", "--dmesg", "--boot", "--output=cat", "--no-pager", "--grep=NVRM: Xid"]
    assert calls[1] == ["nvidia-smi", "--query-gpu=" + ",".join(llm_gpu.METRIC_FIELDS),
                        "--format=csv,noheader,nounits"]
    assert text.startswith(error), text
    got = samples(text)
    assert got["llm_gpu_collector_up"] == 0
    assert got['llm_gpu_xid_errors_total{pci_bus_id="0000:3b:00"}'] == 1
    assert not any(k.startswith("llm_gpu_memory") for k in got)


def test_no_xid_in_the_journal_is_rc_1_and_counts_zero():
    busy = read_fixture("nvidia-smi", "h200", "query-metrics.csv")
    text = llm_gpu.collect_metrics(lambda argv: (1, "-- No entries --\n", "") if argv[0] == "journalctl"
                                   else (0, busy, ""))
    got = samples(text)
    assert got["llm_gpu_collector_up"] == 1
    assert got['llm_gpu_xid_errors_total{pci_bus_id="0000:00:06"}'] == 0
    assert "llm_gpu_xid_last_code" not in text


def test_promtool_accepts_the_exposition(promtool):
    gpus = llm_gpu.parse_metrics_csv(read_fixture("nvidia-smi", "h200", "query-metrics.csv"))
    text = llm_gpu.metrics_textfile(gpus, llm_gpu.count_xids(XID_LOG), error="example")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_collector_program_writes_the_file_node_exporter_reads(fake_nvidia_smi, tmp_path, promtool):
    """roles/exporters/files/llm_gpu_metrics.py as the timer runs it, with the fake nvidia-smi playing the H200's
    recording and a journalctl that prints the Xid lines above."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    journalctl = bin_dir / "journalctl"
    journalctl.write_text("#!/bin/sh\ncat <<'LOG'\n%sLOG\n" % XID_LOG)
    journalctl.chmod(0o755)
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), PYTHONPATH=str(MODULE_UTILS))
    proc = subprocess.run([sys.executable, str(COLLECTOR), str(textfile / "llm_gpu.prom"), fake_nvidia_smi("h200")],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in textfile.iterdir()] == ["llm_gpu.prom"]  # no temporary file left
    text = (textfile / "llm_gpu.prom").read_text()
    assert oct((textfile / "llm_gpu.prom").stat().st_mode & 0o777) == "0o644"
    got = samples(text)
    assert got["llm_gpu_memory_used_bytes{%s}" % LABELS] == 44144001024
    assert got['llm_gpu_xid_errors_total{pci_bus_id="0000:00:06"}'] == 2
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
