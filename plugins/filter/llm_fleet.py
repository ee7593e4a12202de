# -*- coding: utf-8 -*-
"""The shape of a fleet: which hosts serve the model, which carry the front door, which the data.

    {{ groups | llm_fleet_topology(ansible_play_hosts_all) }}
        -> {'fleet': bool, 'engines': [...], 'fronts': [...], 'datastore': 'host',
            'monitoring': 'host', 'errors': [...]}
    {{ llm_plan | llm_engine_weight }}                   -> 1 .. 100
    {{ hostvars | llm_fleet_layout(topology, inventory_hostname, ports) }}
        -> {'address', 'engine', 'front', 'datastore', 'monitoring', 'engines', 'front_addresses',
            'engine_clients', 'datastore_address', 'monitoring_address', 'peers', 'firewall_allow'}

Inventory groups (README "A fleet"): llm_engines (hosts that run an engine), llm_fronts (nginx
gateway + Open WebUI), optionally llm_datastore (one host for PostgreSQL, Redis and Chroma; default
the first front) and llm_monitoring (one host for Prometheus, Alertmanager and the blackbox
exporter; default the first front). With neither llm_engines nor llm_fronts every host is its own
island, engine on loopback, as a single host has always been. Numbers are pinned by
tests/unit/test_fleet.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
from typing import Any, Dict, Iterable, List, Mapping

ENGINES = "llm_engines"
FRONTS = "llm_fronts"
DATASTORE = "llm_datastore"
MONITORING = "llm_monitoring"
# nginx's consistent hash places weight x 160 points per server on its ring: 100 keeps the ring
# small and still tells an H200 from a 3060.
WEIGHT_MAX = 100
# One weight unit per 4096 tokens of KV cache the engine's plan holds (x data-parallel copies):
# the number of conversations an engine can keep cached is what its share of the traffic should be.
TOKENS_PER_WEIGHT = 4096


def _names(value: Any) -> List[str]:
    return [str(h) for h in (value or [])]


def llm_fleet_topology(groups: Mapping[str, Any],
                       play_hosts: Iterable[str] = ()) -> Dict[str, Any]:
    """Read the fleet groups. 'errors' lists what must change before anything is touched."""
    engines = _names(groups.get(ENGINES))
    fronts = _names(groups.get(FRONTS))
    stores = _names(groups.get(DATASTORE))
    watchers = _names(groups.get(MONITORING))
    if not engines and not fronts:
        return {"fleet": False, "engines": [], "fronts": [], "datastore": "", "monitoring": "",
                "errors": []}
    errors = []
    if not engines:
        errors.append("group %s is set but %s is empty: put the hosts that run the model in %s "
                      "(a host may be in both)" % (FRONTS, ENGINES, ENGINES))
    if not fronts:
        errors.append("group %s is set but %s is empty: put the hosts that run nginx and "
                      "Open WebUI in %s (a host may be in both)" % (ENGINES, FRONTS, FRONTS))
    if len(stores) > 1:
        errors.append("group %s must hold one host (PostgreSQL, Redis and Chroma for every "
                      "Open WebUI), it holds %d: %s" % (DATASTORE, len(stores), ", ".join(stores)))
    if len(watchers) > 1:
        errors.append("group %s must hold one host (Prometheus and Alertmanager of the fleet), it "
                      "holds %d: %s" % (MONITORING, len(watchers), ", ".join(watchers)))
    datastore = stores[0] if stores else (fronts[0] if fronts else "")
    monitoring = watchers[0] if watchers else (fronts[0] if fronts else "")
    stray = [h for h in play_hosts
             if h not in engines and h not in fronts and h not in (datastore, monitoring)]
    if stray:
        errors.append("in a fleet every host is in %s, %s, %s or %s; these are in none: %s"
                      % (ENGINES, FRONTS, DATASTORE, MONITORING, ", ".join(stray)))
    return {"fleet": True, "engines": engines, "fronts": fronts, "datastore": datastore,
            "monitoring": monitoring, "errors": errors}


def llm_engine_weight(plan: Mapping[str, Any]) -> int:
    """An engine host's gateway weight: ceil(KV tokens x copies / 4096), within 1..100."""
    tokens = int((plan or {}).get("kv_cache_tokens") or 0)
    copies = max(int((plan or {}).get("data_parallel_size") or 1), 1)
    return min(max(math.ceil(tokens * copies / TOKENS_PER_WEIGHT), 1), WEIGHT_MAX)


def _address(hostvars: Mapping[str, Any], host: str) -> str:
    hv = hostvars[host]
    explicit = hv.get("llm_private_address")
    if explicit:
        return str(explicit)
    facts = hv.get("ansible_facts") or {}
    address = (facts.get("default_ipv4") or {}).get("address")
    if not address:
        raise ValueError("no private address for %s: set llm_private_address for it (no "
                         "default IPv4 route was found in its facts)" % host)
    return str(address)


def llm_fleet_layout(hostvars: Mapping[str, Any], topology: Mapping[str, Any], host: str,
                     ports: Mapping[str, Any]) -> Dict[str, Any]:
    """What one host of a fleet runs, and the peers it talks to or lets in.

    ports: {'engine': <engine endpoint port>, 'postgresql': <port>, 'redis': <port>,
            'vector': <the shared vector store's TLS endpoint port>,
            'exporters': [<port every host's exporters listen on>, ...] (empty or absent: the fleet
            is not monitored), 'datastore_exporters': [<port of the datastore host's PostgreSQL and
            Redis exporters>, ...]}.

    The monitoring host (topology 'monitoring') reaches every host's exporters and every engine's
    endpoint (its /metrics, with the key); 'peers' lists the hosts it scrapes (its own layout only).
    """
    if not topology.get("fleet"):
        return {"address": "", "engine": True, "front": True, "datastore": False,
                "monitoring": False, "engines": [], "front_addresses": [], "engine_clients": [],
                "datastore_address": "", "monitoring_address": "", "peers": [],
                "firewall_allow": []}
    fronts = list(topology["fronts"])
    engines = list(topology["engines"])
    front_addresses = sorted({_address(hostvars, h) for h in fronts})
    exporter_ports = [int(p) for p in ports.get("exporters") or [] if int(p)]
    watcher = topology.get("monitoring") or ""
    monitoring_address = _address(hostvars, watcher) if watcher and exporter_ports else ""
    engine_clients = sorted(set(front_addresses) | ({monitoring_address} - {""}))
    is_engine, is_front = host in engines, host in fronts
    is_store = host == topology["datastore"]
    is_watcher = bool(monitoring_address) and host == watcher
    allow = []
    if is_engine:
        allow.append({"port": int(ports["engine"]), "proto": "tcp", "from": engine_clients,
                      "comment": "LLM engine endpoint (TLS) for the gateways and monitoring"})
    if is_store:
        allow.append({"port": int(ports["postgresql"]), "proto": "tcp", "from": front_addresses,
                      "comment": "PostgreSQL for Open WebUI"})
        allow.append({"port": int(ports["redis"]), "proto": "tcp", "from": front_addresses,
                      "comment": "Redis for Open WebUI"})
        allow.append({"port": int(ports["vector"]), "proto": "tcp", "from": front_addresses,
                      "comment": "Chroma vector store (TLS) for Open WebUI"})
    store_ports = [int(p) for p in ports.get("datastore_exporters") or [] if int(p)]
    for port in exporter_ports + (store_ports if is_store and monitoring_address else []):
        allow.append({"port": port, "proto": "tcp", "from": [monitoring_address],
                      "comment": "exporter for the monitoring host"})
    gateway = []
    if is_front:
        for name in engines:
            hv = hostvars[name]
            weight = hv.get("llm_gateway_weight") or llm_engine_weight(hv.get("llm_plan") or {})
            gateway.append({"name": name, "address": _address(hostvars, name),
                            "port": int(ports["engine"]), "weight": int(weight)})
    peers = []
    if is_watcher:
        for name in dict.fromkeys(engines + fronts + [topology["datastore"], watcher]):
            peers.append({"name": name, "address": _address(hostvars, name),
                          "engine": name in engines, "front": name in fronts,
                          "datastore": name == topology["datastore"]})
    return {"address": _address(hostvars, host), "engine": is_engine, "front": is_front,
            "datastore": is_store, "monitoring": is_watcher, "engines": gateway,
            "front_addresses": front_addresses, "engine_clients": engine_clients,
            "datastore_address": _address(hostvars, topology["datastore"]),
            "monitoring_address": monitoring_address, "peers": peers, "firewall_allow": allow}


class FilterModule:
    def filters(self):
        return {
            "llm_fleet_topology": llm_fleet_topology,
            "llm_engine_weight": llm_engine_weight,
            "llm_fleet_layout": llm_fleet_layout,
        }
