"""Test releases that die at start: the wheels the lifecycle tests install to see a failed upgrade rolled back
(Open WebUI in molecule/default and molecule/fleet, vLLM in molecule/vllm, Chroma in molecule/fleet).

A wheel is built here, in the test, from a few files (no build tool, no index): METADATA, WHEEL, RECORD with the
files' hashes, and optionally console scripts. `hash_lock` writes the one-line hash-pinned lock python_runtime
installs it with (--require-hashes)."""

import base64
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Dict


def dies_at_start(project: str, version: str, function: str = "main") -> str:
    """Python source whose `function` (or, with function "", its import) writes a line and exits with 3."""
    body = f"sys.stderr.write('test release {project} {version}: dies at start\\n')\nsys.exit(3)\n"
    if not function:
        return "import sys\n" + body
    return f"import sys\n\n\ndef {function}():\n" + "".join("    " + line + "\n" for line in body.splitlines())


def wheel(folder: Path, project: str, version: str, files: Dict[str, str], scripts: Dict[str, str] = None) -> Path:
    """A py3-none-any wheel of project==version holding `files` (path: text) and console `scripts` (name: target)."""
    dist = f"{project.replace('-', '_')}-{version}.dist-info"
    files = dict(files)
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
    files[f"{dist}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if scripts:
        files[f"{dist}/entry_points.txt"] = "[console_scripts]\n" + "".join(
            f"{name} = {target}\n" for name, target in scripts.items())
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(body.encode())}\n" for name, body in files.items())
    files[f"{dist}/RECORD"] = record + f"{dist}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as whl:
        for name, body in files.items():
            whl.writestr(name, body)
    path = Path(folder) / f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
    path.write_bytes(buf.getvalue())
    return path


def hash_lock(folder: Path, project: str, version: str, wheel_path: Path) -> Path:
    """The hash-pinned lock of that one wheel (uv pip compile --generate-hashes' format)."""
    digest = hashlib.sha256(Path(wheel_path).read_bytes()).hexdigest()
    path = Path(folder) / f"{project}-{version}.txt"
    path.write_text(f"{project}=={version} \\\n    --hash=sha256:{digest}\n")
    return path


def console_release(folder: Path, project: str, module: str, script: str, version: str):
    """(wheel, lock) of `project` whose console script `script` (module:main) dies at start."""
    path = wheel(folder, project, version, {f"{module}/__init__.py": dies_at_start(project, version)},
                 {script: f"{module}:main"})
    return path, hash_lock(folder, project, version, path)
