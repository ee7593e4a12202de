#!/usr/bin/env python3
"""The one fake nvidia-smi of the tests: plays back recorded outputs (tests/unit/fixtures/nvidia-smi/<card>/).

Run as nvidia-smi, it answers from the folder named by $FAKE_NVIDIA_SMI_FIXTURES. Callers put a two-line
wrapper where the code under test looks for nvidia-smi, setting that variable: the unit tests and the
collection smoke test (tests/unit/conftest.py: write_fake_nvidia_smi), molecule/driver (its
/usr/local/bin/nvidia-smi takes the card from /etc/fake-gpu/case, which the scenario switches).
answer() is the same play-back in-process (conftest.fixture_runner). Which file answers which call:
tests/unit/fixtures/README.md. Plain Python 3 (runs on the test hosts too).
"""

import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

ENV = "FAKE_NVIDIA_SMI_FIXTURES"


def fixture_name(args: List[str]) -> Optional[str]:
    """The fixture file that answers these nvidia-smi arguments (None: a call gpu_facts never makes)."""
    joined = " ".join(args)
    if "--query-gpu=" in joined and "utilization.gpu" in joined:
        return "query-metrics.csv"  # the GPU collector (llm_gpu.METRIC_FIELDS)
    if "--query-gpu=" in joined:
        return "query-gpu-facts.csv" if "compute_cap" in joined else "query-fallback.csv"
    if "--query-compute-apps=" in joined:
        return "query-compute-apps.csv"
    if joined == "--version":
        return "nvidia-smi-version.txt"
    if joined == "":
        return "nvidia-smi.txt"
    return None


def answer(fixture_dir: str, args: List[str]) -> Tuple[int, str, str]:
    """(exit status, stdout, stderr) of `nvidia-smi <args>` on the recorded card in fixture_dir.

    A `<file>.rc` beside the answer holds its exit status (default 0); an unknown call or a missing
    file exits 2, as a real nvidia-smi refusing the query would."""
    name = fixture_name(args)
    if name is None:
        return 2, "", "fake nvidia-smi: unexpected arguments: %s\n" % " ".join(args)
    path = Path(fixture_dir) / name
    if not path.is_file():
        return 2, "", "fake nvidia-smi: no fixture %s\n" % path
    rc_file = path.with_suffix(".rc")
    return (int(rc_file.read_text()) if rc_file.is_file() else 0), path.read_text(), ""


def main(argv: List[str]) -> int:
    fixture_dir = os.environ.get(ENV)
    if not fixture_dir:
        sys.stderr.write("fake nvidia-smi: set %s to a tests/unit/fixtures/nvidia-smi/<card> folder\n" % ENV)
        return 2
    rc, out, err = answer(fixture_dir, argv[1:])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
