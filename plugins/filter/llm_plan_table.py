# -*- coding: utf-8 -*-
"""Filter: one text table of every host's llm_plan (or its failure), for playbooks/plan.yml.

    {{ hostvars | llm_plan_table(ansible_play_hosts_all) }}

A host counts as planned when this run set `llm_plan_ok: true` (a cached `llm_plan` fact
from an earlier run does not count); otherwise its row shows `llm_plan_error`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

COLUMNS = ("host", "GPU", "VRAM", "driver", "quantization", "engine", "context", "util",
           "concurrency")


def _get(mapping, key, default=None):
    try:
        value = mapping.get(key, default)
    except AttributeError:
        try:
            value = mapping[key]
        except (KeyError, TypeError):
            value = default
    return default if value is None else value


def _true(value):
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return bool(value)


def plan_rows(hostvars, hosts):
    rows = []
    for host in hosts:
        hv = _get(hostvars, host, {}) or {}
        plan = _get(hv, "llm_plan", {}) or {}
        if not _true(_get(hv, "llm_plan_ok", False)) or not plan:
            error = (_get(hv, "llm_plan_error", "")
                     or "no plan (host unreachable or gpu_facts failed)")
            rows.append((str(host), "FAILED: " + " ".join(str(error).split())))
            continue
        if plan.get("mode") == "cpu":
            gpu, vram, util = "CPU (demo)", "-", "-"
        else:
            count = int(plan.get("gpu_count") or 0)
            gpu = "%s%s" % ("%dx " % count if count > 1 else "", plan.get("gpu_name"))
            idle = [r for r in plan.get("gpu_layout") or []
                    if str(r.get("role", "")).startswith("unused")]
            if idle:
                gpu += " (+%d unused)" % len(idle)
            vram = "%.1f GiB" % (float(plan.get("vram_mib") or 0) / 1024)
            util = str(plan.get("gpu_memory_utilization"))
        context = str(plan.get("max_model_len"))
        if plan.get("hf_overrides"):
            context += " (YaRN)"
        quant = str(plan.get("quantization"))
        if plan.get("kv_cache_dtype") == "fp8":
            quant += " +fp8 KV"
        engine = str(plan.get("engine"))
        if plan.get("engine") == "vllm":
            engine += " %s" % plan.get("vllm_wheel_variant")
            if int(plan.get("tensor_parallel_size") or 1) > 1:
                engine += " tp%s" % plan.get("tensor_parallel_size")
            if int(plan.get("data_parallel_size") or 1) > 1:
                engine += " x%s" % plan.get("data_parallel_size")
        concurrency = "%s seqs, KV %s tok" % (plan.get("max_num_seqs"),
                                              plan.get("kv_cache_tokens"))
        rows.append((str(host), gpu, vram, str(plan.get("driver_version") or "-"), quant,
                     engine, context, util, concurrency))
    return rows


def plan_table(hostvars, hosts):
    rows = plan_rows(hostvars, hosts)
    full = [r for r in rows if len(r) == len(COLUMNS)]
    widths = [max([len(c)] + [len(r[i]) for r in full]) for i, c in enumerate(COLUMNS)]
    widths[0] = max([widths[0]] + [len(r[0]) for r in rows])

    def line(cells):
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()

    out = [line(COLUMNS), line(["-" * w for w in widths])]
    for row in rows:
        if len(row) == len(COLUMNS):
            out.append(line(row))
        else:
            out.append(row[0].ljust(widths[0]) + "  " + row[1])
    return "\n".join(out)


def plan_failures(hostvars, hosts):
    """['host: message', ...] for every host without a plan from this run."""
    return ["%s: %s" % (r[0], r[1][len("FAILED: "):]) for r in plan_rows(hostvars, hosts)
            if len(r) == 2]


#: What an operator needs to see when a re-plan changes a plan.
DIFF_KEYS = ("engine", "quantization", "max_model_len", "gpu_memory_utilization",
             "kv_cache_tokens", "tensor_parallel_size", "data_parallel_size",
             "cuda_visible_devices", "gpu_name", "gpu_count", "vram_mib",
             "gpu_memory_used_mib", "driver_version", "vllm_wheel_variant", "provisional")


def plan_diff(before, after):
    """['key: old -> new', ...] for the plan keys that differ (empty when equal)."""
    before, after = before or {}, after or {}
    return ["%s: %s -> %s" % (k, before.get(k), after.get(k)) for k in DIFF_KEYS
            if before.get(k) != after.get(k)]


def plan_summary(plan):
    """One line: GPUs, engine, quantization, context, replicas, utilization."""
    plan = plan or {}
    if plan.get("mode") == "cpu":
        where = "CPU"
    else:
        where = "%sx %s (GPU %s)" % (plan.get("gpu_count"), plan.get("gpu_name"),
                                     plan.get("cuda_visible_devices"))
    return ("%s: %s %s, context %s, %s replica(s), utilization %s"
            % (where, plan.get("engine"), plan.get("quantization"), plan.get("max_model_len"),
               plan.get("data_parallel_size", 1), plan.get("gpu_memory_utilization")))


class FilterModule(object):
    def filters(self):
        return {"llm_plan_table": plan_table, "llm_plan_failures": plan_failures,
                "llm_plan_diff": plan_diff, "llm_plan_summary": plan_summary}
