#!/usr/bin/env python3
"""Writes the Grafana dashboards of roles/monitoring (files/grafana/llm-fleet.json, llm-host.json).

    python3 tests/docs/grafana_dashboards.py [OUT_DIR]   (default: roles/monitoring/files/grafana)

One list of panels, two dashboards: the fleet (every host, one line per host) and one host (the
variable $host). The queries use the series the bundle's jobs collect (README "Monitoring"): the
engines' vllm:* or llamacpp:*, the GPU collector's llm_gpu_*, node-exporter, mtail's
llm_nginx_responses_total, the blackbox probe. tests/unit/test_grafana_dashboards.py checks that
the committed files are this script's output and that every query is valid PromQL (promtool).
"""

import json
import sys
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "llm-prometheus"}
FS = 'fstype!~"tmpfs|ramfs|overlay|squashfs"'

# (title, unit, [PromQL with {sel} for the host selector], panel type, legend)
PANELS = [
    ("Engines up", "none", ['sum(up{job="llm_engine"%(sel)s})'], "stat", ""),
    ("HTTPS probe", "none", ['min(probe_success{job="blackbox_https"%(sel)s})'], "stat", ""),
    ("Certificate expires in", "d",
     ['min((probe_ssl_earliest_cert_expiry{job="blackbox_https"%(sel)s} - time()) / 86400)'], "stat", ""),
    ("Requests running", "none",
     ['sum by (host) (vllm:num_requests_running{%(bare)s} or llamacpp:requests_processing{%(bare)s})'],
     "timeseries", "{{host}}"),
    ("Requests waiting", "none",
     ['max by (host) (vllm:num_requests_waiting{%(bare)s} or llamacpp:requests_deferred{%(bare)s})'],
     "timeseries", "{{host}}"),
    ("Generated tokens/s", "none",
     ['sum by (host) (rate(vllm:generation_tokens_total{%(bare)s}[$__rate_interval]))'
      ' or sum by (host) (rate(llamacpp:tokens_predicted_total{%(bare)s}[$__rate_interval]))'],
     "timeseries", "{{host}}"),
    ("Prompt tokens/s", "none",
     ['sum by (host) (rate(vllm:prompt_tokens_total{%(bare)s}[$__rate_interval]))'
      ' or sum by (host) (rate(llamacpp:prompt_tokens_total{%(bare)s}[$__rate_interval]))'],
     "timeseries", "{{host}}"),
    ("Time to first token, p95 (vLLM)", "s",
     ['histogram_quantile(0.95, sum by (host, le) '
      '(rate(vllm:time_to_first_token_seconds_bucket{%(bare)s}[$__rate_interval])))'],
     "timeseries", "{{host}}"),
    ("KV cache use (vLLM)", "percentunit", ['max by (host) (vllm:kv_cache_usage_perc{%(bare)s})'],
     "timeseries", "{{host}}"),
    ("GPU memory used", "percentunit",
     ['llm_gpu_memory_used_bytes{%(bare)s} / llm_gpu_memory_total_bytes{%(bare)s}'],
     "timeseries", "{{host}} GPU {{gpu}}"),
    ("GPU utilisation", "percentunit", ['llm_gpu_utilization_ratio{%(bare)s}'],
     "timeseries", "{{host}} GPU {{gpu}}"),
    ("GPU temperature", "celsius", ['llm_gpu_temperature_celsius{%(bare)s}'],
     "timeseries", "{{host}} GPU {{gpu}}"),
    ("GPU power", "watt", ['llm_gpu_power_watts{%(bare)s}'], "timeseries", "{{host}} GPU {{gpu}}"),
    ("GPU errors (Xid in 15 min, uncorrected ECC)", "none",
     ['sum by (host) (increase(llm_gpu_xid_errors_total{%(bare)s}[15m]))',
      'sum by (host) (llm_gpu_ecc_uncorrected_errors{%(bare)s})'],
     "timeseries", "{{host}}"),
    ("nginx responses by status", "reqps",
     ['sum by (host, status) (rate(llm_nginx_responses_total{%(bare)s}[$__rate_interval]))'],
     "timeseries", "{{host}} {{status}}"),
    ("nginx 5xx share", "percentunit",
     ['sum by (host) (rate(llm_nginx_responses_total{status=~"5..",%(bare)s}[$__rate_interval]))'
      ' / sum by (host) (rate(llm_nginx_responses_total{%(bare)s}[$__rate_interval]))'],
     "timeseries", "{{host}}"),
    ("Disk free (model store and system)", "percentunit",
     ['min by (host, mountpoint) (node_filesystem_avail_bytes{' + FS + ',%(bare)s}'
      ' / node_filesystem_size_bytes{' + FS + ',%(bare)s})'],
     "timeseries", "{{host}} {{mountpoint}}"),
]


def _panel(index, title, unit, exprs, kind, legend):
    width = 8 if kind == "stat" else 12
    stats = sum(1 for p in PANELS[:index] if p[3] == "stat")
    series = index - stats
    if kind == "stat":
        pos = {"x": stats * 8, "y": 0, "w": width, "h": 4}
    else:
        pos = {"x": (series % 2) * 12, "y": 4 + (series // 2) * 8, "w": width, "h": 8}
    return {
        "id": index + 1, "type": kind, "title": title, "datasource": DATASOURCE, "gridPos": pos,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + n), "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend} for n, expr in enumerate(exprs)],
    }


def dashboard(per_host):
    sel = {"sel": ',host="$host"' if per_host else "", "bare": 'host="$host"' if per_host else 'host!=""'}
    panels = [_panel(i, title, unit, [e % sel for e in exprs], kind, legend)
              for i, (title, unit, exprs, kind, legend) in enumerate(PANELS)]
    templating = {"list": []}
    if per_host:
        templating["list"].append({
            "name": "host", "label": "Host", "type": "query", "datasource": DATASOURCE,
            "query": {"query": "label_values(up, host)", "refId": "hosts"},
            "definition": "label_values(up, host)", "refresh": 2, "sort": 1,
        })
    return {
        "uid": "llm-host" if per_host else "llm-fleet",
        "title": "LLM host" if per_host else "LLM fleet",
        "tags": ["llm-bundle"], "timezone": "browser", "schemaVersion": 39, "version": 1,
        "editable": False, "refresh": "30s", "time": {"from": "now-3h", "to": "now"},
        "templating": templating, "panels": panels,
    }


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    for name, per_host in (("llm-fleet.json", False), ("llm-host.json", True)):
        (out / name).write_text(json.dumps(dashboard(per_host), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else
         Path(__file__).resolve().parents[2] / "roles" / "monitoring" / "files" / "grafana")
