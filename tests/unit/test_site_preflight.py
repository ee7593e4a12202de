"""site.yml stops before any host is touched when a variable is wrong.

Runs the real site.yml in check mode against this machine (local connection, CPU mode) with
one bad variable per case and asserts the run ends in the plan or preflight stage, naming the
option, and that the deploy play never starts.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tls_files
from llm_offline import llm_offline_debs

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not installed")


def _site(tmp_path, *extra, tags=None, facts=None, groups=(), hosts=None):
    """site.yml --check on this machine; facts: cached host facts (as another OS would report them);
    groups: inventory groups testhost is also in (llm_engines, llm_fronts: a fleet); hosts: instead of testhost,
    these local hosts, each with its host vars ({name: vars})."""
    if hosts is None:
        inv = tmp_path / "hosts.ini"
        inv.write_text("[llm_hosts]\ntesthost ansible_connection=local ansible_python_interpreter=%s "
                       "gpu_facts_sysfs_root=%s\n" % (sys.executable, tmp_path)
                       + "".join("[%s]\ntesthost\n" % g for g in groups))
    else:
        inv = tmp_path / "hosts.json"
        local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "gpu_facts_sysfs_root": str(tmp_path)}
        inv.write_text(json.dumps({"llm_hosts": {"hosts": {h: dict(local, **v) for h, v in hosts.items()}}}))
    # ANSIBLE_CACHE_PLUGIN: no facts from ansible.cfg's jsonfile cache (.cache/facts) or into it.
    env = dict(os.environ, ANSIBLE_CACHE_PLUGIN="memory", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "t"),
               LLM_PLAN_REPORT_DIR=str(tmp_path / "reports"))  # plan.yml's report, not the repo's
    if facts is not None:
        # Ansible itself writes the facts into a fact cache the site.yml run then reads (preflight
        # gathers facts only when the cache has none).
        env.update(ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"))
        seed = tmp_path / "seed-facts.yml"
        seed.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [
            {"ansible.builtin.set_fact": dict({"ansible_" + k: v for k, v in facts.items()}, cacheable=True)}]}]))
        subprocess.run([PLAYBOOK, "-i", str(inv), str(seed)], cwd=str(REPO), env=env, check=True,
                       capture_output=True, text=True, timeout=120)
    cmd = [PLAYBOOK, "-i", str(inv), str(REPO / "site.yml"), "--check", "-e", "llm_mode=cpu"]
    if tags:
        cmd += ["--tags", tags]
    for e in extra:
        cmd += ["-e", e]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


#: (bad variables, what the refusal must say). One ansible-playbook run checks most of them (wrong_variables_run):
#: one local host per case, the bad values its host vars; each host fails on its own in preflight. A case on its
#: own run, its values given with -e as an operator would: the planner's range checks (they stop every host at
#: once: plan.yml's any_errors_fatal) and the model source (the offline model source of the run is given with -e,
#: which outranks host vars).
WRONG_VARIABLES = [
    ("base_apt_cache_valid_time=soon", "base_apt_cache_valid_time"),
    ('{"base_debian_components": ["main", "universe"]}', "base_debian_components"),
    ("python_runtime_index_strategy=fastest", "python_runtime_index_strategy"),
    ("llm_max_model_len=lots", "llm_max_model_len"),
    ("model_store_source=hf model_store_revision=main",
     "model_store_revision must be a commit (40 hex digits) of Qwen/Qwen2.5-7B-Instruct, got 'main'"),
    ("model_store_source=hf model_store_repo=acme/qwen-tuned",
     "model_store_revisions: {'acme/qwen-tuned': <commit>}"),
    # Values a type does not catch (playbooks/tasks/preflight-values.yml).
    ("open_webui_admin_password=short", "open_webui_admin_password has 5 characters: use at least 12"),
    ("open_webui_admin_email=admin", "open_webui_admin_email 'admin' is not an e-mail address"),
    ("nginx_tls_certificate_src=/nonexistent/cert.pem nginx_tls_certificate_key_src=/nonexistent/key.pem",
     "nginx_tls_certificate_src '/nonexistent/cert.pem' is not a file on the controller"),
    ("nginx_tls_certificate_src=%s nginx_tls_certificate_key_src=%s" % (REPO / "LICENSE", REPO / "LICENSE"),
     "nginx_tls_certificate_key_src '%s' is not PEM" % (REPO / "LICENSE")),
    ("open_webui_port=8081", "llamacpp_port and open_webui_port share port 8081"),
    # llm_* knobs are range-checked by the planner (plan stage, before preflight).
    ("llm_gpu_memory_utilization=0.995", "llm_gpu_memory_utilization must be a float between 0.1 and 0.99"),
    # Hash-pinned venv locks (python_runtime tasks/lock.yml, through the roles' venv_lock.yml).
    ("open_webui_version=0.12.5", "/files/locks/open-webui-0.12.5-py3.11.txt for the open-webui venv"),
    ("python_runtime_uv_version=0.13.8", "python_runtime_uv_version 0.13.8 has no hash-pinned lock"),
    ('{"open_webui_extra_packages": ["psycopg2-binary==2.9.10"]}',
     "requirements the lock does not pin at that version: ['psycopg2-binary==2.9.10']"),
    ("open_webui_venv_lock=%s" % (REPO / "LICENSE"), "does not fit the open-webui venv: 0 pins, 0 of them with a sha256"),
    ("open_webui_python=3.12", "/files/locks/open-webui-0.12.4-py3.12.txt for the open-webui venv"),
    ("open_webui_venv_lock=%s/roles/python_runtime/files/locks/open-webui-0.12.4-py3.11.txt open_webui_python=3.12"
     % REPO, "lock made for Python 3.11 (venv: 3.12)"),
    ("open_webui_venv_lock= python_runtime_locks_required=true",
     "python_runtime_locks_required is true and the open-webui venv"),
]
OWN_RUN = ("llm_max_model_len", "llm_gpu_memory_utilization", "model_store_")


def _as_vars(*settings):
    """-e style settings ("k=v k2=v2", strings as -e gives them, or JSON) as one dict, later ones winning."""
    merged = {}
    for setting in settings:
        merged.update(json.loads(setting) if setting.startswith("{") else
                      dict(kv.split("=", 1) for kv in setting.split(" ")))
    return merged


def _host_output(out, host):
    """The lines of a run's output about one host ([host], or [host -> localhost] for a delegated task): its result
    lines and everything indented under them."""
    lines, keep = [], False
    for line in out.splitlines():
        if line[:1] not in (" ", ""):
            keep = ("[%s]" % host in line or "[%s -> " % host in line) and not line.startswith(("TASK", "PLAY"))
        if keep:
            lines.append(line)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def wrong_variables_run(tmp_path_factory):
    """run(bad) -> (rc, whole output, this case's host's output) of the run that holds the case."""
    tmp = tmp_path_factory.mktemp("wrong-variables")
    # An offline model source: preflight sizes the model, and this machine cannot reach the Hub.
    model = _offline_model(tmp)
    cases = {"case%02d" % i: bad for i, (bad, _) in enumerate(WRONG_VARIABLES)}
    done = {}

    def run(bad):
        host = next(h for h, b in cases.items() if b == bad)
        own = any(v in bad for v in OWN_RUN)
        group = (host,) if own else tuple(h for h, b in cases.items() if not any(v in b for v in OWN_RUN))
        if group not in done:
            folder = tmp / ("-".join(group) if own else "batch")
            folder.mkdir()
            done[group] = (_site(folder, model, bad, hosts={host: {}}) if own else
                           _site(folder, model, hosts={h: _as_vars(cases[h]) for h in group}))
        rc, out = done[group]
        return rc, out, _host_output(out, host)

    return run


@pytest.mark.parametrize("bad,needle", WRONG_VARIABLES)
def test_wrong_variable_stops_site_before_the_deploy_play(wrong_variables_run, bad, needle):
    rc, out, mine = wrong_variables_run(bad)
    assert rc != 0, out
    # Joined as one line, quotes as written (the YAML result format wraps long messages and doubles quotes).
    assert needle in " ".join(mine.split()).replace("''", "'"), out
    assert "PLAY [Deploy the LLM stack]" not in out, out


# One case per kind of bad input that plugins/filter/llm_preflight.py refuses. The preflight message
# lists every problem of a host, so the cases share a few ansible-playbook runs (each takes ~8 s):
# the bad values of one run do not overlap. Needles use the run's files ({cert}, ...), the port a
# listener of this test holds ({port}) and this process's pid ({pid}).
RUNS = {
    "values": lambda f: [
        "vllm_port=70000",
        "open_webui_admin_email=admin@localhost.",
        "python_runtime_index_url=pypi.example.com/simple",
        "llm_server_name=llm_example.com",
        "llm_api_key=sk-short",
        "open_webui_admin_password=aaaaaaaaaaaaaaaa",
        json.dumps({"open_webui_admin_name": "Admin\nENABLE_SIGNUP=True",
                    "vllm_environment": {"HTTP_PROXY": 'http://proxy:3128"'}}),
        "open_webui_port=%d" % f["port"],
        # The datastores of several replicas (roles postgresql and redis): URLs hold a password.
        "open_webui_database_url=mysql://open_webui:Db5ecretDb5ecretDb5ecret@db.example.com/open_webui",
        "open_webui_redis_url=http://cache.example.com:6379",
        json.dumps({"postgresql_allow_from": ["10.0.0.1/24"]}),
        json.dumps({"monitoring_alert_for": {"LlmEngineDwn": "5m", "LlmHttp5xx": "5 minutes"}}),
    ],
    "tls": lambda f: [
        "llm_server_name=llm.example.com",
        "nginx_tls_certificate_src=%s nginx_tls_certificate_key_src=%s" % (f["cert"], f["other_key"]),
        json.dumps({"base_extra_ca_certificates": [f["ca"], f["ca_der"]]}),
    ],
    "tls_name": lambda f: [
        "llm_server_name=llm.example.com",
        "nginx_tls_certificate_src=%s nginx_tls_certificate_key_src=%s" % (f["wrong_name_cert"], f["key"]),
    ],
}


@pytest.fixture(scope="module")
def preflight_run(tmp_path_factory):
    """run(name) -> (rc, output, files) of RUNS[name], run once per module."""
    files = tls_files.tls_set(tmp_path_factory.mktemp("tls"))
    # A process of no bundle service holding a port: preflight must name it.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    files.update(port=listener.getsockname()[1], pid=os.getpid())
    done = {}

    def run(name):
        if name not in done:
            done[name] = _site(tmp_path_factory.mktemp(name), *RUNS[name](files))
        return done[name] + (files,)

    yield run
    listener.close()


@pytest.mark.parametrize("run,needle", [
    ("values", "vllm_port 70000 is out of range: use 1 - 65535 (default 8000)"),
    ("values", "open_webui_admin_email 'admin@localhost.' is not an e-mail address: use e.g. admin@llm_example.com"),
    ("values", "python_runtime_index_url 'pypi.example.com/simple' is not an http(s) URL: it has no http:// "
               "or https:// scheme; use e.g. https://pypi.example.com/simple"),
    ("values", "llm_server_name 'llm_example.com' is not a host name (RFC 1123"),
    ("values", "llm_api_key has 8 characters: use at least 32"),
    ("values", "open_webui_admin_password has only lower-case letters"),
    ("values", "open_webui_admin_name contains a line break, which would break the environment file: "
               "use e.g. 'AdminENABLE_SIGNUP=True'"),
    ("values", "vllm_environment.HTTP_PROXY contains a double quote, which would break the systemd unit"),
    ("values", "open_webui_port {port} is in use on the host by "),
    ("values", "(pid {pid}, user "),
    ("values", "open_webui_database_url has the scheme mysql://, which Open WebUI cannot use here: use a "
               "postgresql:// or postgres:// or postgresql+psycopg:// URL, e.g. "
               "postgresql://open_webui:<password>@127.0.0.1:5432/open_webui"),
    ("values", "open_webui_redis_url has the scheme http://, which Open WebUI cannot use here: use a redis:// or "
               "rediss:// URL, e.g. redis://open-webui:<password>@127.0.0.1:6379/0"),
    ("values", "postgresql_allow_from has '10.0.0.1/24', which is not an IP address or network"),
    ("values", "monitoring_alert_for names 'LlmEngineDwn', which is no alert of the bundle's rules"),
    ("values", "monitoring_alert_for.LlmHttp5xx is '5 minutes', not a Prometheus duration: use e.g. 30s"),
    ("tls", "nginx_tls_certificate_key_src '{other_key}' is not the key of nginx_tls_certificate_src '{cert}'"),
    ("tls", "base_extra_ca_certificates[1] '{ca_der}' is not a PEM certificate"),
    ("tls_name", "nginx_tls_certificate_src '{wrong_name_cert}' does not name the server llm.example.com"),
])
def test_bad_value_file_or_port_stops_site_in_preflight(preflight_run, run, needle):
    rc, out, files = preflight_run(run)
    assert rc != 0, out
    assert "PLAY [Preflight - check every role's variables]" in out, out
    assert needle.format(**files) in out, out
    assert "PLAY [Deploy the LLM stack]" not in out, out
    # The run's secrets are named, never printed.
    assert "sk-short" not in out.split("PLAY [Preflight")[1] and "aaaaaaaaaaaa" not in out, out
    assert "Db5ecret" not in out, out


def _offline_model(tmp_path):
    """A model source preflight can size without the Hub (model_store sizes the download in preflight)."""
    src = tmp_path / "model"
    src.mkdir()
    (src / "LICENSE").write_text("Apache-2.0\n")
    (src / "SHA256SUMS").write_text("0" * 64 + "  LICENSE\n")
    return "model_store_source=controller model_store_controller_src=%s model_store_root=%s" % (
        src, tmp_path / "models")


def test_site_reaches_the_deploy_play_with_valid_variables(tmp_path):
    # The same run without a bad variable gets past preflight (guards against a test that
    # passes because site.yml is broken for every input).
    # Only the always-tagged stages run; the deploy play starts but its tasks are skipped.
    rc, out = _site(tmp_path, _offline_model(tmp_path), tags="preflight")
    assert rc == 0, out
    assert "PLAY [Preflight - check every role's variables]" in out, out
    assert "PLAY [Deploy the LLM stack]" in out, out
    # A clean inventory gets no warning of a variable no role declares (the next test's typo does).
    assert "WARNING:" not in out.replace("[WARNING]", ""), out


def test_misspelled_bundle_variable_is_named_with_the_closest_one(tmp_path):
    # A typo in a bundle-prefixed variable would be ignored silently: preflight names it and the likely intent.
    model = _offline_model(tmp_path)
    rc, out = _site(tmp_path, "llamacpp_prot=8082", model, tags="preflight")
    assert rc == 0, out
    assert "WARNING: llamacpp_prot is set but no role of this bundle declares it" in out, out
    assert "did you mean llamacpp_port?" in out, out


def test_site_accepts_good_operator_values_files_and_ports(tmp_path):
    # The checks above refuse only what is wrong: real certificates, CA, secrets and URLs pass.
    files = tls_files.tls_set(tmp_path / "tls")
    rc, out = _site(tmp_path, _offline_model(tmp_path), "llm_server_name=llm.example.com",
                    "nginx_tls_certificate_src=%s nginx_tls_certificate_key_src=%s" % (files["cert"], files["key"]),
                    json.dumps({"base_extra_ca_certificates": [files["ca"]],
                                "open_webui_admin_password": "Correct-Horse-42",
                                "llm_api_key": "0123456789abcdef" * 4,
                                "open_webui_admin_email": "ops+llm@llm.example.com",
                                "python_runtime_index_url": "https://pypi.org/simple",
                                "vllm_environment": {"HTTP_PROXY": "http://proxy.example.com:3128"},
                                "open_webui_database_url": "postgresql://open_webui:Db5ecretDb5ecret@10.0.0.5/open_webui",
                                "open_webui_redis_url": "redis://open-webui:R3disR3disR3dis@10.0.0.5:6379/0",
                                "postgresql_allow_from": ["10.0.0.0/24", "10.0.1.7"],
                                "monitoring_alert_for": {"LlmEngineDown": "5m", "LlmHttp5xx": "1h30m"}}),
                    tags="preflight")
    assert rc == 0, out
    assert "TASK [Check ranges, formats, secrets, certificate files and ports]" in out, out
    assert "PLAY [Deploy the LLM stack]" in out, out


ROCKY_9 = {"distribution": "Rocky", "distribution_version": "9.4", "distribution_major_version": "9",
           "os_family": "RedHat"}


def test_unsupported_os_stops_site_in_preflight(tmp_path):
    # The bundle is apt-only: a RHEL-family host is refused before the deploy play, naming what works.
    rc, out = _site(tmp_path, tags="preflight", facts=ROCKY_9)
    assert rc != 0, out
    assert ("Rocky 9.4 (RedHat family) is not supported: the bundle installs with apt and supports "
            "Debian 12/13 and Ubuntu 22.04/24.04 only.") in out, out
    assert "PLAY [Deploy the LLM stack]" not in out, out


def test_supported_os_from_the_cache_passes_preflight(tmp_path):
    # The same cached-facts path with Debian 12 facts gets through (the refusal above is the OS, not the cache).
    rc, out = _site(tmp_path, _offline_model(tmp_path), tags="preflight", facts=dict(ROCKY_9, distribution="Debian", os_family="Debian",
                                                           distribution_version="12.8",
                                                           distribution_major_version="12"))
    assert rc == 0, out
    assert "PLAY [Deploy the LLM stack]" in out, out


@pytest.mark.parametrize("groups, extra, needle", [
    (("llm_fronts",), (), "group llm_fronts is set but llm_engines is empty"),
    (("llm_engines", "llm_fronts"), ('{"llm_rollout_serial": [2, "50%"]}',),
     "In a fleet the first batch of the rollout must be one host"),
    (("llm_engines", "llm_fronts"), ("llm_gateway_weight=0",),
     "llm_gateway_weight is 0; set a whole number from 1 to 100"),
])
def test_an_impossible_fleet_stops_before_any_change(tmp_path, groups, extra, needle):
    rc, out = _site(tmp_path, _offline_model(tmp_path), *extra, groups=groups)
    assert rc != 0, out
    assert needle in out, out
    assert "PLAY [Deploy the LLM stack]" not in out and "PLAY [Datastore" not in out, out


def test_a_one_host_fleet_passes_preflight(tmp_path):
    rc, out = _site(tmp_path, _offline_model(tmp_path), groups=("llm_engines", "llm_fronts"), tags="preflight")
    assert rc == 0, out
    # The layout was computed (this machine's default-route address), and nothing complained.
    assert "TASK [Give each host its part of the fleet]" in out, out


def _offline_bundle(root, *, debs=(), models=(), llama=True):
    """A bundle folder as playbooks/offline-bundle.yml lays it out, holding only what is given."""
    (root / "debs").mkdir(parents=True)
    (root / "MANIFEST.sha256").write_text("")
    (root / "debs" / "Packages").write_text("".join("Package: %s\nVersion: 1\n\n" % d for d in debs))
    for folder in models:
        (root / "models" / folder).mkdir(parents=True)
        (root / "models" / folder / "SHA256SUMS").write_text("0" * 64 + "  LICENSE\n")
    if llama:
        (root / "llama-server" / "debian12-cpu").mkdir(parents=True)
        (root / "llama-server" / "debian12-cpu" / "llm-llama-server_0.3.36-2+debian12.cpu_amd64.deb").write_text("")
    (root / "wheels").mkdir()
    return root


def test_offline_mode_lists_everything_the_bundle_lacks_before_any_change(tmp_path):
    bundle = _offline_bundle(tmp_path / "bundle", debs=["curl", "nginx"], llama=False)
    rc, out = _site(tmp_path, "llm_offline=true", "llm_offline_bundle_dir=%s" % bundle, "llm_engine=llamacpp",
                    tags="preflight")
    assert rc != 0, out
    assert "llm_offline is true but the offline bundle %s lacks what testhost needs" % bundle in out, out
    flat = " ".join(out.split())
    assert "Debian packages: acl, ca-certificates, gnupg, iproute2, mtail, nftables," in flat, out  # sorted; curl and nginx are there
    assert "model folder models/Qwen2.5-7B-Instruct-GGUF (with its SHA256SUMS)" in flat, out  # the plan's GGUF pin
    assert "model folder models/embeddings/Qwen3-Embedding-0.6B (with its SHA256SUMS)" in flat, out
    assert "the llama-server package of variant debian12-cpu (under llama-server/)" in flat, out
    assert "PLAY [Deploy the LLM stack]" not in out, out


def test_offline_mode_names_the_wheels_a_venv_lock_lacks(tmp_path):
    defaults = (REPO / "roles/base/defaults/main.yml").read_text()
    base = defaults.split("base_packages: [", 1)[1].split("]", 1)[0].split(", ")
    bundle = _offline_bundle(tmp_path / "bundle", debs=llm_offline_debs(base),
                             models=["Qwen2.5-7B-Instruct-GGUF", "embeddings/Qwen3-Embedding-0.6B"])
    rc, out = _site(tmp_path, "llm_offline=true", "llm_offline_bundle_dir=%s" % bundle, "llm_engine=llamacpp",
                    tags="preflight")
    assert rc != 0, out
    assert "lacks what testhost needs" not in out, out  # packages, models and llama-server: all there
    flat = " ".join(out.split())
    assert "has no wheel for uv==0.13.9 of uv's lock" in flat, out
    (bundle / "wheels" / "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl").write_text("")
    rc, out = _site(tmp_path, "llm_offline=true", "llm_offline_bundle_dir=%s" % bundle, "llm_engine=llamacpp",
                    tags="preflight")
    flat = " ".join(out.split())
    assert rc != 0 and "has no wheel for uv" not in flat, out
    # Next: the Open WebUI venv's lock, every pin without a wheel named.
    assert "pin(s) of the open-webui venv's lock" in flat and "open-webui==0.12.4" in flat, out
