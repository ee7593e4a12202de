"""The engine units give CUDA every NVIDIA device under both driver namings, and stop start loops.

Both units take their sandbox block from roles/engine_service/templates/sandbox.j2 (through the
template lookup, as Ansible renders them), and both roles load nvidia-uvm, gate on readiness and
register their backend through roles/engine_service's entry points.

systemd resolves `DeviceAllow=char-<glob>` by matching the glob with fnmatch(3) against the names
in /proc/devices (src/core/bpf-devices.c, bpf_devices_allow_list_major). The tests replay that
against two records: the H200 with driver 580 open modules (`nvidia`, `nvidiactl`, ...) and the
naming of drivers before 545 (`nvidia-frontend`, ...). See tests/unit/fixtures/README.md.
"""

import re
import shutil
import subprocess
from fnmatch import fnmatchcase
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.module_utils.parsing.convert_bool import boolean

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PROC_DEVICES = {
    "h200-open-580": FIXTURES / "h200" / "proc-devices.txt",
    "proprietary-pre-545": FIXTURES / "proc-devices-proprietary.txt",
}

# What the templates read, besides the role defaults that the test supplies here.
COMMON = {"ansible_managed": "Ansible managed"}
VLLM_VARS = {
    "vllm_served_model_name": "Qwen2.5-7B-Instruct",
    "vllm_user": "vllm",
    "vllm_group": "llm",
    "vllm_state_dir": "/var/lib/llm/vllm",
    "vllm_env_file": "/etc/llm/vllm.env",
    "_vllm_environment": {"HOME": "/var/lib/llm/vllm"},
    "vllm_venv_dir": "/opt/llm/vllm",
    "vllm_config_file": "/etc/llm/vllm.yaml",
    "vllm_timeout_start_sec": 1800,
    "vllm_limit_nofile": 65536,
    "vllm_system_call_filter": ["@system-service"],
    "vllm_ip_address_allow": ["localhost"],
    "vllm_start_limit_burst": 5,
    "vllm_start_limit_interval_sec": 1800,
}
LLAMACPP_VARS = {
    "llamacpp_served_model_name": "Qwen2.5-7B-Instruct",
    "llamacpp_build_flavor": "cuda",
    "llamacpp_user": "llamacpp",
    "llamacpp_group": "llm",
    "llamacpp_state_dir": "/var/lib/llm/llamacpp",
    "llamacpp_api_key_file": "/etc/llm/llamacpp.key",
    "_llamacpp_environment": {"HOME": "/var/lib/llm/llamacpp"},
    "llamacpp_prefix": "/opt/llm/llama.cpp",
    "_llamacpp_args": {"model": "/srv/llm/model.gguf", "port": 8081, "jinja": True,
                       "kv-unified": True, "alias": "Qwen2.5 7B"},
    "llamacpp_timeout_start_sec": 900,
    "llamacpp_ip_address_allow": ["localhost"],
    "llamacpp_start_limit_burst": 5,
    "llamacpp_start_limit_interval_sec": 600,
}
ENGINES = {
    "vllm": ("roles/vllm/templates/vllm.service.j2", VLLM_VARS, "_vllm_gpu"),
    "llamacpp": ("roles/llamacpp/templates/llamacpp.service.j2", LLAMACPP_VARS, "_llamacpp_gpu"),
}


SANDBOX = REPO / "roles" / "engine_service" / "templates" / "sandbox.j2"


def render(template_text: str, variables: dict) -> str:
    """Render like the template module: trim_blocks, ansible's `bool`, undefined names fail, and
    `lookup('ansible.builtin.template', path, template_vars=...)` renders that file the same way."""
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters["bool"] = lambda v: boolean(v, strict=False)

    def lookup(plugin, path, template_vars=None):
        assert plugin == "ansible.builtin.template", plugin
        return render(Path(path).read_text(), {**variables, **(template_vars or {})})

    return env.from_string(template_text).render(**{"lookup": lookup, **variables})


def render_engine(engine: str, gpu: bool, template_text: str | None = None) -> str:
    path, variables, gpu_var = ENGINES[engine]
    text = template_text if template_text is not None else (REPO / path).read_text()
    role_path = str(REPO / "roles" / engine)
    return render(text, {**COMMON, **variables, gpu_var: gpu, "role_path": role_path})


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file -> [(key, value)] in order (repeated keys kept, comments dropped)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1], [])
            continue
        key, sep, value = stripped.partition("=")
        assert sep and current is not None, f"not a unit line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def nvidia_names(record: Path) -> list[str]:
    """NVIDIA character device names of a /proc/devices record.

    A record is either the file itself ("Character devices:" ... "Block devices:") or a shared
    recording with `== <command>` headers, where only the `== /proc/devices` part counts.
    """
    text = record.read_text()
    has_headers = any(line.startswith("== ") for line in text.splitlines())
    in_proc_devices = not has_headers
    in_block = False
    names = []
    for line in text.splitlines():
        if line.startswith("== "):
            in_proc_devices = line.strip() == "== /proc/devices"
            continue
        if line.strip() == "Block devices:":
            in_block = True
        match = re.fullmatch(r"\s*(\d+)\s+(\S+)\s*", line)
        if in_proc_devices and not in_block and match and "nvidia" in match.group(2):
            names.append(match.group(2))
    return names


def char_globs_rw(service: list[tuple[str, str]]) -> list[str]:
    """The `char-<glob>` patterns of DeviceAllow= that grant read and write."""
    globs = []
    for value in values(service, "DeviceAllow"):
        spec, _, access = value.partition(" ")
        if spec.startswith("char-") and {"r", "w"} <= set(access or "rwm"):
            globs.append(spec[len("char-"):])
    return globs


def uncovered_nvidia_devices(unit_text: str, record: Path) -> list[str]:
    globs = char_globs_rw(parse_unit(unit_text)["Service"])
    return [n for n in nvidia_names(record) if not any(fnmatchcase(n, g) for g in globs)]


@pytest.mark.parametrize("record", PROC_DEVICES, ids=str)
def test_records_list_the_nvidia_devices_cuda_opens(record):
    names = nvidia_names(PROC_DEVICES[record])
    assert "nvidia-uvm" in names and "nvidia-caps" in names
    assert {"nvidia", "nvidiactl"} <= set(names) or "nvidia-frontend" in names
    assert all("nvidia" in n for n in names)


def test_h200_record_is_the_open_module_naming():
    assert nvidia_names(PROC_DEVICES["h200-open-580"]) == [
        "nvidia", "nvidiactl", "nvidia-uvm", "nvidia-nvswitch", "nvidia-nvlink", "nvidia-caps",
        "nvidia-caps-imex-channels"]


@pytest.mark.parametrize("record", PROC_DEVICES, ids=str)
@pytest.mark.parametrize("engine", ENGINES)
def test_gpu_unit_allows_every_nvidia_device_of_both_driver_namings(engine, record):
    unit = render_engine(engine, gpu=True)
    service = parse_unit(unit)["Service"]
    assert values(service, "DevicePolicy") == ["closed"]
    assert values(service, "PrivateDevices") == []
    assert uncovered_nvidia_devices(unit, PROC_DEVICES[record]) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_gpu_unit_allows_no_device_outside_nvidia(engine):
    service = parse_unit(render_engine(engine, gpu=True))["Service"]
    for value in values(service, "DeviceAllow"):
        spec = value.split()[0]
        assert spec.startswith(("char-nvidia", "/dev/nvidia")), value
        assert "m" not in value.split()[1], "the engine never creates device nodes"


@pytest.mark.parametrize("engine", ENGINES)
def test_cpu_unit_keeps_private_devices_and_allows_none(engine):
    service = parse_unit(render_engine(engine, gpu=False))["Service"]
    assert values(service, "PrivateDevices") == ["yes"]
    assert values(service, "DeviceAllow") == []
    assert values(service, "DevicePolicy") == []


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "cpu"])
@pytest.mark.parametrize("engine", ENGINES)
def test_start_limits_sit_in_unit_section_and_stop_a_start_loop(engine, gpu):
    sections = parse_unit(render_engine(engine, gpu=gpu))
    unit, service = sections["Unit"], sections["Service"]
    prefix = engine + "_start_limit_"
    assert values(unit, "StartLimitBurst") and values(unit, "StartLimitIntervalSec"), \
        "StartLimitBurst and StartLimitIntervalSec missing from [Unit]"
    burst = int(values(unit, "StartLimitBurst")[0])
    interval = int(values(unit, "StartLimitIntervalSec")[0])
    assert burst == ENGINES[engine][1][prefix + "burst"]
    assert interval == ENGINES[engine][1][prefix + "interval_sec"]
    for key in ("StartLimitBurst", "StartLimitIntervalSec", "StartLimitInterval"):
        assert values(service, key) == [], f"{key} belongs in [Unit]"
    assert values(service, "Restart") == ["on-failure"]
    restart_sec = int(values(service, "RestartSec")[0])
    # A loop of starts that fail after a minute must hit the limit inside the window.
    assert burst * (restart_sec + 60) < interval


def test_role_defaults_carry_the_start_limits_the_test_renders():
    for engine, (_, variables, _) in ENGINES.items():
        defaults = yaml.safe_load((REPO / "roles" / engine / "defaults" / "main.yml").read_text())
        for key in (engine + "_start_limit_burst", engine + "_start_limit_interval_sec"):
            assert defaults[key] == variables[key]


def _tasks(*parts: str) -> list:
    return yaml.safe_load((REPO.joinpath("roles", *parts)).read_text())


def _includes(tasks: list, entry_point: str) -> list:
    return [t for t in tasks if t.get("ansible.builtin.include_role", {}).get("name") == "engine_service"
            and t["ansible.builtin.include_role"].get("tasks_from") == entry_point]


@pytest.mark.parametrize("engine", ENGINES)
def test_gpu_mode_loads_nvidia_uvm_before_the_unit_starts(engine):
    """The module must be loaded by root before the start (the unit cannot, and systemd resolves
    char-nvidia* only at start): the role includes engine_service's gpu_devices in GPU mode only,
    ahead of the unit template task."""
    tasks = _tasks(engine, "tasks", "configure.yml")
    (uvm,) = _includes(tasks, "gpu_devices")
    assert uvm["when"].startswith(f"_{engine}_gpu | bool")  # vllm: "and vllm_nvidia_uvm_load"
    unit_task = next(i for i, t in enumerate(tasks) if "ansible.builtin.template" in t
                     and t["ansible.builtin.template"]["dest"].endswith(".service"))
    assert tasks.index(uvm) < unit_task


def test_shared_gpu_devices_writes_modules_load_and_modprobes():
    tasks = _tasks("engine_service", "tasks", "gpu_devices.yml")
    copy = next(t["ansible.builtin.copy"] for t in tasks if "ansible.builtin.copy" in t)
    assert copy["dest"] == "/etc/modules-load.d/nvidia-uvm.conf"
    active = [ln.strip() for ln in copy["content"].splitlines() if not ln.startswith("#")]
    assert active == ["nvidia-uvm"]
    modprobe = next(t["community.general.modprobe"] for t in tasks if "community.general.modprobe" in t)
    assert modprobe == {"name": "nvidia-uvm", "state": "present"}
    names = [t["name"] for t in tasks]
    assert names.index("Load nvidia-uvm now") < names.index("Check /dev/nvidia-uvm exists")


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_roles_keep_no_copy_of_the_shared_blocks(engine):
    """One implementation: no engine role writes the modules-load file, polls /health, reads the
    journal, sets llm_backends or spells out the sandbox itself."""
    role = REPO / "roles" / engine
    tasks_text = "".join(p.read_text() for p in sorted((role / "tasks").glob("*.yml")))
    for needle in ("modules-load.d", "community.general.modprobe", "/health", "journalctl", "llm_backends:"):
        assert needle not in tasks_text, needle
    unit_text = (REPO / ENGINES[engine][0]).read_text()
    assert "role_path ~ '/../engine_service/templates/sandbox.j2'" in unit_text
    for directive in ("NoNewPrivileges", "ProtectSystem", "DevicePolicy", "PrivateDevices", "UMask"):
        assert directive not in unit_text, directive


@pytest.mark.parametrize("engine", ENGINES)
def test_service_gates_then_registers_through_engine_service(engine):
    # the gate may sit in a block (vLLM's: its rescue rolls a failed package change back)
    tasks = [t for top in _tasks(engine, "tasks", "service.yml") for t in (top.get("block") or [top])]
    (ready,) = _includes(tasks, "ready")
    (register,) = _includes(tasks, "register")
    assert tasks.index(ready) < tasks.index(register)
    assert ready["vars"]["engine_service_unit"] == engine
    assert ready["vars"]["engine_service_base_url"] == register["vars"]["engine_service_base_url"]
    assert ready["vars"]["engine_service_model"] == register["vars"]["engine_service_model"]


#: The sandbox lines (comments dropped) of each unit. Issue 15 added PrivateMounts, ProtectProc,
#: ProcSubset, RemoveIPC, the IP allow list, UMask=0077 and vLLM's system call filter.
SANDBOX_COMMON = [
    ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""), ("ProtectSystem", "strict"),
    ("ReadWritePaths", "{state}"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
    ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"), ("ProtectClock", "yes"), ("ProtectHostname", "yes"),
    ("RestrictSUIDSGID", "yes"), ("RestrictRealtime", "yes"), ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"), ("PrivateMounts", "yes"), ("ProtectProc", "invisible"),
]
GPU_DEVICES = [("DevicePolicy", "closed"), ("DeviceAllow", "char-nvidia* rw")]
CPU_DEVICES = [("PrivateDevices", "yes")]
ARCH = [("SystemCallArchitectures", "native")]
LLAMACPP_SYSCALLS = ARCH + [("SystemCallFilter", "@system-service"), ("SystemCallFilter", "~@privileged"),
                            ("SystemCallErrorNumber", "EPERM")]
VLLM_SYSCALLS = ARCH + [("SystemCallFilter", "@system-service"), ("SystemCallErrorNumber", "EPERM")]
LOOPBACK_ONLY = [("IPAddressDeny", "any"), ("IPAddressAllow", "localhost"), ("UMask", "0077")]
VLLM_FAMILIES = [("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK")]
EXPECTED_SANDBOX = {
    ("vllm", True): SANDBOX_COMMON + [("ProcSubset", "all"), ("RemoveIPC", "yes")] + VLLM_SYSCALLS
    + VLLM_FAMILIES + LOOPBACK_ONLY + GPU_DEVICES,
    ("vllm", False): SANDBOX_COMMON + [("ProcSubset", "all"), ("RemoveIPC", "yes")] + VLLM_SYSCALLS
    + VLLM_FAMILIES + LOOPBACK_ONLY + CPU_DEVICES,
    ("llamacpp", True): SANDBOX_COMMON + [("ProcSubset", "pid"), ("RemoveIPC", "yes"),
                                          ("MemoryDenyWriteExecute", "no")] + LLAMACPP_SYSCALLS + [
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK")] + LOOPBACK_ONLY + GPU_DEVICES,
    ("llamacpp", False): SANDBOX_COMMON + [("ProcSubset", "pid"), ("RemoveIPC", "yes"),
                                           ("MemoryDenyWriteExecute", "yes")] + LLAMACPP_SYSCALLS + [
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6")] + LOOPBACK_ONLY + CPU_DEVICES,
}


@pytest.mark.parametrize("engine", ENGINES)
def test_switches_drop_the_syscall_filter_and_ip_limit(engine):
    """An empty filter list or allow list leaves no SystemCallFilter=/IPAddress*= line (vLLM on a
    CUDA/NCCL that needs more calls; an engine listening beyond loopback)."""
    overrides = {engine + "_ip_address_allow": []}
    if engine == "vllm":
        overrides["vllm_system_call_filter"] = []
    variables = {**COMMON, **ENGINES[engine][1], **overrides, ENGINES[engine][2]: False,
                 "role_path": str(REPO / "roles" / engine)}
    service = dict(parse_unit(render((REPO / ENGINES[engine][0]).read_text(), variables))["Service"])
    assert "IPAddressDeny" not in service and "IPAddressAllow" not in service
    if engine == "vllm":
        assert "SystemCallFilter" not in service and "SystemCallErrorNumber" not in service
    assert service["SystemCallArchitectures"] == "native"


def test_engine_ip_allow_defaults_follow_the_listen_address():
    for engine in ENGINES:
        defaults = (REPO / "roles" / engine / "defaults" / "main.yml").read_text()
        line = next(ln for ln in defaults.splitlines() if ln.startswith(engine + "_ip_address_allow:"))
        expr = yaml.safe_load(line)[engine + "_ip_address_allow"].strip("{} ")
        env = jinja2.Environment()
        env.tests["match"] = lambda value, pattern: re.match(pattern, value) is not None
        for host, expected in (("127.0.0.1", ["localhost"]), ("::1", ["localhost"]), ("localhost", ["localhost"]),
                               ("0.0.0.0", []), ("10.0.0.5", [])):
            assert env.compile_expression(expr)(**{engine + "_host": host}) == expected, (engine, host)


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "cpu"])
@pytest.mark.parametrize("engine", ENGINES)
def test_units_keep_their_sandbox_lines(engine, gpu):
    service = parse_unit(render_engine(engine, gpu=gpu))["Service"]
    start = [k for k, _ in service].index("NoNewPrivileges")
    end = [k for k, _ in service].index("PrivateDevices" if not gpu else "DeviceAllow") + 1
    state = ENGINES[engine][1][engine + "_state_dir"]
    assert service[start:end] == [(k, v.format(state=state)) for k, v in EXPECTED_SANDBOX[engine, gpu]]


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "cpu"])
@pytest.mark.parametrize("engine", ENGINES)
def test_sandbox_block_sits_before_install_and_after_the_service_lines(engine, gpu):
    lines = render_engine(engine, gpu=gpu).splitlines()
    sandbox = lines.index(next(ln for ln in lines if ln.startswith("# Sandboxing.")))
    assert lines[sandbox - 1] == ""  # a blank line after the service's own lines
    assert lines[lines.index("[Install]") - 1] == ""
    assert lines[lines.index("[Install]") - 2] in ("PrivateDevices=yes", "DeviceAllow=char-nvidia* rw")


def test_old_frontend_only_allow_list_misses_the_h200_devices():
    """The bug this file pins: char-nvidia-frontend matches nothing on driver 545+."""
    old = ("[Unit]\nDescription=x\n[Service]\nDevicePolicy=closed\n"
           "DeviceAllow=char-nvidia-frontend rw\nDeviceAllow=char-nvidia-uvm rw\n"
           "DeviceAllow=char-nvidia-caps rw\nDeviceAllow=char-nvidia-nvswitch rw\n")
    missing = uncovered_nvidia_devices(old, PROC_DEVICES["h200-open-580"])
    assert {"nvidia", "nvidiactl"} <= set(missing)


def test_llamacpp_exec_start_renders_flags_and_reads_the_key_as_a_credential():
    unit = render_engine("llamacpp", gpu=False)
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert exec_start == ('ExecStart=/opt/llm/llama.cpp/bin/llama-server --api-key-file %d/api-key'
                          ' --alias "Qwen2.5 7B" --jinja --kv-unified --model /srv/llm/model.gguf'
                          ' --port 8081')
    assert "LoadCredential=api-key:/etc/llm/llamacpp.key" in unit.splitlines()
    assert "EnvironmentFile" not in unit


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
EXPOSURE_TARGET = 2.5


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_rendered_engine_unit_exposure_is_at_most_the_target(tmp_path, engine, gpu):
    # systemd's own score of the unit file as the role renders it (offline: no running systemd needed);
    # the molecule default scenario measures llama-server's on a host, vLLM's GPU unit runs nowhere in CI.
    unit = tmp_path / f"{engine}.service"
    unit.write_text(render_engine(engine, gpu))
    proc = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= EXPOSURE_TARGET, proc.stdout
