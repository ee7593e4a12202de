"""llm_wait_progress: the progress arithmetic and lines, then the action in a real playbook run."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import local_play

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "llm_wait_progress_action", REPO / "plugins" / "action" / "llm_wait_progress.py"
)
wp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wp)

GiB = 1024**3
MiB = 1024**2


@pytest.mark.parametrize(
    "count,text",
    [
        (0, "0 B"),
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (48 * MiB, "48.0 MiB"),
        (int(3.2 * GiB), "3.2 GiB"),
        (int(15.2 * GiB), "15.2 GiB"),
        (3 * 1024 * GiB, "3.0 TiB"),
        (-5, "0 B"),
    ],
)
def test_format_bytes_uses_binary_units(count, text):
    assert wp.format_bytes(count) == text


@pytest.mark.parametrize(
    "seconds,text",
    [
        (0, "0s"),
        (9.4, "9s"),
        (59.6, "1m00s"),
        (252, "4m12s"),
        (3599, "59m59s"),
        (3725, "1h02m"),
        (-3, "0s"),
    ],
)
def test_format_duration_reads_like_a_clock(seconds, text):
    assert wp.format_duration(seconds) == text


def test_rate_is_measured_over_the_sliding_window():
    meter = wp.RateMeter(window=60)
    assert meter.rate() is None
    meter.add(0, 0)
    assert meter.rate() is None  # one sample tells no rate
    meter.add(10, 100 * MiB)
    assert meter.rate() == pytest.approx(10 * MiB)
    # Later samples at a slower pace: the oldest ones leave the 60 s window, the rate follows.
    for t in range(20, 200, 10):
        meter.add(t, 100 * MiB + (t - 10) * MiB)
    assert meter.rate() == pytest.approx(1 * MiB)


def test_rate_starts_over_when_the_counter_goes_back():
    meter = wp.RateMeter()
    meter.add(0, 0)
    meter.add(10, 500)
    meter.add(20, 100)  # a corrupt partial was dropped and the file restarted
    assert meter.rate() is None
    meter.add(30, 300)
    assert meter.rate() == pytest.approx(20)


def test_eta_is_bytes_left_over_rate_and_unknown_without_total_or_rate():
    assert wp.eta_seconds(3 * GiB, 15 * GiB, 48 * MiB) == pytest.approx(12 * 1024 / 48)
    assert wp.eta_seconds(20, 10, 5) == 0
    assert wp.eta_seconds(1, None, 5) is None
    assert wp.eta_seconds(1, 10, None) is None
    assert wp.eta_seconds(1, 10, 0) is None


def test_progress_line_has_done_total_percent_rate_and_eta():
    line = wp.progress_line(
        "model_store", int(3.2 * GiB), int(15.2 * GiB), 48 * MiB, detail="model-00002.safetensors"
    )
    assert (
        line
        == "model_store: 3.2 GiB / 15.2 GiB (21%), 48.0 MiB/s, ETA 4m16s, model-00002.safetensors"
    )


def test_progress_line_without_total_shows_bytes_so_far_and_elapsed():
    assert (
        wp.progress_line("venv", 2 * GiB, None, None, elapsed=75)
        == "venv: 2.0 GiB so far, 1m15s elapsed"
    )
    assert wp.progress_line("x", 10, 10, 0) == "x: 10 B / 10 B (100%), 0 B/s"


def test_log_progress_keeps_the_last_cmake_percent_in_front():
    log = (
        "[ 12%] Building C object ggml/src/ggml.c.o\n"
        "\x1b[32m[ 45%] Building CXX object src/llama.cpp.o\x1b[0m\n"
        "In file included from x.h:3:\n\n"
    )
    assert wp.log_progress(log) == "[ 45%] In file included from x.h:3:"
    assert (
        wp.log_progress("[ 97%] Linking CXX executable bin/llama-server\n")
        == "[ 97%] Linking CXX executable bin/llama-server"
    )
    assert wp.log_progress("dpkg-deb: building package\n") == "dpkg-deb: building package"
    assert wp.log_progress("\n \n") == ""
    assert len(wp.log_progress("x" * 500, width=80)) == 80


def test_summary_line_gives_the_average_rate():
    assert wp.summary_line("m", 600 * MiB, 60) == "m: done, 600.0 MiB in 1m00s, 10.0 MiB/s"


# --- the action in a real run (local connection) ----------------------------------------------

PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Long job writing a log
      ansible.builtin.shell:
        cmd: for i in 1 2 3 4 5 6; do echo "[ $((i*15))%] step $i" >> {log}; head -c 200000 /dev/zero >> {out}; sleep 1; done; echo finished; exit {rc}
      async: 60
      poll: 0
      register: job

    - name: Wait with progress
      llm_wait_progress:
        jid: "{{{{ job.ansible_job_id | default('') }}}}"
        label: build
        log_file: {log}
        paths: [{out}]
        total_bytes: 1200000
        interval: 1
        poll: 1
      register: waited
      ignore_errors: true

    - name: Show
      ansible.builtin.debug:
        msg: "RESULT rc={{{{ waited.rc | default('none') }}}} failed={{{{ waited is failed }}}} skipped={{{{ waited is skipped }}}} stdout={{{{ waited.stdout | default('') }}}}"
"""


def _play(tmp_path, rc, *extra):
    book = tmp_path / "play.yml"
    book.write_text(PLAY.format(log=tmp_path / "build.log", out=tmp_path / "out.bin", rc=rc))
    inv, env = local_play(tmp_path, ANSIBLE_ASYNC_DIR=str(tmp_path / "async"))
    proc = subprocess.run(
        [PLAYBOOK, "-i", str(inv), str(book), *extra],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")
def test_action_prints_progress_lines_and_returns_the_job_result(tmp_path):
    rc, out = _play(tmp_path, 0)
    assert rc == 0, out
    lines = [line for line in out.splitlines() if line.startswith("[h1] build: ")]
    assert len(lines) >= 2, out
    assert any("KiB / 1.1 MiB (" in line and "[" in line and "%] step" in line for line in lines), (
        out
    )
    assert "RESULT rc=0 failed=False skipped=False stdout=finished" in out, out
    assert not any((tmp_path / "async").glob("j*")), "the job's status file is cleaned up"


@pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")
def test_action_fails_when_the_job_fails(tmp_path):
    rc, out = _play(tmp_path, 3)
    assert "RESULT rc=3 failed=True skipped=False stdout=finished" in out, out


@pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")
def test_action_skips_without_a_job_in_check_mode(tmp_path):
    # shell does not run in check mode, so no job id: the wait is skipped, not an error.
    rc, out = _play(tmp_path, 0, "--check")
    assert rc == 0, out
    assert "skipped=True" in out, out
    assert "[h1] build: " not in out, out
