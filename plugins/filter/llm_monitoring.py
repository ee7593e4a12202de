# -*- coding: utf-8 -*-
"""What the monitoring host scrapes (roles/monitoring: monitoring_jobs), from the host's facts.

    {{ hostvars | llm_monitoring_jobs(inventory_hostname, settings) }}
        -> [{'name', 'scheme', 'metrics_path', 'bearer_token_file',
             'targets': [{'address', 'host'}]}]

settings: {'engine_key_file': <file Prometheus reads the engine key from>, 'node_port': <int>,
'nginx_port': <int or 0: no nginx exporter>, 'require_engine': <bool, default true; false (--check,
where the engine role has not registered llm_backends) leaves the engine job out>}.

One host is its own monitoring host (single host, or each island of an inventory without fleet
groups): every target is on its loopback. The job names
are the ones the alert rules (roles/monitoring/files/llm-alerts.rules.yml) select on. Pinned by
tests/unit/test_monitoring_jobs.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import Any, Dict, List, Mapping
from urllib.parse import urlsplit

ENGINE_JOB = "llm_engine"
NODE_JOB = "node"
NGINX_JOB = "nginx"


def _engine_address(base_url: str, host: str) -> str:
    """host:port of the engine's OpenAI base URL (llm_backends[0], from the engine role)."""
    if not base_url:
        raise ValueError("%s has no engine (llm_backends is empty): the engine role runs before "
                         "monitoring" % host)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("%s: engine base URL %r is not an http(s) URL" % (host, base_url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    name = "[%s]" % parts.hostname if ":" in parts.hostname else parts.hostname
    return "%s:%d" % (name, port)


def llm_monitoring_jobs(hostvars: Mapping[str, Any], host: str,
                        settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    base = str(((hostvars[host].get("llm_backends") or [{}])[0] or {}).get("base_url") or "")

    def local(port: Any) -> List[Dict[str, str]]:
        return [{"address": "127.0.0.1:%d" % int(port), "host": host}]

    jobs = []
    if base or settings.get("require_engine", True):
        jobs.append({"name": ENGINE_JOB, "scheme": urlsplit(base).scheme or "http",
                     "metrics_path": "/metrics",
                     "bearer_token_file": str(settings["engine_key_file"]),
                     "targets": [{"address": _engine_address(base, host), "host": host}]})
    jobs.append({"name": NODE_JOB, "targets": local(settings["node_port"])})
    if int(settings.get("nginx_port") or 0):
        jobs.append({"name": NGINX_JOB, "targets": local(settings["nginx_port"])})
    return jobs


class FilterModule:
    def filters(self):
        return {"llm_monitoring_jobs": llm_monitoring_jobs}
