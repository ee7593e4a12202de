# -*- coding: utf-8 -*-
"""What the monitoring host scrapes (roles/monitoring: monitoring_jobs), from the host's facts.

    {{ hostvars | llm_monitoring_jobs(inventory_hostname, settings) }}
        -> [{'name', 'scheme', 'metrics_path', 'bearer_token_file', 'ca_file', 'server_name',
             'targets': [{'address', 'host'}]}]

settings: {'engine_key_file': <file Prometheus reads the engine key from>, 'node_port': <int>,
'nginx_port': <int or 0: no nginx exporter>, 'nginx_log_port': <mtail's port, int or 0: none>,
'require_engine': <bool, default true; false (--check, where the engine role has not registered
llm_backends) leaves the engine job out>, 'peers': <the fleet's hosts, llm_fleet_layout.peers of
the monitoring host: [{'name', 'address', 'engine', 'front'}]; empty or absent: a host of its
own>, 'engine_port': <the engines' TLS endpoint port>, 'engine_ca_file': <the fleet CA on the
monitoring host>, 'engine_server_name': <the name the engines' certificates carry>,
'postgres_port', 'redis_port': <the datastore host's exporters; 0 or absent: none>}.

One host is its own monitoring host (single host, or each island of an inventory without fleet
groups): every target is on its loopback. In a fleet the monitoring host scrapes every host's
exporters on its private address and every engine's /metrics through its TLS endpoint (the fleet
CA, the key). The job names are the ones the alert rules
(roles/monitoring/files/llm-alerts.rules.yml) select on. Pinned by
tests/unit/test_monitoring_jobs.py.

    {{ lookup('file', 'llm-alerts.rules.yml') | llm_alert_rules(monitoring_alert_for) }}
        -> the rules file with the `for:` of the named alerts replaced ({alert name: duration});
           unchanged text when there is nothing to replace. An unknown alert name or a value that is
           no Prometheus duration is an error (preflight reports both before any change:
           llm_alert_for_problems).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from typing import Any, Dict, List, Mapping
from urllib.parse import urlsplit

import yaml

ENGINE_JOB = "llm_engine"
NODE_JOB = "node"
NGINX_JOB = "nginx"
NGINX_LOG_JOB = "nginx_log"
POSTGRES_JOB = "postgresql"
REDIS_JOB = "redis"


def _join(address: str, port: Any) -> str:
    return "%s:%d" % ("[%s]" % address if ":" in address else address, int(port))


def _engine_address(base_url: str, host: str) -> str:
    """host:port of the engine's OpenAI base URL (llm_backends[0], from the engine role)."""
    if not base_url:
        raise ValueError("%s has no engine (llm_backends is empty): the engine role runs before "
                         "monitoring" % host)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("%s: engine base URL %r is not an http(s) URL" % (host, base_url))
    return _join(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


def _fleet_jobs(peers: List[Mapping[str, Any]],
                settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    def every(port: Any, which: str = "") -> List[Dict[str, str]]:
        return [{"address": _join(str(p["address"]), port), "host": str(p["name"])}
                for p in peers if not which or p.get(which)]

    jobs = [{"name": ENGINE_JOB, "scheme": "https", "metrics_path": "/metrics",
             "bearer_token_file": str(settings["engine_key_file"]),
             "ca_file": str(settings["engine_ca_file"]),
             "server_name": str(settings["engine_server_name"]),
             "targets": every(settings["engine_port"], "engine")},
            {"name": NODE_JOB, "targets": every(settings["node_port"])}]
    if int(settings.get("nginx_port") or 0):
        jobs.append({"name": NGINX_JOB, "targets": every(settings["nginx_port"])})
    if int(settings.get("nginx_log_port") or 0):
        jobs.append({"name": NGINX_LOG_JOB, "targets": every(settings["nginx_log_port"])})
    for job, key in ((POSTGRES_JOB, "postgres_port"), (REDIS_JOB, "redis_port")):
        if int(settings.get(key) or 0):
            jobs.append({"name": job, "targets": every(settings[key], "datastore")})
    return jobs


def llm_monitoring_jobs(hostvars: Mapping[str, Any], host: str,
                        settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    if settings.get("peers"):
        return _fleet_jobs(list(settings["peers"]), settings)
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
    if int(settings.get("nginx_log_port") or 0):
        jobs.append({"name": NGINX_LOG_JOB, "targets": local(settings["nginx_log_port"])})
    return jobs


# A Prometheus duration (model.ParseDuration): units largest first, each at most once, not empty.
DURATION = re.compile(r"^(?=\d)(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")


def _alerts(rules: Mapping[str, Any]) -> List[Dict[str, Any]]:
    return [rule for group in rules.get("groups") or [] for rule in group.get("rules") or []
            if "alert" in rule]


def llm_alert_for_problems(text: str, overrides: Any) -> List[str]:
    """What is wrong with monitoring_alert_for, given the rules file's text (empty: nothing)."""
    if overrides in (None, ""):
        return []
    if not isinstance(overrides, Mapping):
        return ["monitoring_alert_for must be a mapping of alert name to a Prometheus duration, "
                "e.g. {LlmEngineDown: 5m}"]
    names = [rule["alert"] for rule in _alerts(yaml.safe_load(text))]
    problems = []
    for name, value in overrides.items():
        if name not in names:
            problems.append("monitoring_alert_for names %r, which is no alert of the bundle's "
                            "rules (roles/monitoring/files/llm-alerts.rules.yml): use one of %s"
                            % (name, ", ".join(names)))
        if not DURATION.match(str(value)):
            problems.append("monitoring_alert_for.%s is %r, not a Prometheus duration: use e.g. "
                            "30s, 5m or 1h30m" % (name, value))
    return problems


def llm_alert_rules(text: str, overrides: Any) -> str:
    problems = llm_alert_for_problems(text, overrides)
    if problems:
        raise ValueError("; ".join(problems))
    if not overrides:
        return text
    rules = yaml.safe_load(text)
    for rule in _alerts(rules):
        if rule["alert"] in overrides:
            rule["for"] = str(overrides[rule["alert"]])
    return ("# The bundle's alert rules with monitoring_alert_for applied (" +
            ", ".join("%s for %s" % (k, v) for k, v in sorted(overrides.items())) + ").\n" +
            yaml.safe_dump(rules, sort_keys=False, width=110, allow_unicode=True))


class FilterModule:
    def filters(self):
        return {"llm_monitoring_jobs": llm_monitoring_jobs,
                "llm_alert_rules": llm_alert_rules,
                "llm_alert_for_problems": llm_alert_for_problems}
