# -*- coding: utf-8 -*-
"""Filters: values a type does not catch, checked before any host changes (playbooks/preflight.yml).

    {{ values | llm_value_problems(defaults) }}    ranges, formats, secrets, file-safe strings
    {{ values | llm_tls_problems(server_name) }}   certificate, key and CA files on the controller
    {{ values | llm_port_problems(defaults, engine, listeners) }}   one port per service, free

`values` holds only what the operator set (inventory, group_vars, -e) among the variables the
roles declare; `defaults` the roles' literal defaults (defaults/main.yml). Each function returns
a list of messages (empty: nothing wrong); each names the variable and a value that works.
Secrets (open_webui_admin_password, llm_api_key, backend keys) are never quoted in a message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import ipaddress
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlsplit

# --- ranges ------------------------------------------------------------------------------------
# Numbers whose wrong value fails only late (a unit that never starts, a timeout that kills a
# loading engine, nginx -t in the last role): (low, high), high None: unbounded. The llm_* knobs
# (llm_max_model_len, llm_gpu_memory_utilization, ...) are range-checked by the planner (plan).
PORTS = ("vllm_port", "llamacpp_port", "llamacpp_lora_backend_port", "embeddings_port",
         "open_webui_port", "nginx_http_port", "nginx_https_port", "nginx_status_port")
# Ports of the monitoring stack (roles monitoring, exporters): checked like PORTS unless
# llm_monitoring_enabled is false.
MONITORING_PORTS = ("monitoring_prometheus_port", "monitoring_alertmanager_port",
                    "monitoring_blackbox_port", "exporters_node_port", "exporters_nginx_port",
                    "exporters_nginx_log_port", "monitoring_grafana_port",
                    "exporters_postgres_port", "exporters_redis_port")
RANGES: Dict[str, Tuple[int, Optional[int]]] = dict(
    {name: (1, 65535) for name in PORTS + MONITORING_PORTS},
    exporters_gpu_interval=(5, 3600),
    base_apt_cache_valid_time=(0, None),
    vllm_timeout_start_sec=(120, 86400),    # vLLM loads ~15 GB and compiles (148 s on a GPU)
    vllm_ready_timeout=(60, 86400),
    vllm_start_limit_burst=(1, 100),
    vllm_start_limit_interval_sec=(1, 86400),
    vllm_limit_nofile=(1024, 1048576),      # above fs.nr_open (1048576) the unit cannot start
    llamacpp_parallel=(1, 4096),
    llamacpp_ctx_size=(512, None),
    llamacpp_ctx_per_slot=(512, 131072),    # the planner's MIN_CONTEXT .. MAX_CONTEXT (YaRN x4)
    llamacpp_n_gpu_layers=(-1, 999),        # -1: all layers
    llamacpp_threads=(0, 1024),
    llamacpp_build_jobs=(1, 1024),
    llamacpp_build_timeout=(300, 172800),
    llamacpp_timeout_start_sec=(60, 86400),
    llamacpp_ready_timeout=(60, 86400),
    llamacpp_start_limit_burst=(1, 100),
    llamacpp_start_limit_interval_sec=(1, 86400),
    open_webui_start_timeout=(60, 86400),
    open_webui_start_restarts=(1, 100),
    open_webui_venv_keep=(1, 100),          # the current venv counts: 1 keeps no rollback target
    open_webui_backup_keep=(1, 1000),
    nginx_api_burst=(0, 100000),
    nginx_signin_burst=(0, 100000),
    nginx_conn_per_client=(1, 100000),
    nginx_proxy_read_timeout=(60, 86400),   # below a minute long generations are cut off
    nginx_hsts_max_age=(0, 63072000),
    postgresql_port=(1, 65535),
    postgresql_open_webui_replicas=(1, 1000),
    redis_port=(1, 65535),
)
# RestartSec of each engine unit: the start-limit window must hold `burst` restarts.
RESTART_SEC = {"vllm": 15, "llamacpp": 5}

# --- formats -----------------------------------------------------------------------------------
HOST_NAMES = ("llm_server_name", "nginx_server_name")            # RFC 1123 host names
HOST_NAME_LISTS = ("nginx_server_aliases", "base_ntp_servers")   # host names or IP addresses
# http(s) URLs with a host; the ones in URLS_OPTIONAL may be empty (the spec says what empty does).
URLS = ("base_debian_mirror", "base_debian_security_mirror", "python_runtime_index_url",
        "python_runtime_python_install_mirror", "open_webui_public_url",
        "nginx_open_webui_upstream", "nginx_api_upstream", "nginx_engine_local_url",
        "nginx_vector_local_url", "open_webui_chroma_url", "open_webui_rag_embedding_url",
        "cuda_repo_url", "monitoring_alert_webhook_url", "exporters_nginx_status_url",
        "monitoring_web_base_url",
        "monitoring_grafana_apt_url", "monitoring_grafana_apt_key_url")
URLS_OPTIONAL = ("python_runtime_index_url", "python_runtime_python_install_mirror",
                 "nginx_api_upstream", "nginx_engine_local_url", "open_webui_chroma_url",
                 "open_webui_rag_embedding_url", "monitoring_alert_webhook_url",
                 "monitoring_web_base_url")
URL_LISTS = ("python_runtime_extra_index_urls", "vllm_extra_index_urls",
             "open_webui_extra_index_urls")
PROXIES = ("base_proxy", "python_runtime_proxy")                 # dicts: http_proxy, https_proxy
# Paths on the hosts: systemd and the roles need them absolute.
HOST_PATHS = ("exporters_textfile_dir", "exporters_nvidia_smi_path", "monitoring_engine_key_file",
              "monitoring_engine_ca_file",
              "nginx_gateway_dir", "base_opt_dir", "base_state_dir", "base_config_dir",
              "base_api_key_file", "base_offline_repo_dir",
              "python_runtime_uv_dir", "python_runtime_wheelhouse_dir", "python_runtime_cache_dir",
              "vllm_venv_dir", "vllm_state_dir", "vllm_config_file", "vllm_env_file",
              "vllm_model_path", "llamacpp_model_file", "llamacpp_prefix", "llamacpp_cuda_home",
              "llamacpp_build_dir", "llamacpp_host_package_dir", "llamacpp_state_dir",
              "llamacpp_api_key_file", "open_webui_venv_dir", "open_webui_data_dir",
              "open_webui_config_dir", "open_webui_backup_dir", "postgresql_backup_dir",
              "nginx_tls_dir", "chroma_venv_dir",
              "chroma_data_dir", "embeddings_state_dir", "embeddings_api_key_file")
# System users and groups the roles create (useradd/groupadd names).
ACCOUNTS = ("base_service_group", "vllm_user", "vllm_group", "llamacpp_user", "llamacpp_group",
            "open_webui_user", "open_webui_service_group", "chroma_user", "embeddings_user",
            "embeddings_group")
NGINX_RATES = {"nginx_api_rate": "10r/s", "nginx_signin_rate": "10r/m"}
NGINX_WORD_LISTS = ("nginx_tls_ciphers", "nginx_tls_curves")     # joined with ':' in nginx.conf

# --- values written into env files and unit files ----------------------------------------------
# Where each operator-set string lands (roles/*/templates and the role vars that feed them):
#   env_quoted  open-webui.env: "value" with \ and " escaped, so only line breaks and NUL break it
#   conf_quoted postgresql's conf.d/llm-bundle.conf: 'value' with ' doubled, the same
#   unit        a unit file line (Description=, Environment="N=v", EnvironmentFile=,
#               LoadCredential=): also ", \ and % (a systemd specifier) break it
#   unit_word   a space-separated unit setting (User=, Group=, ReadWritePaths=): also whitespace
#   exec        an ExecStart= argument, double-quoted by the template when it has a space: also
#               $ (systemd expands variables there) and ' (quoting)
#   exec_word   an unquoted ExecStart= argument: also whitespace
# tests/unit/test_llm_preflight.py fails when a string variable those templates read is missing.
FILE_VALUES = {
    "llm_served_model_name": "exec",
    "vllm_served_model_name": "unit",
    "vllm_user": "unit_word",
    "vllm_group": "unit_word",
    "vllm_state_dir": "unit_word",
    "vllm_env_file": "unit",
    "vllm_venv_dir": "exec_word",
    "vllm_config_file": "exec_word",
    "llamacpp_served_model_name": "exec",
    "llamacpp_model_file": "exec",
    "llamacpp_host": "exec_word",
    "llamacpp_user": "unit_word",
    "llamacpp_group": "unit_word",
    "llamacpp_state_dir": "unit_word",
    "llamacpp_api_key_file": "unit",
    "llamacpp_prefix": "exec_word",
    "llamacpp_cuda_home": "unit",
    "open_webui_version": "unit",
    "open_webui_user": "unit_word",
    "open_webui_service_group": "unit_word",
    "open_webui_data_dir": "unit_word",
    "open_webui_config_dir": "unit",
    "open_webui_venv_dir": "exec_word",
    "open_webui_host": "exec_word",
    "open_webui_public_url": "env_quoted",
    "open_webui_admin_email": "env_quoted",
    "open_webui_admin_name": "env_quoted",
    "open_webui_admin_password": "env_quoted",
    "open_webui_jwt_expires_in": "env_quoted",
    "open_webui_database_url": "env_quoted",
    "open_webui_redis_url": "env_quoted",
    "open_webui_redis_key_prefix": "env_quoted",
    "open_webui_chroma_url": "env_quoted",
    "open_webui_chroma_token": "env_quoted",
    "open_webui_rag_embedding_url": "env_quoted",
    "open_webui_rag_embedding_model": "env_quoted",
    "base_service_group": "unit_word",
    "base_opt_dir": "unit_word",
    "base_state_dir": "unit_word",
    "base_config_dir": "unit",
}
# Lists of strings written into env or unit files: the context of each item.
FILE_LISTS = {
    "open_webui_api_keys_allowed_endpoints": "env_quoted",  # joined with ','
    "open_webui_ip_address_allow": "unit_word",
    "llamacpp_ip_address_allow": "unit_word",
    "vllm_ip_address_allow": "unit_word",
    "vllm_system_call_filter": "unit",                       # one SystemCallFilter= line each
}
# Dicts: (context of the values or None for any, what the keys must be).
FILE_DICTS = {
    "vllm_environment": ("unit", "env"),
    "llamacpp_environment": ("unit", "env"),
    "open_webui_extra_env": ("env_quoted", "env"),
    "llamacpp_extra_args": ("exec", "option"),
    "vllm_extra_args": (None, "option"),      # a YAML config file: any value; keys are options
}
_ENV_BAD = {"\n": "a line break", "\r": "a carriage return", "\0": "a NUL character"}
_UNIT_BAD = dict(_ENV_BAD, **{'"': "a double quote", "\\": "a backslash",
                              "%": "a % (systemd specifier)"})
_EXEC_BAD = dict(_UNIT_BAD, **{"$": "a $ (systemd expands it)", "'": "a single quote"})
_SPACES = {" ": "a space", "\t": "a tab"}
_BAD = {"env_quoted": _ENV_BAD, "conf_quoted": _ENV_BAD, "unit": _UNIT_BAD,
        "unit_word": dict(_UNIT_BAD, **_SPACES), "exec": _EXEC_BAD,
        "exec_word": dict(_EXEC_BAD, **_SPACES)}
_WHERE = {"env_quoted": "the environment file", "conf_quoted": "PostgreSQL's configuration file",
          "unit": "the systemd unit", "unit_word": "the systemd unit",
          "exec": "the unit's ExecStart line", "exec_word": "the unit's ExecStart line"}

# --- secrets -----------------------------------------------------------------------------------
SECRETS = ("open_webui_admin_password", "llm_api_key", "open_webui_database_url",
           "open_webui_redis_url", "open_webui_secret_key", "open_webui_chroma_token",
           "llm_fleet_chroma_token", "nginx_vector_endpoint_token")
# Bearer tokens of the fleet's vector store: sent in Open WebUI's CHROMA_HTTP_HEADERS (k=v,k=v, so
# no ',' or '=') and compared in nginx's configuration (a quoted string).
TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/-]+\Z")
TOKEN_CHARS = "A-Z a-z 0-9 . _ ~ + / -"
TOKENS = ("open_webui_chroma_token", "llm_fleet_chroma_token", "nginx_vector_endpoint_token")
# Datastore passwords (roles postgresql and redis) the operator sets instead of generated ones.
DATASTORE_PASSWORDS = ("postgresql_password", "redis_password", "redis_monitor_password")
DATASTORE_PASSWORD_MIN = 16
PASSWORD_MIN = 12
API_KEY_MIN = 32
# The engine API key lands unquoted in vllm.env (VLLM_API_KEY=...), in Authorization headers
# and in Open WebUI's ;-separated OPENAI_API_KEYS: characters that read the same in all of them.
API_KEY_RE = re.compile(r"^[A-Za-z0-9._~+/=-]+\Z")
API_KEY_CHARS = "A-Z a-z 0-9 . _ ~ + / = -"
API_KEY_HINT = ("e.g. the output of `openssl rand -hex 32` (or leave it unset: each host "
                "generates one)")

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
HOST_NAME_RE = re.compile(r"^(?=.{1,253}\Z)" + _LABEL + r"(\." + _LABEL + r")*\Z")
# Local part: RFC 5322 dot-atom; domain: RFC 1123 labels with at least one dot, or localhost.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL_RE = re.compile(r"^" + _ATOM + r"(\." + _ATOM + r")*@(localhost|" + _LABEL
                      + r"(\." + _LABEL + r")+)\Z")
ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
OPTION_RE = re.compile(r"^[a-z0-9][a-z0-9-]*\Z")
RATE_RE = re.compile(r"^[1-9][0-9]*r/[sm]\Z")
SIZE_RE = re.compile(r"^([0-9]+)([kKmMgG]?)\Z")
NGINX_WORD_RE = re.compile(r"^[A-Za-z0-9._+-]+\Z")


def _as_bool(value: Any, default: bool) -> bool:
    """A boolean as Ansible reads one (true/yes/on/1); None: default."""
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1", "y")
    return bool(value)


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.match(r"^\s*-?\d+\s*\Z", value):
        return int(value)
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _url_problem(value: Any) -> Optional[str]:
    """Why `value` is not an http(s) URL with a host, or None."""
    text = str(value)
    if any(c.isspace() for c in text):
        return "has whitespace"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 raises on a port that is not a number or out of range
    except ValueError as exc:
        return "cannot be parsed (%s)" % exc
    if not parts.scheme:
        return "has no http:// or https:// scheme"
    if parts.scheme not in ("http", "https"):
        return "has the scheme %s: (only http and https work)" % parts.scheme
    if not parts.hostname:
        return "has no host"
    if not HOST_NAME_RE.match(parts.hostname) and not _is_ip(parts.hostname):
        return "has the host %r, which is not a valid host name" % parts.hostname
    return None


def _url_example(name: str, value: Any) -> str:
    text = str(value).strip()
    if text and "://" not in text and not any(c.isspace() for c in text):
        return "https://" + text
    if name == "nginx_open_webui_upstream":
        return "http://127.0.0.1:3000"
    if name == "nginx_api_upstream":
        return "http://127.0.0.1:8000/v1"
    return "https://mirror.example.com/path"


def _check_url(problems: List[str], label: str, value: Any, name: str, optional: bool) -> None:
    if value is None or (optional and str(value) == ""):
        return
    why = _url_problem(value)
    if why:
        problems.append("%s %r is not an http(s) URL: it %s; use e.g. %s"
                        % (label, str(value), why, _url_example(name, value)))


# --- datastores of several Open WebUI replicas (roles postgresql, redis) -------------------------
# Open WebUI 0.12.4 has psycopg 3 and no psycopg2 in its venv: the open_webui role writes these
# schemes as postgresql+psycopg://. A URL holds a password: messages never quote it.
DATABASE_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
DATABASE_EXAMPLE = "postgresql://open_webui:<password>@127.0.0.1:5432/open_webui"
REDIS_SCHEMES = ("redis", "rediss")
REDIS_EXAMPLE = "redis://open-webui:<password>@127.0.0.1:6379/0"
PG_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")     # unquoted identifiers (pg_hba.conf)
REDIS_USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")    # one word in the ACL line, plain in a URL
REDIS_MEMORY_RE = re.compile(r"^[0-9]+(b|kb|k|mb|m|gb|g)?\Z", re.I)
PG_SETTING_RE = re.compile(r"^[a-z_][a-z0-9_.]*\Z")
ADDRESS_LISTS = ("postgresql_listen_addresses", "redis_bind_addresses")  # IP addresses to listen on
NETWORK_LISTS = ("postgresql_allow_from",)                                 # addresses or networks
# Every variable _datastore_problems checks (tests/unit/test_llm_preflight.py reads this).
DATASTORE_URLS = ("open_webui_database_url", "open_webui_redis_url")
DATASTORE_CHECKED = DATASTORE_URLS + ADDRESS_LISTS + NETWORK_LISTS + DATASTORE_PASSWORDS + (
    "postgresql_database", "postgresql_user", "postgresql_settings", "redis_user",
    "redis_maxmemory", "postgresql_monitor_role", "redis_monitor_user")


def _datastore_url_problem(name: str, value: Any, schemes: Tuple[str, ...], example: str,
                           path_re: str, path_what: str) -> Optional[str]:
    text = str(value)
    if text == "":
        return None
    if any(c.isspace() for c in text):
        return "%s has whitespace: use e.g. %s" % (name, example)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 raises on a port that is not a number or out of range
    except ValueError as exc:
        return "%s cannot be parsed (%s): use e.g. %s" % (name, exc, example)
    if "://" not in text:
        return "%s has no scheme: use a %s:// URL, e.g. %s" % (name, schemes[0], example)
    if parts.scheme not in schemes:
        return ("%s has the scheme %s://, which Open WebUI cannot use here: use a %s URL, e.g. %s"
                % (name, parts.scheme, " or ".join(s + "://" for s in schemes), example))
    if not parts.hostname:
        return "%s has no host: use e.g. %s" % (name, example)
    if not re.match(path_re, parts.path):
        return "%s does not end in %s: use e.g. %s" % (name, path_what, example)
    return None


def _network_problem(name: str, item: Any) -> Optional[str]:
    try:
        ipaddress.ip_network(str(item), strict=True)
    except ValueError as exc:
        try:
            hint = ipaddress.ip_network(str(item), strict=False).with_prefixlen
        except ValueError:
            hint = "10.0.0.0/24"
        return ("%s has %r, which is not an IP address or network (%s): use e.g. %s"
                % (name, str(item), exc, hint))
    return None


def _datastore_problems(values: Dict[str, Any]) -> List[str]:
    p = []
    database_url = values.get("open_webui_database_url", "")
    why = _datastore_url_problem("open_webui_database_url", database_url, DATABASE_SCHEMES,
                                 DATABASE_EXAMPLE, r"^/[^/]+\Z", "/<database>")
    if why and "postgresql+psycopg2" in str(database_url):
        why += " (psycopg2 is not in Open WebUI's venv; psycopg 3 is)"
    redis_url = values.get("open_webui_redis_url", "")
    why_redis = _datastore_url_problem("open_webui_redis_url", redis_url, REDIS_SCHEMES,
                                       REDIS_EXAMPLE, r"^(/[0-9]+)?/?\Z", "/<database number>")
    p.extend(w for w in (why, why_redis) if w)
    for name in ("postgresql_database", "postgresql_user"):
        if name in values and not PG_NAME_RE.match(str(values[name])):
            fixed = re.sub(r"[^a-z0-9_]", "_", str(values[name]).lower()).lstrip("0123456789")
            p.append("%s %r is not a plain PostgreSQL name (lower-case letters, digits and _, "
                     "starting with a letter or _, at most 63): use e.g. %s"
                     % (name, str(values[name]), fixed[:63] or "open_webui"))
    monitor = str(values.get("postgresql_monitor_role") or "")
    if monitor and not PG_NAME_RE.match(monitor):
        p.append("postgresql_monitor_role %r is not a plain PostgreSQL name (lower-case letters, "
                 "digits and _, starting with a letter or _, at most 63): use e.g. prometheus, or "
                 "empty for none" % monitor)
    for name, example in (("redis_user", "open-webui"), ("redis_monitor_user", "llm-monitor")):
        if name in values and (values[name] or name == "redis_user") \
                and not REDIS_USER_RE.match(str(values[name])):
            p.append("%s %r is not one word of letters, digits, _ . and -: use e.g. %s"
                     % (name, str(values[name]), example))
    if "redis_maxmemory" in values and not REDIS_MEMORY_RE.match(str(values["redis_maxmemory"])):
        p.append("redis_maxmemory %r is not a Redis memory size: use e.g. 256mb or 1gb"
                 % str(values["redis_maxmemory"]))
    for name in ADDRESS_LISTS:
        for item in values.get(name) or []:
            if not _is_ip(str(item)) or str(item).startswith("["):
                p.append("%s has %r, which is not an IP address: use e.g. 10.0.0.5 (the host's "
                         "private address)" % (name, str(item)))
    for name in NETWORK_LISTS:
        p.extend(w for w in (_network_problem(name, i) for i in values.get(name) or []) if w)
    settings = values.get("postgresql_settings") or {}
    for key, value in sorted(settings.items(), key=lambda kv: str(kv[0])):
        if not PG_SETTING_RE.match(str(key)):
            p.append("postgresql_settings has the key %r, which is not a PostgreSQL setting name: "
                     "use e.g. work_mem" % str(key))
        p.extend(_file_value_problems("postgresql_settings.%s" % key, value, "conf_quoted", False))
    for name in DATASTORE_PASSWORDS:
        password = str(values.get(name) or "")
        if password and len(password) < DATASTORE_PASSWORD_MIN:
            p.append("%s has %d characters: use at least %d (or leave it empty: a 32-character one "
                     "is generated and kept in .secrets/)"
                     % (name, len(password), DATASTORE_PASSWORD_MIN))
    return p


def _password_classes(password: str) -> List[str]:
    found = [kind for kind, test in (("lower-case letters", str.islower),
                                     ("upper-case letters", str.isupper),
                                     ("digits", str.isdigit))
             if any(test(c) for c in password)]
    if any(not (c.islower() or c.isupper() or c.isdigit()) for c in password):
        found.append("punctuation or spaces")
    return found


def _file_value_problems(label: str, value: Any, context: str, secret: bool) -> List[str]:
    text = str(value)
    bad = [what for char, what in _BAD[context].items() if char in text]
    if not bad:
        return []
    fix = ("remove it" if secret else
           "use e.g. %r" % "".join(c for c in text if c not in _BAD[context]))
    return ["%s contains %s, which would break %s: %s"
            % (label, " and ".join(bad), _WHERE[context], fix)]


def _range_problems(values: Dict[str, Any], defaults: Dict[str, Any]) -> List[str]:
    p = []
    for name, (lo, hi) in RANGES.items():
        if name not in values:
            continue
        number = _as_int(values[name])
        span = "%d - %d" % (lo, hi) if hi is not None else "%d or more" % lo
        default = _as_int(defaults.get(name))
        note = " (default %d)" % default if default is not None else ""
        if number is None:
            p.append("%s %r is not a whole number: use %s%s" % (name, values[name], span, note))
        elif number < lo or (hi is not None and number > hi):
            p.append("%s %d is out of range: use %s%s" % (name, number, span, note))
    for role, restart in RESTART_SEC.items():
        burst_name, window_name = role + "_start_limit_burst", role + "_start_limit_interval_sec"
        if burst_name not in values and window_name not in values:
            continue
        burst = _as_int(values.get(burst_name, defaults.get(burst_name)))
        window = _as_int(values.get(window_name, defaults.get(window_name)))
        if burst and window and burst >= 1 and 1 <= window < burst * restart:
            p.append("%s %d is shorter than %s %d x RestartSec %d s, so a start loop never trips "
                     "the limit: use at least %d"
                     % (window_name, window, burst_name, burst, restart, burst * restart))
    if "llamacpp_ctx_size" in values or "llamacpp_ctx_per_slot" in values:
        pool = _as_int(values.get("llamacpp_ctx_size", defaults.get("llamacpp_ctx_size")))
        slot = _as_int(values.get("llamacpp_ctx_per_slot", defaults.get("llamacpp_ctx_per_slot")))
        if pool and slot and slot > pool:
            p.append("llamacpp_ctx_per_slot %d is larger than the KV pool llamacpp_ctx_size %d: "
                     "use llamacpp_ctx_per_slot %d or less, or a larger llamacpp_ctx_size"
                     % (slot, pool, pool))
    return p


def _format_problems(values: Dict[str, Any]) -> List[str]:
    p = []
    for name in HOST_NAMES:
        if name in values and not HOST_NAME_RE.match(str(values[name])):
            p.append("%s %r is not a host name (RFC 1123: dot-separated labels of letters, digits "
                     "and inner hyphens, 1-63 characters each): use e.g. llm.example.com"
                     % (name, str(values[name])))
    for name in HOST_NAME_LISTS:
        for item in values.get(name) or []:
            if not HOST_NAME_RE.match(str(item)) and not _is_ip(str(item)):
                p.append("%s has %r, which is neither a host name (RFC 1123) nor an IP address: "
                         "use e.g. llm.example.com or 10.0.0.5" % (name, str(item)))
    email = values.get("open_webui_admin_email")
    if email is not None and not EMAIL_RE.match(str(email)):
        p.append("open_webui_admin_email %r is not an e-mail address: use e.g. admin@%s"
                 % (str(email), values.get("llm_server_name") or "example.com"))
    for name in URLS:
        _check_url(p, name, values.get(name), name, optional=name in URLS_OPTIONAL)
    upstream = str(values.get("nginx_api_upstream") or "").rstrip("/")
    if upstream and not upstream.endswith("/v1"):
        p.append("nginx_api_upstream %r does not end in /v1 (the engine's OpenAI base URL): use "
                 "e.g. %s/v1" % (str(values["nginx_api_upstream"]), upstream))
    for name in URL_LISTS:
        for i, item in enumerate(values.get(name) or []):
            _check_url(p, "%s[%d]" % (name, i), item, name, optional=False)
    for name in PROXIES:
        for key in ("http_proxy", "https_proxy"):
            _check_url(p, "%s.%s" % (name, key), (values.get(name) or {}).get(key), name,
                       optional=True)
    for i, backend in enumerate(values.get("open_webui_backends") or []):
        if isinstance(backend, dict) and "base_url" in backend:
            _check_url(p, "open_webui_backends[%d].base_url" % i, backend["base_url"],
                       "open_webui_backends", optional=False)
    for name in HOST_PATHS:
        if name in values and not str(values[name]).startswith("/"):
            p.append("%s %r is not an absolute path on the host: use e.g. /%s"
                     % (name, str(values[name]), str(values[name]).lstrip("./")))
    for name in ACCOUNTS:
        if name in values and not ACCOUNT_RE.match(str(values[name])):
            fixed = re.sub(r"[^a-z0-9_-]", "", str(values[name]).lower()).lstrip("0123456789-")
            p.append("%s %r is not a user or group name (lower-case letters, digits, _ and -, "
                     "starting with a letter or _, at most 32): use e.g. %s"
                     % (name, str(values[name]), fixed[:32] or "llm"))
    for name, example in NGINX_RATES.items():
        if name in values and not RATE_RE.match(str(values[name])):
            p.append("%s %r is not an nginx rate (requests per second or minute): use e.g. %s"
                     % (name, str(values[name]), example))
    if "nginx_client_max_body_size" in values:
        text = str(values["nginx_client_max_body_size"])
        size = SIZE_RE.match(text)
        scale = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
        if not size:
            p.append("nginx_client_max_body_size %r is not an nginx size: use e.g. 50m" % text)
        elif int(size.group(1)) * scale[size.group(2).lower()] < 20 * 1024 ** 2:
            p.append("nginx_client_max_body_size %s is below the 20m Open WebUI uploads need: "
                     "use e.g. 50m" % text)
    for name in NGINX_WORD_LISTS:
        for item in values.get(name) or []:
            if not NGINX_WORD_RE.match(str(item)):
                p.append("%s has %r, which is not one cipher or curve name (letters, digits, "
                         ". _ + -): use the names of the default list" % (name, str(item)))
    return p


def _secret_problems(values: Dict[str, Any]) -> List[str]:
    p = []
    password = values.get("open_webui_admin_password")
    if password is not None and str(password) != "":
        password = str(password)
        classes = _password_classes(password)
        if len(password) < PASSWORD_MIN:
            p.append("open_webui_admin_password has %d characters: use at least %d (or leave it "
                     "empty: a 32-character one is generated and kept in .secrets/)"
                     % (len(password), PASSWORD_MIN))
        elif len(classes) < 2:
            p.append("open_webui_admin_password has only %s: use at least %d characters of two "
                     "kinds (lower-case, upper-case, digits, punctuation or spaces), or leave it "
                     "empty for a generated one" % (classes[0], PASSWORD_MIN))
    if "llm_api_key" in values:
        key = str(values["llm_api_key"])
        if not API_KEY_RE.match(key):
            p.append("llm_api_key has characters outside %s (it must read the same unquoted in "
                     "vllm.env, in HTTP headers and in Open WebUI's key list): use %s"
                     % (API_KEY_CHARS, API_KEY_HINT))
        elif len(key) < API_KEY_MIN:
            p.append("llm_api_key has %d characters: use at least %d, %s"
                     % (len(key), API_KEY_MIN, API_KEY_HINT))
    for name in TOKENS:
        token = str(values.get(name) or "")
        if token and not TOKEN_RE.match(token):
            p.append("%s has characters outside %s (it goes into Open WebUI's CHROMA_HTTP_HEADERS "
                     "and nginx's configuration): use e.g. the output of `openssl rand -hex 32`, "
                     "or leave it unset for a generated one" % (name, TOKEN_CHARS))
        elif token and len(token) < API_KEY_MIN:
            p.append("%s has %d characters: use at least %d, e.g. the output of `openssl rand -hex "
                     "32`" % (name, len(token), API_KEY_MIN))
    for i, backend in enumerate(values.get("open_webui_backends") or []):
        key = backend.get("api_key") if isinstance(backend, dict) else None
        if key and not API_KEY_RE.match(str(key)):
            p.append("open_webui_backends[%d].api_key has characters outside %s (Open WebUI "
                     "joins the keys with ;): use a key of those characters" % (i, API_KEY_CHARS))
    return p


def _file_problems(values: Dict[str, Any]) -> List[str]:
    p = []
    for name, context in sorted(FILE_VALUES.items()):
        if values.get(name) is not None:
            p.extend(_file_value_problems(name, values[name], context, name in SECRETS))
    for name, context in sorted(FILE_LISTS.items()):
        for i, item in enumerate(values.get(name) or []):
            p.extend(_file_value_problems("%s[%d]" % (name, i), item, context, False))
    for name, (context, keys) in sorted(FILE_DICTS.items()):
        for key, value in sorted((values.get(name) or {}).items(), key=lambda kv: str(kv[0])):
            if keys == "env" and not ENV_NAME_RE.match(str(key)):
                fixed = re.sub(r"[^A-Za-z0-9_]", "_", str(key)).lstrip("0123456789")
                p.append("%s has the key %r, which is not an environment variable name: use "
                         "letters, digits and _, e.g. %s" % (name, str(key), fixed or "NAME"))
            if keys == "option" and not OPTION_RE.match(str(key)):
                p.append("%s has the key %r: use the option's long name without dashes, e.g. %s"
                         % (name, str(key),
                            str(key).lstrip("-").replace("_", "-").lower() or "max-num-seqs"))
            if context and value is not None and not isinstance(value, bool):
                p.extend(_file_value_problems("%s.%s" % (name, key), value, context, False))
    for i, model in enumerate(values.get("open_webui_default_models") or []):
        p.extend(_file_value_problems("open_webui_default_models[%d]" % i, model, "env_quoted",
                                      False))
        if "," in str(model):
            p.append("open_webui_default_models[%d] %r has a comma (Open WebUI splits the list on "
                     "commas): give one model per list item" % (i, str(model)))
    for i, backend in enumerate(values.get("open_webui_backends") or []):
        if not isinstance(backend, dict):
            continue
        for field in ("base_url", "model", "name"):
            if backend.get(field) is not None:
                p.extend(_file_value_problems("open_webui_backends[%d].%s" % (i, field),
                                              backend[field], "env_quoted", False))
        if ";" in str(backend.get("base_url", "")):
            p.append("open_webui_backends[%d].base_url has a ; (Open WebUI splits the URLs on ;): "
                     "one URL per backend" % i)
    return p


def llm_value_problems(values: Dict[str, Any],
                       defaults: Optional[Dict[str, Any]] = None) -> List[str]:
    """Ranges, formats, secret strength and file-safe strings of the operator's values."""
    values = dict(values or {})
    defaults = dict(defaults or {})
    return (_range_problems(values, defaults) + _format_problems(values)
            + _secret_problems(values) + _file_problems(values) + _datastore_problems(values))


# --- files on the controller -------------------------------------------------------------------
def _read(path: str) -> Tuple[bytes, str]:
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        return b"", "is not a file on the controller"
    try:
        with open(full, "rb") as handle:
            return handle.read(), ""
    except OSError as exc:
        return b"", "cannot be read on the controller (%s)" % exc.strerror


def _read_tls_pem(problems: List[str], var: str, path: str, convert: str) -> bytes:
    """The PEM bytes of the operator's certificate or key file; b"" after adding the problem."""
    data, why = _read(path)
    if why:
        problems.append("%s %r %s: give the PEM file's path (or leave both empty for a self-signed "
                        "certificate)" % (var, path, why))
        return b""
    if b"-----BEGIN " not in data:
        problems.append("%s %r is not PEM (no -----BEGIN line): convert it, e.g. %s"
                        % (var, path, convert))
        return b""
    return data


def _san_covers(cert: Any, name: str) -> Tuple[bool, List[str]]:
    """Whether the certificate's subjectAltName covers `name`, and the names it has."""
    from cryptography import x509
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False, []
    dns = [d.lower().rstrip(".") for d in san.get_values_for_type(x509.DNSName)]
    ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    name = name.lower().rstrip(".")
    if _is_ip(name):
        wanted = ipaddress.ip_address(name.strip("[]"))
        return wanted in [ipaddress.ip_address(a) for a in ips], dns + ips
    for pattern in dns:
        # A wildcard covers exactly one left-most label (RFC 6125 6.4.3).
        if pattern == name or (pattern.startswith("*.") and "." in name
                               and name.split(".", 1)[1] == pattern[2:]):
            return True, dns + ips
    return False, dns + ips


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def llm_tls_problems(values: Dict[str, Any], server_name: str = "",
                     now: Optional[datetime.datetime] = None) -> List[str]:
    """The operator's certificate, key and CA files: on the controller, PEM, readable; the key
    is the certificate's; the certificate names the server and has not expired."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    values = dict(values or {})
    now = now or datetime.datetime.now(datetime.timezone.utc)
    p: List[str] = []
    cert_var, key_var = "nginx_tls_certificate_src", "nginx_tls_certificate_key_src"
    cert_path = str(values.get(cert_var) or "")
    key_path = str(values.get(key_var) or "")
    if bool(cert_path) != bool(key_path):
        given, missing = (cert_var, key_var) if cert_path else (key_var, cert_var)
        p.append("%s is set but %s is empty: give both PEM files (the certificate and its key), "
                 "or neither for a self-signed certificate" % (given, missing))
    leaf, key = None, None
    if cert_path:
        data = _read_tls_pem(p, cert_var, cert_path,
                             "openssl x509 -in cert.der -inform der -out cert.pem")
        if data:
            try:
                leaf = x509.load_pem_x509_certificates(data)[0]
            except ValueError as exc:
                p.append("%s %r holds no readable certificate (%s): give the server certificate "
                         "in PEM, then its chain" % (cert_var, cert_path, _first_line(exc)))
    if key_path:
        data = _read_tls_pem(p, key_var, key_path,
                             "openssl pkey -in key.der -inform der -out key.pem")
        if data:
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except TypeError:
                p.append("%s %r is encrypted: nginx cannot read it without its passphrase; give "
                         "the decrypted key, e.g. openssl pkey -in key.pem -out plain.pem"
                         % (key_var, key_path))
            except Exception as exc:  # noqa: BLE001 ValueError, or UnsupportedAlgorithm
                p.append("%s %r holds no readable private key (%s): give the certificate's key "
                         "in PEM" % (key_var, key_path, _first_line(exc)))
    if leaf is not None:
        if key is not None:
            spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
                p.append("%s %r is not the key of %s %r (their public keys differ): give the key "
                         "the certificate was issued for, or the certificate of this key (server "
                         "certificate first, then its chain)"
                         % (key_var, key_path, cert_var, cert_path))
        if server_name:
            covered, names = _san_covers(leaf, server_name)
            if not covered:
                p.append("%s %r does not name the server %s (its subjectAltName: %s): use a "
                         "certificate for %s, or set llm_server_name to one of its names"
                         % (cert_var, cert_path, server_name, ", ".join(names) or "none",
                            server_name))
        not_after = leaf.not_valid_after_utc
        if not_after < now:
            p.append("%s %r expired on %s: renew it"
                     % (cert_var, cert_path, not_after.date().isoformat()))

    for i, path in enumerate(values.get("base_extra_ca_certificates") or []):
        label = "base_extra_ca_certificates[%d] %r" % (i, str(path))
        data, why = _read(str(path))
        if why:
            p.append("%s %s: give the path of a PEM CA certificate on the controller"
                     % (label, why))
        elif b"-----BEGIN CERTIFICATE-----" not in data:
            p.append("%s is not a PEM certificate (no -----BEGIN CERTIFICATE----- line): convert "
                     "it, e.g. openssl x509 -in ca.der -inform der -out ca.pem" % label)
        else:
            try:
                x509.load_pem_x509_certificates(data)
            except ValueError as exc:
                p.append("%s holds no readable certificate (%s): give the CA certificate in PEM"
                         % (label, _first_line(exc)))
    return p


# --- ports -------------------------------------------------------------------------------------
PORT_DEFAULTS = ("defaults: vllm_port 8000, llamacpp_port 8081 (8082 behind its LoRA router), "
                 "embeddings_port 8083, open_webui_port 3000, "
                 "nginx 80/443, nginx_status_port 8091; "
                 "monitoring: 9090, 9093, 9115, 9100, 9113, 3903")
# Listening sockets that are the bundle's own: these process names, or the services' users (the
# Debian packages of Prometheus and its exporters run as the user prometheus, mtail as mtail).
OUR_PROCESSES = ("nginx", "llama-server", "open-webui")
OUR_USERS = ("vllm_user", "llamacpp_user", "embeddings_user", "open_webui_user")
OUR_FIXED_USERS = ("prometheus", "mtail")


def _effective(name: str, values: Dict[str, Any], defaults: Dict[str, Any]) -> Any:
    return values[name] if name in values else defaults.get(name)


def llm_port_problems(values: Dict[str, Any], defaults: Optional[Dict[str, Any]] = None,
                      engine: str = "",
                      listeners: Optional[Iterable[Dict[str, Any]]] = None) -> List[str]:
    """One port per service, and each free on the host or held by one of the bundle's services.

    `listeners`: listen_ports_facts' tcp_listen entries ({port, address, name, pid, user}); None
    skips that check. `engine`: the plan's engine; the other engine's port is not looked up.
    """
    values = dict(values or {})
    defaults = dict(defaults or {})
    ports: Dict[str, int] = {}
    monitoring = _effective("llm_monitoring_enabled", values, defaults)
    names = PORTS + (MONITORING_PORTS if _as_bool(monitoring, True) else ())
    if not _as_bool(_effective("monitoring_grafana_enabled", values, defaults), False):
        names = tuple(n for n in names if n != "monitoring_grafana_port")
    for name in names:
        number = _as_int(_effective(name, values, defaults))
        if number is not None and 1 <= number <= 65535:
            ports[name] = number
    p: List[str] = []
    for name, port in ports.items():
        same = [other for other, value in ports.items() if value == port]
        if len(same) > 1 and name == same[0]:
            p.append("%s share port %d: each service needs its own port (%s)"
                     % (" and ".join(same), port, PORT_DEFAULTS))
    if listeners is None:
        return p
    listeners = [entry for entry in listeners if isinstance(entry, dict)]
    users = {str(_effective(n, values, defaults) or "") for n in OUR_USERS} - {""}
    users |= set(OUR_FIXED_USERS)
    taken = {_as_int(entry.get("port")) for entry in listeners}
    other_engine = {"vllm": ("llamacpp_port", "llamacpp_lora_backend_port"),
                    "llamacpp": ("vllm_port",)}.get(engine, ())
    for name, port in ports.items():
        if name in other_engine:
            continue
        for entry in listeners:
            process, user = str(entry.get("name") or ""), str(entry.get("user") or "")
            if _as_int(entry.get("port")) != port or process in OUR_PROCESSES or user in users:
                continue
            free = next((n for n in range(port + 1, 65536)
                         if n not in taken and n not in ports.values()), None)
            who = ("%s (pid %s, user %s)" % (process, entry.get("pid"), user or "?") if process
                   else "a process Ansible cannot see (another network namespace?)")
            p.append("%s %d is in use on the host by %s on %s, not by a service of this bundle: "
                     "stop it or set %s to a free port%s"
                     % (name, port, who, entry.get("address", "?"), name,
                        ", e.g. %d" % free if free else ""))
            break
    return p


class FilterModule:
    def filters(self):
        return {"llm_value_problems": llm_value_problems,
                "llm_tls_problems": llm_tls_problems,
                "llm_port_problems": llm_port_problems}
