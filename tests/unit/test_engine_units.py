"""The engine units give CUDA every NVIDIA device under both driver namings, and stop start loops.

systemd resolves `DeviceAllow=char-<glob>` by matching the glob with fnmatch(3) against the names
in /proc/devices (src/core/bpf-devices.c, bpf_devices_allow_list_major). The tests replay that
against two records: the H200 with driver 580 open modules (`nvidia`, `nvidiactl`, ...) and the
naming of drivers before 545 (`nvidia-frontend`, ...). See tests/unit/fixtures/README.md.
"""

import re
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
    "llamacpp_start_limit_burst": 5,
    "llamacpp_start_limit_interval_sec": 600,
}
ENGINES = {
    "vllm": ("roles/vllm/templates/vllm.service.j2", VLLM_VARS, "_vllm_gpu"),
    "llamacpp": ("roles/llamacpp/templates/llamacpp.service.j2", LLAMACPP_VARS, "_llamacpp_gpu"),
}


def render(template_text: str, variables: dict) -> str:
    """Render like the template module: trim_blocks, ansible's `bool`, undefined names fail."""
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters["bool"] = lambda v: boolean(v, strict=False)
    return env.from_string(template_text).render(**variables)


def render_engine(engine: str, gpu: bool, template_text: str | None = None) -> str:
    path, variables, gpu_var = ENGINES[engine]
    text = template_text if template_text is not None else (REPO / path).read_text()
    return render(text, {**COMMON, **variables, gpu_var: gpu})


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


@pytest.mark.parametrize("engine", ENGINES)
def test_gpu_mode_loads_nvidia_uvm_before_the_unit_starts(engine):
    """The module must be loaded by root before the start (the unit cannot, and systemd resolves
    char-nvidia* only at start): a modules-load.d file plus a modprobe now, both in GPU mode only,
    and ahead of the unit template task."""
    tasks = yaml.safe_load((REPO / "roles" / engine / "tasks" / "configure.yml").read_text())
    names = [t.get("name", "") for t in tasks]
    uvm = next(t for t in tasks if "block" in t and "nvidia-uvm" in t["name"])
    assert uvm["when"].startswith(f"_{engine}_gpu | bool")  # vllm: "and vllm_nvidia_uvm_load"
    unit_task = next(i for i, t in enumerate(tasks) if "ansible.builtin.template" in t
                     and t["ansible.builtin.template"]["dest"].endswith(".service"))
    assert names.index(uvm["name"]) < unit_task
    copy = next(t["ansible.builtin.copy"] for t in uvm["block"] if "ansible.builtin.copy" in t)
    assert copy["dest"] == "/etc/modules-load.d/nvidia-uvm.conf"
    active = [ln.strip() for ln in copy["content"].splitlines() if not ln.startswith("#")]
    assert active == ["nvidia-uvm"]
    modprobe = next(t["community.general.modprobe"] for t in uvm["block"]
                    if "community.general.modprobe" in t)
    assert modprobe == {"name": "nvidia-uvm", "state": "present"}


def test_modules_load_file_is_identical_in_both_engine_roles():
    contents = []
    for engine in ENGINES:
        tasks = yaml.safe_load((REPO / "roles" / engine / "tasks" / "configure.yml").read_text())
        uvm = next(t for t in tasks if "block" in t and "nvidia-uvm" in t["name"])
        contents.append(next(t["ansible.builtin.copy"] for t in uvm["block"]
                             if "ansible.builtin.copy" in t))
    assert contents[0] == contents[1], "both roles write the same file: they must agree"


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
