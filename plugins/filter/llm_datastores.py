# -*- coding: utf-8 -*-
"""Filters for the datastores of several Open WebUI replicas (roles postgresql and redis).

    {{ ansible_facts['memtotal_mb'] | llm_postgresql_tuning(replicas) }}
        -> {'shared_buffers_mb': ..., 'effective_cache_size_mb': ..., 'max_connections': ...}
    {{ ['10.0.0.5', '10.0.1.0/24'] | llm_networks }}  -> ['10.0.0.5/32', '10.0.1.0/24']

The numbers are documented in roles/postgresql/README.md ("Tuning") and pinned with exact
values by tests/unit/test_datastores.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
from typing import Any, Dict, Iterable, List

# PostgreSQL shares the host with the engine, Open WebUI and nginx: it takes 1/16 of the memory
# for its buffer cache (a dedicated database server would take 1/4), between PostgreSQL's own
# default (128 MB) and 8 GB (Open WebUI's database stays far below that: users, chats, settings).
SHARED_BUFFERS_SHARE = 16
SHARED_BUFFERS_MIN_MB = 128
SHARED_BUFFERS_MAX_MB = 8192
# effective_cache_size is only the planner's guess of the cache (shared buffers plus the kernel's
# page cache) a query may find its data in: 1/4 of the memory, at least 512 MB.
EFFECTIVE_CACHE_SHARE = 4
EFFECTIVE_CACHE_MIN_MB = 512
# Open WebUI 0.12.4 (open_webui/internal/db.py) opens a sync and an async SQLAlchemy engine; with
# DATABASE_POOL_SIZE unset each is SQLAlchemy's QueuePool of 5 plus an overflow of 10: at most 30
# connections per Open WebUI process (one per replica unless UVICORN_WORKERS is raised).
CONNECTIONS_PER_REPLICA = 30
# superuser_reserved_connections (3), psql, backups, monitoring, the migrating start (NullPool).
RESERVED_CONNECTIONS = 20
MAX_CONNECTIONS_MIN = 100  # PostgreSQL's default


def _whole(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool):
        raise ValueError("%s must be a whole number of at least %d, got %r" % (name, low, value))
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError("%s must be a whole number of at least %d, got %r"
                         % (name, low, value)) from None
    if number < low:
        raise ValueError("%s must be at least %d, got %d" % (name, low, number))
    return number


def llm_postgresql_tuning(memtotal_mb: Any, replicas: Any = 1) -> Dict[str, int]:
    """Server settings for PostgreSQL from the host's memory (MB) and the Open WebUI replicas.

    shared_buffers_mb       = memtotal_mb // 16, within 128 .. 8192
    effective_cache_size_mb = max(memtotal_mb // 4, 512)
    max_connections         = max(replicas * 30 + 20, 100)
    """
    memory = _whole(memtotal_mb, "ansible_facts['memtotal_mb']", 1)
    count = _whole(replicas, "postgresql_open_webui_replicas", 1)
    shared = min(max(memory // SHARED_BUFFERS_SHARE, SHARED_BUFFERS_MIN_MB), SHARED_BUFFERS_MAX_MB)
    return {
        "shared_buffers_mb": shared,
        "effective_cache_size_mb": max(memory // EFFECTIVE_CACHE_SHARE, EFFECTIVE_CACHE_MIN_MB),
        "max_connections": max(count * CONNECTIONS_PER_REPLICA + RESERVED_CONNECTIONS,
                               MAX_CONNECTIONS_MIN),
    }


def llm_networks(addresses: Iterable[Any]) -> List[str]:
    """Addresses or networks as CIDR (a bare address gets /32 or /128), for pg_hba.conf.

    Host bits set (10.0.0.1/8) are refused: pg_hba.conf would silently widen them.
    """
    out = []
    for item in addresses or []:
        text = str(item).strip().strip("[]") if "/" not in str(item) else str(item).strip()
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ValueError("%r is not an IP address or network (CIDR) with no host bits set: %s"
                             % (str(item), exc)) from None
        out.append(network.with_prefixlen)
    return out


class FilterModule:
    def filters(self):
        return {"llm_postgresql_tuning": llm_postgresql_tuning,
                "llm_networks": llm_networks}
