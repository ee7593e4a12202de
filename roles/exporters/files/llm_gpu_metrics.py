#!/usr/bin/env python
"""GPU metrics of this host for node-exporter's textfile collector (roles/exporters,
llm-gpu-metrics.timer).

    python3 llm_gpu_metrics.py <output .prom file> <nvidia-smi path>

Reads nvidia-smi and this boot's Xid lines from the kernel log with the bundle's parser
(llm_gpu.py from plugins/module_utils, installed beside it in /usr/local/lib/llm-bundle/) and
replaces the output file atomically, so node-exporter never reads half a file. A failing
nvidia-smi still yields a file (llm_gpu_collector_up 0 and the Xid counts).
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, "/usr/local/lib/llm-bundle")
import llm_gpu  # noqa: E402  installed by the exporters role


def run(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return 124, "", "%s: no answer in 30 s" % argv[0]
    return proc.returncode, proc.stdout, proc.stderr


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    output, nvidia_smi = argv[1], argv[2]
    text = llm_gpu.collect_metrics(run, nvidia_smi=nvidia_smi)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(output), prefix=".llm_gpu.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
