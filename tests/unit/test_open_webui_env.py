"""Open WebUI's environment file with and without the datastores of several replicas.

Renders roles/open_webui/templates/open-webui.env.j2 with Ansible's own template module (one
ansible-playbook run on this machine, one play per case, the role's defaults plus the case's
variables) and reads the files back, as systemd's EnvironmentFile= would.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")

DB_URL = "postgresql://open_webui:S3cretPassw0rdS3cret@10.0.0.5:5432/open_webui"
REDIS_URL = "redis://open-webui:R3disPassw0rdR3dis@10.0.0.5:6379/0"
# What the role and the plays before it provide (the secrets tasks, the engine roles' backends).
COMMON = {
    "llm_server_name": "llm.example.com",
    "open_webui_backends": [{"name": "vLLM", "base_url": "http://127.0.0.1:8000/v1",
                             "model": "Qwen2.5-7B-Instruct", "api_key": "k" * 32}],
    "open_webui_secret_key_file": {"content": "c2VjcmV0LWtleQo="},  # "secret-key\n"
    "open_webui_admin_password_effective": "unused",
    "_open_webui_admin_bootstrap": False,
}
CASES = {
    "single_host": {},
    "postgresql": {"open_webui_database_url": DB_URL},
    "postgres_scheme": {"open_webui_database_url": DB_URL.replace("postgresql://", "postgres://")},
    "psycopg_scheme": {"open_webui_database_url": DB_URL.replace("postgresql://", "postgresql+psycopg://")},
    "fleet_joiner": {"open_webui_database_url": DB_URL, "open_webui_redis_url": REDIS_URL,
                     "open_webui_db_migrations": False, "open_webui_redis_key_prefix": "owui-prod"},
    "redis_only": {"open_webui_redis_url": REDIS_URL.replace("redis://", "rediss://")},
    "fleet_chroma": {"open_webui_chroma_url": "https://10.0.0.6:9444", "open_webui_chroma_token": "T0ken" * 10},
    "chroma_plain": {"open_webui_chroma_url": "http://chroma.internal"},
    "names_in_urls": {"open_webui_database_url": DB_URL.replace("10.0.0.5", "db.example.com"),
                      "open_webui_redis_url": REDIS_URL.replace("10.0.0.5", "[fd00::7]")},
}
NEW_KEYS = {"DATABASE_URL", "ENABLE_DB_MIGRATIONS", "REDIS_URL", "REDIS_KEY_PREFIX", "WEBSOCKET_MANAGER",
            "WEBSOCKET_REDIS_URL"}
CHROMA_KEYS = {"VECTOR_DB", "CHROMA_HTTP_HOST", "CHROMA_HTTP_PORT", "CHROMA_HTTP_SSL", "CHROMA_HTTP_HEADERS",
               "SSL_CERT_FILE"}


def _env(text: str) -> dict:
    """NAME="value" lines (the template escapes \\ and ") -> {NAME: value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and value.startswith('"') and value.endswith('"'), line
        out[name] = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """{case: (env dict, raw text, open_webui_ip_address_allow)} from one ansible-playbook run."""
    tmp = tmp_path_factory.mktemp("owui-env")
    # Play vars, not vars_files (which would outrank the case's values): role-default precedence is lower still.
    defaults = yaml.safe_load((REPO / "roles" / "open_webui" / "defaults" / "main.yml").read_text())
    plays = []
    for case, overrides in CASES.items():
        plays.append({
            "name": case, "hosts": "localhost", "gather_facts": False,
            "vars": {**defaults, **COMMON, **overrides},
            "tasks": [
                {"ansible.builtin.template": {"src": str(REPO / "roles/open_webui/templates/open-webui.env.j2"),
                                              "dest": str(tmp / (case + ".env")), "mode": "0600"}},
                {"ansible.builtin.copy": {"content": "{{ open_webui_ip_address_allow | to_json }}",
                                          "dest": str(tmp / (case + ".allow.json")), "mode": "0600"}},
            ],
        })
    play = tmp / "play.yml"
    play.write_text(yaml.safe_dump(plays, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CACHE_PLUGIN="memory", ANSIBLE_LOCAL_TEMP=str(tmp / "t"))
    proc = subprocess.run([PLAYBOOK, "-i", "localhost,", "-c", "local",
                           "-e", "ansible_python_interpreter=%s" % sys.executable, str(play)],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = {}
    for case in CASES:
        text = (tmp / (case + ".env")).read_text()
        out[case] = (_env(text), text, json.loads((tmp / (case + ".allow.json")).read_text()))
    return out


def test_single_host_defaults_write_no_datastore_setting(rendered):
    env, _, allow = rendered["single_host"]
    assert (NEW_KEYS | CHROMA_KEYS) & set(env) == set()
    assert env["WEBUI_SECRET_KEY"] == "secret-key" and env["OPENAI_API_BASE_URLS"] == "http://127.0.0.1:8000/v1"
    assert allow == ["localhost"]


def test_database_url_is_written_for_psycopg3_and_nothing_else_changes(rendered):
    base, _, _ = rendered["single_host"]
    env, _, allow = rendered["postgresql"]
    # Open WebUI's startup engine takes DATABASE_URL as it is; postgresql:// would load psycopg2,
    # which its venv does not have.
    assert env["DATABASE_URL"] == "postgresql+psycopg://open_webui:S3cretPassw0rdS3cret@10.0.0.5:5432/open_webui"
    assert set(env) - set(base) == {"DATABASE_URL"}
    assert {k: v for k, v in env.items() if k != "DATABASE_URL"} == base
    # The database host is an IP address: the unit's IPAddressAllow lets the service reach it.
    assert allow == ["localhost", "10.0.0.5"]


@pytest.mark.parametrize("case", ["postgres_scheme", "psycopg_scheme"])
def test_every_accepted_scheme_ends_as_postgresql_psycopg(rendered, case):
    assert rendered[case][0]["DATABASE_URL"] == \
        "postgresql+psycopg://open_webui:S3cretPassw0rdS3cret@10.0.0.5:5432/open_webui"


def test_fleet_replica_gets_redis_websockets_and_no_migrations(rendered):
    base, _, _ = rendered["single_host"]
    env, _, allow = rendered["fleet_joiner"]
    assert {k: env[k] for k in NEW_KEYS} == {
        "DATABASE_URL": "postgresql+psycopg://open_webui:S3cretPassw0rdS3cret@10.0.0.5:5432/open_webui",
        "ENABLE_DB_MIGRATIONS": "False",
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": "owui-prod",
        "WEBSOCKET_MANAGER": "redis",
        "WEBSOCKET_REDIS_URL": REDIS_URL,
    }
    assert {k: v for k, v in env.items() if k not in NEW_KEYS} == base
    assert allow == ["localhost", "10.0.0.5"]  # one address for both


def test_redis_alone_keeps_sqlite_and_the_default_prefix(rendered):
    env, _, _ = rendered["redis_only"]
    assert "DATABASE_URL" not in env and "ENABLE_DB_MIGRATIONS" not in env
    assert env["REDIS_URL"] == env["WEBSOCKET_REDIS_URL"] == REDIS_URL.replace("redis://", "rediss://")
    assert env["WEBSOCKET_MANAGER"] == "redis" and env["REDIS_KEY_PREFIX"] == "open-webui"


def test_a_fleet_replica_uses_the_shared_chroma_over_tls_with_the_token(rendered):
    base, _, _ = rendered["single_host"]
    env, _, allow = rendered["fleet_chroma"]
    assert {k: env[k] for k in CHROMA_KEYS} == {
        "VECTOR_DB": "chroma", "CHROMA_HTTP_HOST": "10.0.0.6", "CHROMA_HTTP_PORT": "9444",
        "CHROMA_HTTP_SSL": "true", "CHROMA_HTTP_HEADERS": "Authorization=Bearer " + "T0ken" * 10,
        # the system CA store, where base put the fleet CA (httpx would read certifi's otherwise)
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}
    assert {k: v for k, v in env.items() if k not in CHROMA_KEYS} == base
    assert allow == ["localhost", "10.0.0.6"]
    plain, _, _ = rendered["chroma_plain"]
    assert {k: plain.get(k) for k in CHROMA_KEYS} == {
        "VECTOR_DB": "chroma", "CHROMA_HTTP_HOST": "chroma.internal", "CHROMA_HTTP_PORT": "8000",
        "CHROMA_HTTP_SSL": "false", "CHROMA_HTTP_HEADERS": None, "SSL_CERT_FILE": None}


def test_only_addresses_of_the_urls_join_the_unit_allow_list(rendered):
    # A host name cannot go into IPAddressAllow (the README says to list its addresses); an IPv6 literal can.
    assert rendered["names_in_urls"][2] == ["localhost", "fd00::7"]


def test_the_secret_urls_stay_in_the_env_file_only(rendered):
    # The env file is the one place: the role renders it 0600 root with no_log (tasks/env.yml).
    tasks = yaml.safe_load((REPO / "roles/open_webui/tasks/env.yml").read_text())
    env_task = next(t for t in tasks if "ansible.builtin.template" in t)
    assert env_task["no_log"] is True and env_task["ansible.builtin.template"]["mode"] == "0600"
    unit = (REPO / "roles/open_webui/templates/open-webui.service.j2").read_text()
    assert "database_url" not in unit and "redis_url" not in unit
