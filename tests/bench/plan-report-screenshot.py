#!/usr/bin/env python3
"""Renders playbooks/plan-report.png, the README's picture of the plan report, from fixtures.

The hosts are real plans (the planner on recorded nvidia-smi outputs, tests/unit/fixtures)
turned into HTML by the real filter (plugins/filter/llm_plan_report.py), then photographed
by headless Chromium (Debian: apt-get install chromium). Run from anywhere:

    .venv/bin/python tests/bench/plan-report-screenshot.py [OUTPUT.png]

Environment: CHROMIUM (default: chromium on PATH).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit"))

import llm_plan_report  # noqa: E402
from conftest import planned_hostvars  # noqa: E402  (also puts plugins/* on the path)

#: An example fleet: (host, fixtures/nvidia-smi card, plan choices).
FLEET = [
    ("gpu-h200-01", "h200", {}),
    ("gpu-a10g-01", "2x-a10g", {}),
    ("ws-4090-01", "rtx4090-desktop", {}),  # a desktop: 1846 MiB held by the display
    ("ws-3060-01", "rtx3060", {}),
    ("ws-mixed-01", "mixed-4090-3060", {}),
    ("gpu-t4-01", "t4", {}),
    ("ws-3060-02", "rtx3060", {"quantization": "bf16"}),  # refused: bf16 does not fit 12 GB
]

WINDOW = "1280,1480"


def main(argv):
    out = Path(argv[1]).resolve() if len(argv) > 1 else REPO / "playbooks" / "plan-report.png"
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not chromium:
        sys.exit("chromium not found: apt-get install chromium, or set CHROMIUM")
    hostvars = planned_hostvars(FLEET)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "llm-plan.html"
        page.write_text(llm_plan_report.report_html(hostvars, [h for h, _c, _o in FLEET]))
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--force-device-scale-factor=1",
                        "--user-data-dir=%s" % (Path(tmp) / "profile"),
                        "--window-size=" + WINDOW, "--screenshot=%s" % out, page.as_uri()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)
    print(out)


if __name__ == "__main__":
    main(sys.argv)
