"""Hardening of a host converged with site.yml (issue 15): unit sandboxes, Open WebUI policies, secrets.

- every unit the bundle installs or sandboxes scores `systemd-analyze security` exposure <= 2.5;
- the sandbox directives are in force (systemctl show), the engines and Open WebUI talk IP to loopback only;
- Open WebUI runs with the role's policies (its own admin config API reports them, sign-in tokens expire as set,
  personal API keys are refused) and its admin password is neither in its environment file nor in the process
  environment once the admin exists;
- proxy settings with credentials are not world-readable; the engine key is quoted the same way in every
  environment file.

LLM_FRONT_HOST names the test host (default llm-default); the helpers come from test_front.py.
"""

import os
import re
import time

import pytest
from test_front import ENV_FILE, REPO, curl_json, env_value
from test_front import signin as _signin_once

from host_http import _quote  # noqa: E402  the same quoting the env files use

HOST = os.environ.get("LLM_FRONT_HOST", "llm-default")
testinfra_hosts = [f"podman://{HOST}"]

MAX_EXPOSURE = 2.5


def signin(admin):
    """Sign in, waiting out nginx's sign-in rate limit (test_front.py's last test exhausts it on purpose)."""
    deadline = time.time() + 150
    while True:
        status, body = _signin_once(admin)
        if status != 429 or time.time() > deadline:
            return status, body
        time.sleep(7)


#: Units the bundle installs (engines, open-webui) or sandboxes with a drop-in (nginx).
UNITS = ("llamacpp.service", "vllm.service", "open-webui.service", "nginx.service")
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) ")


def loaded_units(host):
    units = [u for u in UNITS if host.check_output(f"systemctl show -p LoadState --value {u}") == "loaded"]
    # Not vacuous: one engine, Open WebUI and nginx are always there after site.yml.
    assert "open-webui.service" in units and "nginx.service" in units, units
    assert {"llamacpp.service", "vllm.service"} & set(units), units
    return units


def show(host, unit, prop):
    return host.check_output(f"systemctl show -p {prop} --value {unit}")


def test_every_unit_scores_at_most_the_target_exposure(host):
    scores = {}
    for unit in loaded_units(host):
        out = host.check_output(f"systemd-analyze security --no-pager {unit}")
        match = EXPOSURE.search(out)
        assert match, f"no exposure line for {unit}:\n{out[-500:]}"
        scores[unit] = float(match.group(1))
    assert all(score <= MAX_EXPOSURE for score in scores.values()), scores


@pytest.mark.parametrize("unit", ["engine", "open-webui.service"])
def test_services_see_little_and_talk_ip_to_loopback_only(host, unit):
    if unit == "engine":
        unit = next(u for u in loaded_units(host) if u in ("llamacpp.service", "vllm.service"))
    assert show(host, unit, "ProtectProc") == "invisible"
    assert show(host, unit, "RemoveIPC") == "yes"
    assert show(host, unit, "NoNewPrivileges") == "yes"
    assert show(host, unit, "CapabilityBoundingSet") == ""
    assert show(host, unit, "UMask") == "0077"
    assert show(host, unit, "LockPersonality") == "yes"
    assert show(host, unit, "PrivateDevices") == "yes"  # CPU test host: no GPU
    assert show(host, unit, "SystemCallArchitectures") == "native"
    assert show(host, unit, "SystemCallFilter"), "no system call filter"
    # systemd lists `localhost` as the loopback prefixes.
    # systemd prints IPAddressDeny=any as both "any" addresses, in an order that varies by version.
    assert show(host, unit, "IPAddressDeny") in ("0.0.0.0/0 ::/0", "::/0 0.0.0.0/0", "any")
    allow = show(host, unit, "IPAddressAllow").split()
    assert set(allow) <= {"127.0.0.0/8", "::1/128"} and "127.0.0.0/8" in allow, allow


def test_nginx_runs_sandboxed_with_only_the_capabilities_it_uses(host):
    assert host.file("/etc/systemd/system/nginx.service.d/llm-hardening.conf").exists
    caps = set(show(host, "nginx.service", "CapabilityBoundingSet").split())
    assert caps == {"cap_chown", "cap_dac_override", "cap_kill", "cap_setgid", "cap_setuid", "cap_net_bind_service"}
    assert show(host, "nginx.service", "ProtectSystem") == "strict"
    assert host.service("nginx").is_running


# --- Open WebUI policies ----------------------------------------------------------------------------------

def _admin(host):
    email = env_value(host, "WEBUI_ADMIN_EMAIL")
    return email, (REPO / ".secrets" / HOST / "open-webui-admin").read_text().strip()


def _seconds(duration):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return sum(float(n) * units[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ms|s|m|h|d|w)", duration))


def test_open_webui_applies_the_policies_of_its_environment(host):
    env = {name: env_value(host, name) for name in
           ("JWT_EXPIRES_IN", "DEFAULT_USER_ROLE", "ENABLE_COMMUNITY_SHARING", "ENABLE_API_KEYS")}
    assert env["DEFAULT_USER_ROLE"] == "pending"
    assert env["ENABLE_COMMUNITY_SHARING"] == "False"
    assert env["ENABLE_API_KEYS"] == "False"
    assert _seconds(env["JWT_EXPIRES_IN"]) > 0
    before = time.time()
    status, body = signin(_admin(host))
    assert status == 200, body
    # The token's lifetime is the configured one (not Open WebUI's 4w default).
    assert abs(body["expires_at"] - (before + _seconds(env["JWT_EXPIRES_IN"]))) < 300, body["expires_at"]
    auth = {"Authorization": f"Bearer {body['token']}"}
    status, config = curl_json("/api/v1/auths/admin/config", headers=auth)
    assert status == 200, config
    assert config["DEFAULT_USER_ROLE"] == "pending"
    assert config["ENABLE_COMMUNITY_SHARING"] is False
    assert config["ENABLE_API_KEYS"] is False
    assert config["JWT_EXPIRES_IN"] == env["JWT_EXPIRES_IN"]
    status, _ = curl_json("/api/v1/auths/api_key", "POST", headers=auth)
    assert status == 403, "personal API keys are off, yet the admin could create one"


def test_admin_password_leaves_the_environment_once_the_admin_exists(host):
    email, password = _admin(host)
    status, body = signin((email, password))
    assert status == 200, body  # the admin exists
    env = host.file(ENV_FILE)
    assert not env.contains("^WEBUI_ADMIN_PASSWORD=")
    pid = show(host, "open-webui.service", "MainPID")
    assert pid != "0"
    # Booleans only: a failing assert must not print the password.
    assert password not in env.content_string
    environ = host.run(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    if environ.rc == 0:
        assert "WEBUI_ADMIN_PASSWORD=" not in environ.stdout
        assert password not in environ.stdout
    else:
        # A container without CAP_SYS_PTRACE cannot read another user's environ: then the process must have
        # started after the file was last written (systemd read the file at that start).
        started = host.check_output("date -d \"$(systemctl show -p ExecMainStartTimestamp --value open-webui)\" +%s")
        assert int(started) >= int(host.check_output(f"stat -c %Y {ENV_FILE}")), "started before the password left"


# --- Secrets in files ---------------------------------------------------------------------------------------

def test_proxy_credentials_are_not_world_readable(host):
    """Vacuous where no proxy is set (the demo): then neither file carries credentials."""
    for path in ("/etc/environment", "/etc/apt/apt.conf.d/80llm-proxy"):
        f = host.file(path)
        if f.exists and re.search(r"://[^/@\s\"]+@", f.content_string):
            assert f.mode & 0o007 == 0, f"{path} holds proxy credentials and is {oct(f.mode)}"


def test_engine_key_is_quoted_the_same_way_in_every_environment_file(host):
    key = host.file("/etc/llm/api-key").content_string.strip()
    quoted = _quote(key)
    lines = host.file(ENV_FILE).content_string.splitlines()
    keys_line = next(ln for ln in lines if ln.startswith("OPENAI_API_KEYS="))
    # Booleans only: never print the key.
    assert keys_line.startswith('OPENAI_API_KEYS="'), "OPENAI_API_KEYS is not quoted"
    assert key in env_value(host, "OPENAI_API_KEYS").split(";")
    vllm_env = host.file("/etc/llm/vllm.env")
    if vllm_env.exists:
        assert f"VLLM_API_KEY={quoted}" in vllm_env.content_string.splitlines(), "VLLM_API_KEY quoted otherwise"


@pytest.mark.parametrize(("group", "accepted"), [("X25519", True), ("P-256", True), ("X448", False),
                                                ("P-521", False), ("ffdhe2048", False)])
def test_tls_key_exchange_groups_are_the_configured_ones(host, group, accepted):
    """nginx_tls_curves (X25519, P-256, P-384) hold for every server name, the default server's too."""
    for name in ("localhost", "unknown.invalid"):
        hello = host.run(f"openssl s_client -connect 127.0.0.1:443 -servername {name} -tls1_3 -groups {group} "
                         "</dev/null")
        assert (hello.rc == 0) == accepted, (name, group, hello.stdout[-300:], hello.stderr[-300:])
