"""The configuration files of roles/postgresql and roles/redis, rendered and read back.

Rendered like the template module (trim_blocks, undefined names fail, Ansible's core filters and
the bundle's llm_datastores filters), from each role's defaults plus the case's variables. The
tuning numbers come from the same expression tasks/configure.yml gives the template.
"""

import hashlib
import re
from pathlib import Path

import jinja2
import llm_datastores
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule as CoreFilters
from ansible.plugins.filter.mathstuff import FilterModule as MathFilters
from jinja2.nativetypes import NativeEnvironment

REPO = Path(__file__).resolve().parents[2]
PG = REPO / "roles" / "postgresql"
REDIS = REPO / "roles" / "redis"


def _filters() -> dict:
    return {**CoreFilters().filters(), **MathFilters().filters(), **llm_datastores.FilterModule().filters()}


def _defaults(role: Path) -> dict:
    return yaml.safe_load((role / "defaults" / "main.yml").read_text())


def _tuning_expression() -> str:
    tasks = yaml.safe_load((PG / "tasks" / "configure.yml").read_text())
    task = next(t for t in tasks if t.get("ansible.builtin.template", {}).get("src") == "llm-bundle.conf.j2")
    return task["vars"]["_postgresql_tuning"]


def render(role: Path, name: str, **overrides) -> str:
    variables = {**_defaults(role), "ansible_managed": "Ansible managed", **overrides}
    if name == "llm-bundle.conf.j2":
        native = NativeEnvironment(undefined=jinja2.StrictUndefined)
        native.filters.update(_filters())
        variables["_postgresql_tuning"] = native.from_string(_tuning_expression()).render(**variables)
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(_filters())
    return env.from_string((role / "templates" / name).read_text()).render(**variables)


def settings(text: str) -> dict:
    """name = 'value' lines of a postgresql.conf file -> {name: value} (quotes undone)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            match = re.fullmatch(r"([a-z_.]+) = '((?:[^']|'')*)'", line)
            assert match, "not a setting line: %r" % line
            out[match.group(1)] = match.group(2).replace("''", "'")
    return out


def hba(text: str) -> list:
    return [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]


FACTS_16GB = {"memtotal_mb": 15995}


def test_single_host_postgresql_listens_on_loopback_with_the_formula():
    conf = settings(render(PG, "llm-bundle.conf.j2", ansible_facts=FACTS_16GB))
    assert conf == {"listen_addresses": "localhost", "port": "5432", "password_encryption": "scram-sha-256",
                    "max_connections": "100", "shared_buffers": "999MB", "effective_cache_size": "3998MB"}


def test_fleet_postgresql_adds_addresses_connections_and_operator_settings():
    conf = settings(render(PG, "llm-bundle.conf.j2", ansible_facts={"memtotal_mb": 128824},
                           postgresql_listen_addresses=["10.0.0.5", "localhost"], postgresql_port=5433,
                           postgresql_open_webui_replicas=4,
                           postgresql_settings={"shared_buffers": "2GB", "log_line_prefix": "%m it's "}))
    assert conf["listen_addresses"] == "localhost,10.0.0.5"
    assert (conf["port"], conf["max_connections"], conf["effective_cache_size"]) == ("5433", "140", "32206MB")
    assert conf["shared_buffers"] == "2GB"  # the operator's value wins over the computed 8051MB
    assert conf["log_line_prefix"] == "%m it's "  # the quote is doubled in the file and read back


def test_pg_hba_keeps_debians_rules_and_adds_one_scram_rule_per_peer():
    default = hba(render(PG, "pg_hba.conf.j2"))
    assert default == [
        ["local", "all", "postgres", "peer"], ["local", "all", "all", "peer"],
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"], ["host", "all", "all", "::1/128", "scram-sha-256"],
        ["local", "replication", "all", "peer"],
        ["host", "replication", "all", "127.0.0.1/32", "scram-sha-256"],
        ["host", "replication", "all", "::1/128", "scram-sha-256"]]
    fleet = hba(render(PG, "pg_hba.conf.j2", postgresql_allow_from=["10.0.0.7", "10.0.1.0/24", "fd00::7"]))
    assert fleet[:len(default)] == default
    assert fleet[len(default):] == [
        ["host", "open_webui", "open_webui", "10.0.0.7/32", "scram-sha-256"],
        ["host", "open_webui", "open_webui", "10.0.1.0/24", "scram-sha-256"],
        ["host", "open_webui", "open_webui", "fd00::7/128", "scram-sha-256"]]
    assert not [r for r in fleet if r[-1] in ("trust", "md5", "password")]


def test_pg_hba_refuses_a_peer_with_host_bits():
    with pytest.raises(ValueError, match="'10.0.0.1/24' is not an IP address or network"):
        render(PG, "pg_hba.conf.j2", postgresql_allow_from=["10.0.0.1/24"])


def _redis(text: str) -> dict:
    """Directive -> list of argument strings (directives may repeat: user)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, args = line.partition(" ")
            out.setdefault(name, []).append(args)
    return out


PASSWORD = "R3disPassw0rdR3disPassw0rd"
MONITOR_PASSWORD = "M0nitorPassw0rdM0nitorPassw0rd"


def test_redis_loopback_acl_user_no_persistence():
    # redis_monitor_user's default (a template) as site.yml renders it with monitoring on.
    text = render(REDIS, "redis.conf.j2", redis_password_effective=PASSWORD, redis_monitor_user="llm-monitor",
                  redis_monitor_password_effective=MONITOR_PASSWORD)
    conf = _redis(text)
    assert conf["bind"] == ["127.0.0.1 -::1"] and conf["protected-mode"] == ["yes"] and conf["port"] == ["6379"]
    assert conf["save"] == ['""'] and conf["appendonly"] == ["no"]
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    monitor = hashlib.sha256(MONITOR_PASSWORD.encode()).hexdigest()
    assert conf["user"] == ["default off resetpass -@all",
                            "open-webui on #%s ~* &* +@all -@admin" % digest,
                            # The exporter's user: INFO and read-only server commands, no key, no channel.
                            "llm-monitor on #%s resetkeys resetchannels -@all +@connection +info +ping +config|get "
                            "+slowlog|get +slowlog|len +latency|latest +client|list +dbsize +memory|stats "
                            "+module|list" % monitor]
    assert PASSWORD not in text and MONITOR_PASSWORD not in text  # only the SHA-256 is in the file
    # Monitoring off: no exporter user.
    off = _redis(render(REDIS, "redis.conf.j2", redis_password_effective=PASSWORD, redis_monitor_user=""))
    assert off["user"] == conf["user"][:2]
    assert "requirepass" not in conf
    assert (conf["maxmemory"], conf["maxmemory-policy"]) == (["256mb"], ["volatile-lru"])


def test_redis_fleet_binds_the_private_address_too():
    conf = _redis(render(REDIS, "redis.conf.j2", redis_password_effective=PASSWORD,
                         redis_monitor_user="llm-monitor", redis_monitor_password_effective=MONITOR_PASSWORD,
                         redis_bind_addresses=["10.0.0.5", "127.0.0.1"], redis_port=6380))
    assert conf["bind"] == ["127.0.0.1 -::1 10.0.0.5"] and conf["port"] == ["6380"]


def test_redis_config_file_is_root_redis_0640():
    tasks = yaml.safe_load((REDIS / "tasks" / "configure.yml").read_text())
    task = next(t["ansible.builtin.template"] for t in tasks if "ansible.builtin.template" in t)
    assert (task["dest"], task["owner"], task["group"], task["mode"]) == ("/etc/redis/redis.conf", "root", "redis",
                                                                          "0640")
