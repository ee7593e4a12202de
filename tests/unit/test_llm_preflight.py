"""plugins/filter/llm_preflight.py: the value, file and port checks preflight runs before any change."""

import datetime
import re

import pytest
import tls_files
import yaml
from bundle_vars import role_options

import llm_preflight
from conftest import REPO
from llm_preflight import (
    FILE_DICTS,
    FILE_LISTS,
    FILE_VALUES,
    HOST_PATHS,
    RANGES,
    URL_LISTS,
    URLS,
    llm_port_problems,
    llm_tls_problems,
    llm_value_problems,
)

DEFAULTS = {}
for _role in ("base", "python_runtime", "vllm", "llamacpp", "open_webui", "nginx", "exporters", "monitoring"):
    DEFAULTS.update(yaml.safe_load((REPO / "roles" / _role / "defaults" / "main.yml").read_text()))


def _one(problems, *needles):
    assert len(problems) == 1, problems
    for needle in needles:
        assert needle in problems[0], problems
    return problems[0]


# --- the lists name real variables --------------------------------------------------------------
def _spec_options():
    out = {}
    for spec in (REPO / "roles").glob("*/meta/argument_specs.yml"):
        for entry in (yaml.safe_load(spec.read_text())["argument_specs"] or {}).values():
            for name, option in ((entry or {}).get("options") or {}).items():
                out.setdefault(name, option)
    return out


def test_every_variable_the_checks_name_is_declared_by_a_role():
    named = set(RANGES) | set(FILE_VALUES) | set(FILE_DICTS) | set(FILE_LISTS) | set(HOST_PATHS) | set(URLS) \
        | set(URL_LISTS) | set(llm_preflight.HOST_NAMES) | set(llm_preflight.HOST_NAME_LISTS) \
        | set(llm_preflight.PROXIES) | set(llm_preflight.ACCOUNTS) | set(llm_preflight.NGINX_RATES) \
        | set(llm_preflight.NGINX_WORD_LISTS) | set(llm_preflight.SECRETS) | set(llm_preflight.OUR_USERS) \
        | set(llm_preflight.DATASTORE_CHECKED)
    assert named - role_options() == set()


def test_every_url_variable_is_checked():
    # model_store checks its own sources (roles/model_store tasks_from preflight); engine_service's
    # options are set by the engine roles, not by the operator.
    urls = {n for n in _spec_options() if re.search(r"_urls?$|_mirror$|_upstream$", n)
            and not n.startswith(("model_store_", "engine_service_"))}
    assert urls - set(URLS) - set(URL_LISTS) - set(llm_preflight.DATASTORE_URLS) == set()


def test_every_host_path_variable_is_checked():
    controller = {"llm_plan_report_dir", "open_webui_admin_password_dir", "base_extra_ca_certificates",
                  "llamacpp_package_store", "llamacpp_package_dir", "python_runtime_wheelhouse_src",
                  "nginx_tls_certificate_src", "nginx_tls_certificate_key_src",
                  "postgresql_password_dir", "redis_password_dir", "nginx_monitoring_password_dir",
                  "monitoring_grafana_admin_password_dir",
                  # base's controller_secret entry point: set by the calling roles, never by the operator
                  "base_secret_dir", "base_secret_file", "nginx_fleet_ca_dir", "llm_fleet_secrets_dir",
                  "llm_offline_bundle_dir"}
    not_paths = {"open_webui_redis_key_prefix"}  # Open WebUI's REDIS_KEY_PREFIX, a word
    paths = {n for n, o in _spec_options().items()
             if (o.get("type") == "path" or re.search(r"_(dir|file|home|prefix|path)$", n))
             and not n.startswith(("model_store_", "engine_service_", "nvidia_driver_", "cuda_toolkit_"))
             and n not in controller | not_paths}
    assert paths - set(HOST_PATHS) == set()


TEMPLATES = ["roles/vllm/templates/vllm.env.j2", "roles/vllm/templates/vllm.service.j2",
             "roles/llamacpp/templates/llamacpp.service.j2",
             "roles/open_webui/templates/open-webui.env.j2",
             "roles/open_webui/templates/open-webui.service.j2",
             "roles/postgresql/templates/llm-bundle.conf.j2", "roles/postgresql/templates/pg_hba.conf.j2",
             "roles/redis/templates/redis.conf.j2"]
# The role vars the unit templates render (_vllm_environment, _llamacpp_args, _llamacpp_environment).
TEMPLATE_VARS = {"roles/vllm/vars/main.yml": ["_vllm_environment", "_vllm_gpu_environment"],
                 "roles/llamacpp/vars/main.yml": ["_llamacpp_args", "_llamacpp_environment"]}
# What reaches those files without a string check: numbers, booleans and choices (the argument
# spec checks them), the API key (its own charset check), lists checked item by item, and
# derived names.
NOT_STRINGS_CHECKED_ELSEWHERE = {"llm_api_key", "open_webui_backends", "open_webui_default_models",
                                 "open_webui_admin_password_effective", "open_webui_secret_key_file",
                                 "ansible_managed", "role_path", "llm_plan", "llm_backends",
                                 # staged paths, checked by the role (roles/llamacpp/tasks/lora.yml)
                                 "llamacpp_lora_adapters"}


def test_every_string_an_env_or_unit_template_writes_is_checked():
    options = _spec_options()
    text = "".join((REPO / t).read_text() for t in TEMPLATES)
    for path, names in TEMPLATE_VARS.items():
        data = yaml.safe_load((REPO / path).read_text())
        text += "".join(str(data[n]) for n in names)
    read = set(re.findall(r"(?<![\w.])((?:llm|vllm|llamacpp|open_webui|base|postgresql|redis)_[a-z0-9_]+)",
                          text))
    unchecked = {n for n in read
                 if n in options and n not in NOT_STRINGS_CHECKED_ELSEWHERE
                 and options[n].get("type") not in ("int", "bool") and not options[n].get("choices")
                 and n not in FILE_VALUES and n not in FILE_DICTS and n not in FILE_LISTS
                 and n not in llm_preflight.DATASTORE_CHECKED}
    assert unchecked == set()


# --- ranges --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,value,needle", [
    ("vllm_port", 70000, "vllm_port 70000 is out of range: use 1 - 65535 (default 8000)"),
    ("nginx_https_port", 0, "nginx_https_port 0 is out of range: use 1 - 65535 (default 443)"),
    ("open_webui_port", "web", "open_webui_port 'web' is not a whole number: use 1 - 65535"),
    ("vllm_limit_nofile", 2000000, "vllm_limit_nofile 2000000 is out of range: use 1024 - 1048576"),
    ("vllm_timeout_start_sec", 30, "vllm_timeout_start_sec 30 is out of range: use 120 - 86400"),
    ("llamacpp_ctx_per_slot", 200000, "llamacpp_ctx_per_slot 200000 is out of range: use 512 - 131072"),
    ("llamacpp_n_gpu_layers", -2, "llamacpp_n_gpu_layers -2 is out of range: use -1 - 999"),
    ("nginx_proxy_read_timeout", 5, "nginx_proxy_read_timeout 5 is out of range: use 60 - 86400"),
    ("base_apt_cache_valid_time", -1, "base_apt_cache_valid_time -1 is out of range: use 0 or more"),
])
def test_number_out_of_its_range_is_refused_with_the_range(name, value, needle):
    _one(llm_value_problems({name: value}, DEFAULTS), needle)


def test_numbers_inside_their_range_pass_also_as_strings():
    assert llm_value_problems({"vllm_port": "8001", "llamacpp_threads": 0, "nginx_hsts_max_age": 0,
                               "llamacpp_n_gpu_layers": -1}, DEFAULTS) == []


def test_start_limit_window_must_hold_the_bursts():
    _one(llm_value_problems({"vllm_start_limit_interval_sec": 60}, DEFAULTS),
         "vllm_start_limit_interval_sec 60 is shorter than vllm_start_limit_burst 5 x RestartSec 15 s",
         "use at least 75")
    assert llm_value_problems({"llamacpp_start_limit_burst": 10}, DEFAULTS) == []  # 600 >= 50


def test_llamacpp_request_context_must_fit_the_pool():
    _one(llm_value_problems({"llamacpp_ctx_per_slot": 8192},
                            dict(DEFAULTS, llamacpp_ctx_size=4096)),
         "llamacpp_ctx_per_slot 8192 is larger than the KV pool llamacpp_ctx_size 4096")


# --- formats ------------------------------------------------------------------------------------
@pytest.mark.parametrize("email", ["admin", "a@b", "admin@@x.org", "ad min@x.org", "admin@-x.org",
                                   "admin@x.org\n"])
def test_bad_admin_email_is_refused(email):
    problems = llm_value_problems({"open_webui_admin_email": email, "llm_server_name": "llm.example.com"})
    assert problems[0] == ("open_webui_admin_email %r is not an e-mail address: use e.g. "
                           "admin@llm.example.com" % email)


@pytest.mark.parametrize("email", ["admin@llm.example.com", "first.last+llm@corp.example", "admin@localhost"])
def test_real_admin_email_passes(email):
    assert llm_value_problems({"open_webui_admin_email": email}) == []


@pytest.mark.parametrize("name", ["llm_example.com", "-llm.example.com", "llm..example.com",
                                  "a" * 64 + ".example.com", "https://llm.example.com",
                                  "llm.example.com\n"])
def test_server_name_must_be_an_rfc1123_host_name(name):
    _one(llm_value_problems({"llm_server_name": name}), "llm_server_name %r is not a host name" % name,
         "use e.g. llm.example.com")


def test_aliases_may_be_names_or_addresses():
    assert llm_value_problems({"nginx_server_aliases": ["localhost", "127.0.0.1", "::1", "llm-2.lan"]}) == []
    _one(llm_value_problems({"nginx_server_aliases": ["bad name"]}), "nginx_server_aliases has 'bad name'")


@pytest.mark.parametrize("name,value,needle", [
    ("python_runtime_index_url", "pypi.example.com/simple",
     "python_runtime_index_url 'pypi.example.com/simple' is not an http(s) URL: it has no http:// or "
     "https:// scheme; use e.g. https://pypi.example.com/simple"),
    ("base_debian_mirror", "ftp://deb.example.com/debian", "has the scheme ftp"),
    ("open_webui_public_url", "https://", "open_webui_public_url 'https://' is not an http(s) URL: it has no host"),
    ("nginx_open_webui_upstream", "http://127.0.0.1:99999", "cannot be parsed"),
    ("base_debian_security_mirror", "http://deb example.com", "has whitespace"),
    ("nginx_api_upstream", "http://127.0.0.1:8000", "nginx_api_upstream 'http://127.0.0.1:8000' does not end in /v1"),
])
def test_bad_url_is_refused(name, value, needle):
    _one(llm_value_problems({name: value}), needle)


def test_url_lists_proxies_and_backends_are_checked_item_by_item():
    problems = llm_value_problems({
        "vllm_extra_index_urls": ["https://download.pytorch.org/whl/cu129", "wheels.example.com"],
        "base_proxy": {"http_proxy": "http://proxy.example.com:3128", "https_proxy": "proxy:3128"},
        "open_webui_backends": [{"name": "x", "base_url": "127.0.0.1:8000/v1", "model": "m"}]})
    assert [p.split(" ")[0] for p in problems] == [
        "vllm_extra_index_urls[1]", "base_proxy.https_proxy", "open_webui_backends[0].base_url"]


def test_good_and_empty_optional_urls_pass():
    assert llm_value_problems({"python_runtime_index_url": "", "nginx_api_upstream": "",
                               "base_debian_mirror": "http://deb.debian.org/debian",
                               "open_webui_public_url": "https://llm.example.com:8443",
                               "nginx_open_webui_upstream": "http://[::1]:3000",
                               "python_runtime_extra_index_urls": ["https://download.pytorch.org/whl/cpu"]}) == []


@pytest.mark.parametrize("values,needle", [
    ({"vllm_state_dir": "var/lib/llm/vllm"}, "vllm_state_dir 'var/lib/llm/vllm' is not an absolute path on the host: use e.g. /var/lib/llm/vllm"),
    ({"vllm_user": "vLLM"}, "vllm_user 'vLLM' is not a user or group name"),
    ({"nginx_api_rate": "10/s"}, "nginx_api_rate '10/s' is not an nginx rate (requests per second or minute): use e.g. 10r/s"),
    ({"nginx_client_max_body_size": "5m"}, "nginx_client_max_body_size 5m is below the 20m Open WebUI uploads need"),
    ({"nginx_client_max_body_size": "50 MB"}, "nginx_client_max_body_size '50 MB' is not an nginx size"),
    ({"nginx_tls_ciphers": ["ECDHE-RSA-AES128-GCM-SHA256;"]}, "nginx_tls_ciphers has 'ECDHE-RSA-AES128-GCM-SHA256;'"),
])
def test_other_formats(values, needle):
    _one(llm_value_problems(values), needle)


# --- secrets ------------------------------------------------------------------------------------
def test_short_or_one_kind_admin_password_is_refused_without_quoting_it():
    _one(llm_value_problems({"open_webui_admin_password": "Sh0rt!"}),
         "open_webui_admin_password has 6 characters: use at least 12")
    message = _one(llm_value_problems({"open_webui_admin_password": "aaaaaaaaaaaaaaaa"}),
                   "open_webui_admin_password has only lower-case letters")
    assert "aaaa" not in message
    assert llm_value_problems({"open_webui_admin_password": "correct horse battery staple"}) == []
    assert llm_value_problems({"open_webui_admin_password": ""}) == []  # generated


def test_api_key_needs_32_safe_characters():
    key = "0123456789abcdef" * 2
    assert llm_value_problems({"llm_api_key": key}) == []
    assert llm_value_problems({"llm_api_key": "A-Za-z0-9._~+/=" * 3}) == []
    short = _one(llm_value_problems({"llm_api_key": "sk-short"}), "llm_api_key has 8 characters: use at least 32")
    assert "sk-short" not in short
    for bad in ('x' * 32 + '"', "x" * 32 + " y", "x" * 32 + "$HOME", "x" * 32 + ";", "x" * 32 + "\n"):
        message = _one(llm_value_problems({"llm_api_key": bad}), "llm_api_key has characters outside")
        assert "x" * 32 not in message


@pytest.mark.parametrize("name", ["llm_fleet_chroma_token", "open_webui_chroma_token", "nginx_vector_endpoint_token"])
def test_vector_store_token_must_fit_a_header_list_and_an_nginx_map(name):
    assert llm_value_problems({name: "A1b2" * 12}) == []
    # Open WebUI splits CHROMA_HTTP_HEADERS on ',' and '='; nginx compares it as a quoted string.
    for bad in ("x" * 32 + ",X-Other=1", "x" * 32 + "=", "x" * 32 + '"', "x" * 32 + " y"):
        message = _one(llm_value_problems({name: bad}), name + " has characters outside A-Z a-z 0-9")
        assert "x" * 32 not in message
    _one(llm_value_problems({name: "short"}), name + " has 5 characters: use at least 32")


# --- values written into env and unit files -----------------------------------------------------
@pytest.mark.parametrize("values,needle", [
    ({"open_webui_admin_name": "Admin\nENABLE_SIGNUP=True"},
     "open_webui_admin_name contains a line break, which would break the environment file: "
     "use e.g. 'AdminENABLE_SIGNUP=True'"),
    ({"vllm_environment": {"HTTP_PROXY": 'http://p:3128"'}},
     "vllm_environment.HTTP_PROXY contains a double quote, which would break the systemd unit"),
    ({"llamacpp_environment": {"X": "50%"}}, "llamacpp_environment.X contains a % (systemd specifier)"),
    ({"llamacpp_extra_args": {"chat-template": "$TEMPLATE"}},
     "llamacpp_extra_args.chat-template contains a $ (systemd expands it), which would break the unit's ExecStart line"),
    ({"vllm_venv_dir": "/opt/my venv"}, "vllm_venv_dir contains a space, which would break the unit's ExecStart line"),
    ({"llamacpp_served_model_name": "qwen's"}, "llamacpp_served_model_name contains a single quote"),
    ({"vllm_environment": {"MY-VAR": "1"}}, "vllm_environment has the key 'MY-VAR', which is not an environment variable name: use letters, digits and _, e.g. MY_VAR"),
    ({"vllm_extra_args": {"--max-num-seqs": 8}}, "vllm_extra_args has the key '--max-num-seqs': use the option's long name without dashes, e.g. max-num-seqs"),
    ({"open_webui_default_models": ["a,b"]}, "open_webui_default_models[0] 'a,b' has a comma"),
    ({"open_webui_ip_address_allow": ["localhost", "10.0.0.1 10.0.0.2"]},
     "open_webui_ip_address_allow[1] contains a space"),
    ({"vllm_system_call_filter": ["@system-service\nExecStartPre=/bin/true"]},
     "vllm_system_call_filter[0] contains a line break, which would break the systemd unit"),
])
def test_value_that_would_break_an_env_or_unit_file_is_refused(values, needle):
    _one(llm_value_problems(values), needle)


def test_secret_with_a_line_break_is_named_not_quoted():
    password = "Correct-Horse-1\nWEBUI_AUTH=False"
    problems = llm_value_problems({"open_webui_admin_password": password})
    assert problems == ["open_webui_admin_password contains a line break, which would break the "
                        "environment file: remove it"]


def test_spaces_are_fine_where_the_template_quotes():
    assert llm_value_problems({"llamacpp_served_model_name": "Qwen 2.5 7B", "open_webui_admin_name": "Ops Team",
                               "vllm_environment": {"A": "b c"}, "llamacpp_extra_args": {"no-mmap": True}}) == []


# --- certificate, key and CA files on the controller ---------------------------------------------
@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return tls_files.tls_set(tmp_path_factory.mktemp("tls"))


def _tls(cert, key, name="llm.example.com", **extra):
    return llm_tls_problems(dict({"nginx_tls_certificate_src": cert, "nginx_tls_certificate_key_src": key},
                                 **extra), name)


def test_matching_pair_for_the_server_name_passes(tls):
    assert _tls(tls["cert"], tls["key"]) == []
    assert _tls(tls["cert"], tls["key"], "LLM.Example.COM") == []


def test_key_of_another_certificate_is_refused(tls):
    _one(_tls(tls["cert"], tls["other_key"]),
         "nginx_tls_certificate_key_src %r is not the key of nginx_tls_certificate_src %r" % (tls["other_key"], tls["cert"]))


def test_certificate_for_another_name_is_refused(tls):
    _one(_tls(tls["wrong_name_cert"], tls["key"]),
         "does not name the server llm.example.com (its subjectAltName: other.example.org)",
         "or set llm_server_name to one of its names")


def test_wildcard_and_ip_sans(tmp_path):
    key = tls_files.key()
    key_path = tls_files.write_pem(tmp_path / "k.pem", key)
    cert = tls_files.write_pem(tmp_path / "c.pem", tls_files.certificate(key, ["DNS:*.example.com", "IP:10.0.0.5"]))
    assert _tls(cert, key_path, "llm.example.com") == []
    assert _tls(cert, key_path, "10.0.0.5") == []
    assert len(_tls(cert, key_path, "a.llm.example.com")) == 1  # one label only
    assert len(_tls(cert, key_path, "example.com")) == 1
    no_san = tls_files.write_pem(tmp_path / "nosan.pem", tls_files.certificate(key, []))
    _one(_tls(no_san, key_path), "(its subjectAltName: none)")


def test_expired_certificate_is_refused(tmp_path):
    key = tls_files.key()
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    cert = tls_files.write_pem(tmp_path / "old.pem", tls_files.certificate(key, ["DNS:llm.example.com"], not_after=past))
    _one(_tls(cert, tls_files.write_pem(tmp_path / "k.pem", key)), "expired on %s: renew it" % past.date().isoformat())


def test_encrypted_key_is_refused(tmp_path, tls):
    key = tls_files.key()
    cert = tls_files.write_pem(tmp_path / "c.pem", tls_files.certificate(key, ["DNS:llm.example.com"]))
    locked = tls_files.write_pem(tmp_path / "locked.pem", key, password=b"secret")
    _one(_tls(cert, locked), "nginx_tls_certificate_key_src %r is encrypted" % locked)


def test_missing_non_pem_and_half_set_files_are_refused(tmp_path, tls):
    _one(_tls("/nonexistent/cert.pem", tls["key"]),
         "nginx_tls_certificate_src '/nonexistent/cert.pem' is not a file on the controller")
    der = tmp_path / "cert.der"
    der.write_bytes(b"\x30\x82\x01\x00")
    _one(_tls(str(der), tls["key"]), "nginx_tls_certificate_src %r is not PEM" % str(der))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    _one(_tls(str(garbage), tls["key"]), "holds no readable certificate")
    _one(_tls(tls["cert"], ""), "nginx_tls_certificate_src is set but nginx_tls_certificate_key_src is empty")
    assert _tls("", "") == []


def test_ca_files_must_be_pem_certificates(tls):
    assert llm_tls_problems({"base_extra_ca_certificates": [tls["ca"]]}) == []
    _one(llm_tls_problems({"base_extra_ca_certificates": [tls["ca"], tls["ca_der"]]}),
         "base_extra_ca_certificates[1] %r is not a PEM certificate" % tls["ca_der"])
    _one(llm_tls_problems({"base_extra_ca_certificates": [tls["key"]]}), "is not a PEM certificate")
    _one(llm_tls_problems({"base_extra_ca_certificates": ["/nonexistent/ca.pem"]}), "is not a file on the controller")


# --- ports --------------------------------------------------------------------------------------
def _listener(port, name, user, pid=4242, address="0.0.0.0"):
    return {"port": port, "name": name, "user": user, "pid": pid, "address": address, "protocol": "tcp"}


def test_two_services_on_one_port_are_refused():
    _one(llm_port_problems({"open_webui_port": 8081}, DEFAULTS),
         "llamacpp_port and open_webui_port share port 8081")


def test_port_held_by_a_foreign_process_is_named_with_a_free_one():
    listeners = [_listener(3000, "grafana", "grafana"), _listener(3001, "node", "app", address="127.0.0.1")]
    _one(llm_port_problems({}, DEFAULTS, "vllm", listeners),
         "open_webui_port 3000 is in use on the host by grafana (pid 4242, user grafana) on 0.0.0.0, "
         "not by a service of this bundle: stop it or set open_webui_port to a free port, e.g. 3002")


def test_ports_held_by_the_bundle_itself_pass():
    listeners = [_listener(443, "nginx", "root"), _listener(80, "nginx", "root"),
                 _listener(3000, "open-webui", "open-webui"), _listener(8000, "python3", "vllm"),
                 _listener(8081, "apache2", "www-data")]  # llama.cpp's port, but this host runs vLLM
    assert llm_port_problems({}, DEFAULTS, "vllm", listeners) == []
    _one(llm_port_problems({}, DEFAULTS, "llamacpp", listeners), "llamacpp_port 8081 is in use on the host by apache2")
    _one(llm_port_problems({"vllm_user": "svc-vllm"}, DEFAULTS, "vllm", listeners),
         "vllm_port 8000 is in use on the host by python3 (pid 4242, user vllm)")


def test_grafana_port_is_checked_only_where_grafana_is_installed():
    listeners = [_listener(3001, "node", "app", address="127.0.0.1")]
    assert llm_port_problems({}, DEFAULTS, "vllm", listeners) == []
    _one(llm_port_problems({"monitoring_grafana_enabled": True}, DEFAULTS, "vllm", listeners),
         "monitoring_grafana_port 3001 is in use on the host by node (pid 4242, user app) on 127.0.0.1")


def test_invisible_process_and_unread_listeners():
    _one(llm_port_problems({}, DEFAULTS, "vllm", [_listener(80, "", "", pid=0)]),
         "nginx_http_port 80 is in use on the host by a process Ansible cannot see")
    assert llm_port_problems({}, DEFAULTS, "vllm", None) == []


# --- datastores of several Open WebUI replicas (roles postgresql, redis) ------------------------
PG_SECRET = "Pg5ecretPg5ecretPg5ecret"


@pytest.mark.parametrize("url,needle", [
    ("mysql://open_webui:%s@db/open_webui" % PG_SECRET,
     "open_webui_database_url has the scheme mysql://, which Open WebUI cannot use here: use a postgresql:// "
     "or postgres:// or postgresql+psycopg:// URL, e.g. postgresql://open_webui:<password>@127.0.0.1:5432/open_webui"),
    ("sqlite:////var/lib/llm/open-webui/webui.db", "has the scheme sqlite://"),
    ("postgresql+psycopg2://open_webui:%s@db/open_webui" % PG_SECRET,
     "(psycopg2 is not in Open WebUI's venv; psycopg 3 is)"),
    ("open_webui:%s@db/open_webui" % PG_SECRET, "open_webui_database_url has no scheme: use a postgresql:// URL"),
    ("postgresql://open_webui:%s@/open_webui" % PG_SECRET, "open_webui_database_url has no host"),
    ("postgresql://open_webui:%s@db:5432" % PG_SECRET, "open_webui_database_url does not end in /<database>"),
    ("postgresql://open_webui:%s@db:99999/open_webui" % PG_SECRET, "open_webui_database_url cannot be parsed"),
])
def test_database_url_must_be_postgresql_and_is_never_quoted(url, needle):
    problem = _one(llm_value_problems({"open_webui_database_url": url}), needle)
    assert PG_SECRET not in problem


@pytest.mark.parametrize("url,needle", [
    ("http://open-webui:%s@cache:6379/0" % PG_SECRET,
     "open_webui_redis_url has the scheme http://, which Open WebUI cannot use here: use a redis:// or rediss:// "
     "URL, e.g. redis://open-webui:<password>@127.0.0.1:6379/0"),
    ("cache:6379", "open_webui_redis_url has no scheme: use a redis:// URL"),
    ("redis://open-webui:%s@cache:6379/zero" % PG_SECRET, "open_webui_redis_url does not end in /<database number>"),
])
def test_redis_url_must_be_redis_or_rediss_and_is_never_quoted(url, needle):
    problem = _one(llm_value_problems({"open_webui_redis_url": url}), needle)
    assert PG_SECRET not in problem


def test_working_datastore_urls_and_empty_ones_pass():
    for values in ({"open_webui_database_url": "", "open_webui_redis_url": ""},
                   {"open_webui_database_url": "postgresql://open_webui:%s@10.0.0.5:5432/open_webui" % PG_SECRET,
                    "open_webui_redis_url": "redis://open-webui:%s@10.0.0.5:6379/0" % PG_SECRET},
                   {"open_webui_database_url": "postgres://u:%s@db.example.com/open_webui" % PG_SECRET,
                    "open_webui_redis_url": "rediss://:%s@[fd00::7]:6380" % PG_SECRET},
                   {"open_webui_database_url": "postgresql+psycopg://u:%s@db/owui?sslmode=require" % PG_SECRET}):
        assert llm_value_problems(values) == [], values


def test_secret_url_with_a_line_break_is_named_not_quoted():
    problems = llm_value_problems({"open_webui_redis_url": "redis://:%s@cache/0\nENABLE_SIGNUP=True" % PG_SECRET})
    assert "open_webui_redis_url contains a line break, which would break the environment file: remove it" \
        in problems
    assert not [p for p in problems if PG_SECRET in p or "ENABLE_SIGNUP" in p]


@pytest.mark.parametrize("values,needle", [
    ({"postgresql_allow_from": ["10.0.0.1/24"]},
     "postgresql_allow_from has '10.0.0.1/24', which is not an IP address or network (10.0.0.1/24 has host bits "
     "set): use e.g. 10.0.0.0/24"),
    ({"postgresql_allow_from": ["db.example.com"]}, "postgresql_allow_from has 'db.example.com', which is not"),
    ({"postgresql_listen_addresses": ["0.0.0.0/0"]},
     "postgresql_listen_addresses has '0.0.0.0/0', which is not an IP address: use e.g. 10.0.0.5"),
    ({"redis_bind_addresses": ["[fd00::7]"]}, "redis_bind_addresses has '[fd00::7]', which is not an IP address"),
    ({"postgresql_user": "Open-WebUI"},
     "postgresql_user 'Open-WebUI' is not a plain PostgreSQL name (lower-case letters, digits and _, starting with "
     "a letter or _, at most 63): use e.g. open_webui"),
    ({"postgresql_database": "1chats"}, "postgresql_database '1chats' is not a plain PostgreSQL name"),
    ({"redis_user": "open webui"}, "redis_user 'open webui' is not one word"),
    ({"redis_monitor_user": "llm monitor"}, "redis_monitor_user 'llm monitor' is not one word of letters, digits, "
     "_ . and -: use e.g. llm-monitor"),
    ({"postgresql_monitor_role": "Prom"}, "postgresql_monitor_role 'Prom' is not a plain PostgreSQL name"),
    ({"redis_maxmemory": "half"}, "redis_maxmemory 'half' is not a Redis memory size: use e.g. 256mb or 1gb"),
    ({"postgresql_settings": {"work-mem": "16MB"}}, "postgresql_settings has the key 'work-mem'"),
    ({"postgresql_settings": {"work_mem": "16MB\nfsync = off"}},
     "postgresql_settings.work_mem contains a line break, which would break PostgreSQL's configuration file"),
    ({"redis_password": "short-pw"}, "redis_password has 8 characters: use at least 16"),
    ({"postgresql_port": 0}, "postgresql_port 0 is out of range: use 1 - 65535"),
    ({"postgresql_open_webui_replicas": 0}, "postgresql_open_webui_replicas 0 is out of range: use 1 - 1000"),
])
def test_bad_datastore_values_are_refused(values, needle):
    _one(llm_value_problems(values), needle)


def test_good_datastore_values_pass():
    assert llm_value_problems({
        "postgresql_allow_from": ["10.0.0.7", "10.0.1.0/24", "fd00::/64"],
        "postgresql_listen_addresses": ["10.0.0.5", "fd00::5"], "redis_bind_addresses": ["10.0.0.5"],
        "postgresql_user": "open_webui", "postgresql_database": "open_webui", "redis_user": "open-webui",
        "redis_maxmemory": "1gb", "postgresql_settings": {"work_mem": "16MB", "log_min_duration_statement": 500},
        "postgresql_password": "x" * 16, "redis_password": "", "postgresql_open_webui_replicas": 10,
    }) == []
