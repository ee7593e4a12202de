# -*- coding: utf-8 -*-
"""Action plugin: wait for an async job and print its progress every few seconds.

Long tasks (model downloads, package builds, venv installs) start with ``async: N`` and
``poll: 0``; this action then polls ``async_status`` and, every ``interval`` seconds, measures
the job on the host and prints a line such as::

    [gpu1] model_store: 3.2 GiB / 15.2 GiB (21%), 48.0 MiB/s, ETA 4m12s, model-00002.safetensors

It returns the job's own result (failed with the job's msg/stderr when the job failed), so
``register``, ``changed_when`` and ``failed_when`` work on it as on the original task.

The formatting and rate/ETA arithmetic are plain functions at the top (unit-tested).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import shlex
import time
from base64 import b64decode

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PERCENT = re.compile(r"\[\s*(\d{1,3})%\]")


def format_bytes(count):
    """1536 -> '1.5 KiB'; bytes below 1 KiB stay whole ('512 B')."""
    value = float(max(count, 0))
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return "%d B" % value if unit == "B" else "%.1f %s" % (value, unit)
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds):
    """252 -> '4m12s', 3725 -> '1h02m', 9 -> '9s'."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % divmod(seconds, 60)
    hours, rest = divmod(seconds, 3600)
    return "%dh%02dm" % (hours, rest // 60)


class RateMeter:
    """Transfer rate over a sliding window of (time, bytes-so-far) samples."""

    def __init__(self, window=60.0):
        self.window = window
        self.samples = []

    def add(self, when, count):
        if self.samples and count < self.samples[-1][1]:
            self.samples = []  # the counter went back (a restarted file): start over
        self.samples.append((when, count))
        while len(self.samples) > 2 and when - self.samples[1][0] >= self.window:
            self.samples.pop(0)

    def rate(self):
        """Bytes per second, or None until two samples at different times exist."""
        if len(self.samples) < 2:
            return None
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None


def eta_seconds(done, total, rate):
    """Seconds left at this rate, or None when it cannot be told (no total, no rate, stalled)."""
    if not total or rate is None or rate <= 0:
        return None
    return max(total - done, 0) / rate


def progress_line(label, done, total=None, rate=None, elapsed=None, detail=""):
    """'label: 3.2 GiB / 15.2 GiB (21%), 48.0 MiB/s, ETA 4m12s, detail'; unknown parts left out."""
    if total:
        parts = [
            "%s / %s (%d%%)"
            % (format_bytes(done), format_bytes(total), min(100, int(100 * done / total)))
        ]
    else:
        parts = ["%s so far" % format_bytes(done)]
    if rate is not None:
        parts.append("%s/s" % format_bytes(rate))
        eta = eta_seconds(done, total, rate)
        if eta is not None:
            parts.append("ETA %s" % format_duration(eta))
    if elapsed is not None:
        parts.append("%s elapsed" % format_duration(elapsed))
    if detail:
        parts.append(detail)
    return "%s: %s" % (label, ", ".join(parts))


def log_progress(text, width=120):
    """The line worth showing from the tail of a build log: the last non-empty line, with the last
    '[ NN%]' (CMake, ninja) seen in the tail put in front when that line has none."""
    lines = [_ANSI.sub("", line).strip() for line in text.replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    last = lines[-1]
    if not _PERCENT.search(last):
        percents = [m.group(1) for line in lines for m in _PERCENT.finditer(line)]
        if percents:
            last = "[%3s%%] %s" % (percents[-1], last)
    return last if len(last) <= width else last[: width - 3] + "..."


def summary_line(label, done, elapsed):
    rate = done / elapsed if elapsed > 0 else None
    return "%s: done, %s in %s%s" % (
        label,
        format_bytes(done),
        format_duration(elapsed),
        ", %s/s" % format_bytes(rate) if rate else "",
    )


class ActionModule(ActionBase):
    """See plugins/modules/llm_wait_progress.py for the documentation."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(
        (
            "jid",
            "label",
            "interval",
            "poll",
            "timeout",
            "progress_file",
            "paths",
            "total_bytes",
            "log_file",
        )
    )
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(
            argument_spec=dict(
                jid=dict(type="str", default=""),
                label=dict(type="str", default="job"),
                interval=dict(type="int", default=15),
                poll=dict(type="int", default=3),
                timeout=dict(type="int", default=86400),
                progress_file=dict(type="str"),
                paths=dict(type="list", elements="str", default=[]),
                total_bytes=dict(type="int"),
                log_file=dict(type="str"),
            )
        )
        if not args["jid"]:
            result.update(
                skipped=True, changed=False, msg="no job was started (nothing to do, or check mode)"
            )
            return result
        self._task_vars = task_vars
        self._async_dir = self._remote_expand_user(
            self.get_shell_option("async_dir", default="~/.ansible_async")
        )
        host = task_vars.get("inventory_hostname", "")
        label = "[%s] %s" % (host, args["label"]) if host else args["label"]
        meter = RateMeter()
        start = last_line = time.monotonic()
        if args["progress_file"]:
            meter.add(start, 0)  # 'fetched' counts this run's transfer from zero
        done = 0
        while True:
            status = self._status(args["jid"], "status")
            if status.get("finished") or status.get("failed"):
                break
            now = time.monotonic()
            if now - start > args["timeout"]:
                return dict(
                    failed=True,
                    ansible_job_id=args["jid"],
                    msg="%s: still running after %s (timeout %ss); job %s goes on on the host"
                    % (args["label"], format_duration(now - start), args["timeout"], args["jid"]),
                )
            if now - last_line >= args["interval"]:
                last_line = now
                line, done = self._measure(args, label, meter, now, now - start)
                if line:
                    display.display(line)
            time.sleep(args["poll"])
        self._status(args["jid"], "cleanup")
        elapsed = time.monotonic() - start
        moved = status.get("fetched_bytes", done)
        if not status.get("failed") and elapsed >= args["interval"] and moved:
            display.display(summary_line(label, moved, elapsed))
        for key in ("started", "finished", "results_file", "stdout_lines", "stderr_lines"):
            status.pop(key, None)
        if "stdout" in status:
            status["stdout_lines"] = status["stdout"].splitlines()
        if "stderr" in status:
            status["stderr_lines"] = status["stderr"].splitlines()
        return status

    def _status(self, jid, mode):
        return self._execute_module(
            module_name="ansible.legacy.async_status",
            module_args={"jid": jid, "mode": mode, "_async_dir": self._async_dir},
            task_vars=self._task_vars,
        )

    def _measure(self, args, label, meter, now, elapsed):
        """One progress line and the bytes done, from whatever the task gave to look at."""
        done, total, detail, counter = 0, args["total_bytes"], "", None
        if args["progress_file"]:
            state = self._read_json(args["progress_file"])
            if state is None:
                return "%s: starting, %s elapsed" % (label, format_duration(elapsed)), 0
            done = int(state.get("done") or 0)
            total = state.get("total") or total
            counter = int(state.get("fetched", done) or 0)
            if state.get("file"):
                detail = "%s (file %d of %d)" % (
                    state["file"],
                    int(state.get("files_done", 0)) + 1,
                    int(state.get("files_total", 1)),
                )
        elif args["paths"]:
            done = counter = self._size_of(args["paths"])
        if args["log_file"]:
            detail = log_progress(self._tail(args["log_file"]))
            if not args["paths"] and not args["progress_file"]:
                return "%s: %s elapsed%s" % (
                    label,
                    format_duration(elapsed),
                    ", " + detail if detail else "",
                ), 0
        meter.add(now, counter or 0)
        return progress_line(
            label, done, total, meter.rate(), elapsed if not total else None, detail
        ), done

    def _read_json(self, path):
        res = self._execute_module(
            module_name="ansible.legacy.slurp", module_args={"src": path}, task_vars=self._task_vars
        )
        if res.get("failed") or "content" not in res:
            return None
        try:
            return json.loads(b64decode(res["content"]).decode("utf-8"))
        except ValueError:
            return None

    def _size_of(self, paths):
        """Bytes in the files and folders (apparent size, GNU du), 0 while none exists yet."""
        cmd = "du -scb -- %s 2>/dev/null | tail -n 1" % " ".join(shlex.quote(p) for p in paths)
        out = self._low_level_execute_command(cmd).get("stdout", "")
        try:
            return int((out if isinstance(out, str) else out.decode()).split()[0])
        except (IndexError, ValueError):
            return 0

    def _tail(self, path):
        res = self._low_level_execute_command("tail -c 4096 -- %s 2>/dev/null" % shlex.quote(path))
        out = res.get("stdout", "")
        return out if isinstance(out, str) else out.decode("utf-8", "replace")
