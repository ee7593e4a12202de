# -*- coding: utf-8 -*-
"""The shape of a fleet: which hosts serve the model, which carry the front door, which the data.

    {{ groups | llm_fleet_topology(ansible_play_hosts_all) }}
        -> {'fleet': bool, 'engines': [...], 'fronts': [...], 'datastore': 'host', 'errors': [...]}
    {{ llm_plan | llm_engine_weight }}                   -> 1 .. 100
    {{ hostvars | llm_fleet_layout(topology, inventory_hostname, ports) }}
        -> {'address', 'engine', 'front', 'datastore', 'engines', 'front_addresses',
            'datastore_address', 'firewall_allow'}

Inventory groups (README "A fleet"): llm_engines (hosts that run an engine), llm_fronts (nginx
gateway + Open WebUI), optionally llm_datastore (one host for PostgreSQL, Redis and Chroma; default
the first front). With neither llm_engines nor llm_fronts every host is its own island, engine on
loopback, as a single host has always been. Numbers are pinned by tests/unit/test_fleet.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
from typing import Any, Dict, Iterable, List, Mapping

ENGINES = "llm_engines"
FRONTS = "llm_fronts"
DATASTORE = "llm_datastore"
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
    if not engines and not fronts:
        return {"fleet": False, "engines": [], "fronts": [], "datastore": "",
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
    datastore = stores[0] if stores else (fronts[0] if fronts else "")
    stray = [h for h in play_hosts if h not in engines and h not in fronts and h != datastore]
    if stray:
        errors.append("in a fleet every host is in %s, %s or %s; these are in none: %s"
                      % (ENGINES, FRONTS, DATASTORE, ", ".join(stray)))
    return {"fleet": True, "engines": engines, "fronts": fronts, "datastore": datastore,
            "errors": errors}


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
            'vector': <the shared vector store's TLS endpoint port>}.
    """
    if not topology.get("fleet"):
        return {"address": "", "engine": True, "front": True, "datastore": False, "engines": [],
                "front_addresses": [], "datastore_address": "", "firewall_allow": []}
    fronts = list(topology["fronts"])
    engines = list(topology["engines"])
    front_addresses = sorted({_address(hostvars, h) for h in fronts})
    is_engine, is_front = host in engines, host in fronts
    is_store = host == topology["datastore"]
    allow = []
    if is_engine:
        allow.append({"port": int(ports["engine"]), "proto": "tcp", "from": front_addresses,
                      "comment": "LLM engine endpoint (TLS) for the gateways"})
    if is_store:
        allow.append({"port": int(ports["postgresql"]), "proto": "tcp", "from": front_addresses,
                      "comment": "PostgreSQL for Open WebUI"})
        allow.append({"port": int(ports["redis"]), "proto": "tcp", "from": front_addresses,
                      "comment": "Redis for Open WebUI"})
        allow.append({"port": int(ports["vector"]), "proto": "tcp", "from": front_addresses,
                      "comment": "Chroma vector store (TLS) for Open WebUI"})
    gateway = []
    if is_front:
        for name in engines:
            hv = hostvars[name]
            weight = hv.get("llm_gateway_weight") or llm_engine_weight(hv.get("llm_plan") or {})
            gateway.append({"name": name, "address": _address(hostvars, name),
                            "port": int(ports["engine"]), "weight": int(weight)})
    return {"address": _address(hostvars, host), "engine": is_engine, "front": is_front,
            "datastore": is_store, "engines": gateway, "front_addresses": front_addresses,
            "datastore_address": _address(hostvars, topology["datastore"]), "firewall_allow": allow}


class FilterModule:
    def filters(self):
        return {
            "llm_fleet_topology": llm_fleet_topology,
            "llm_engine_weight": llm_engine_weight,
            "llm_fleet_layout": llm_fleet_layout,
        }
