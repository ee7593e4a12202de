"""HTTP requests made inside a test host: the one HTTP helper of the molecule verifiers.

Every request runs curl inside the container (`podman exec -i <host> curl --config -`) with its whole
configuration on stdin, so keys, passwords and tokens never reach a command line there or here (the
scenarios check /proc/*/cmdline for them). Molecule's testinfra reaches the hosts through podman too
(.config/molecule/config.yml), so the host name is the container's.

Import from a molecule/<scenario>/tests/test_*.py::

    sys.path.insert(0, str(REPO / "tests" / "helpers"))
    from host_http import request, request_json
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def curl_config(url: str, method: Optional[str] = None, headers: Optional[Mapping[str, str]] = None,
                body: Any = None, timeout: int = 120, cacert: Optional[str] = None,
                options: Iterable[str] = ()) -> str:
    """The curl config (one option a line) of a request; a JSON body is sent as application/json and
    makes the default method POST. The status goes last on stdout, the response headers to stderr."""
    cfg = [
        f"url = {_quote(url)}",
        f"request = {_quote(method or ('POST' if body is not None else 'GET'))}",
        "silent",
        "show-error",
        f"max-time = {timeout}",
        'dump-header = "/dev/stderr"',
        'write-out = "\\n%{http_code}"',
    ]
    if cacert:
        cfg.append(f"cacert = {_quote(cacert)}")
    cfg += [f"header = {_quote(f'{k}: {v}')}" for k, v in (headers or {}).items()]
    if body is not None:
        cfg.append('header = "Content-Type: application/json"')
        cfg.append(f"data-binary = {_quote(json.dumps(body))}")
    cfg += list(options)
    return "\n".join(cfg) + "\n"


def request(host: str, url: str, method: Optional[str] = None, headers: Optional[Mapping[str, str]] = None,
            body: Any = None, timeout: int = 120, cacert: Optional[str] = None,
            options: Iterable[str] = ()) -> Tuple[int, str, str]:
    """(status, body text, response headers) of a request made inside container `host`.

    Status 0: no HTTP answer (connection refused, curl's max-time, podman exec timed out); the third
    item then holds curl's error. `options`: extra curl config lines (`insecure`, `http1.1`, ...)."""
    try:
        proc = subprocess.run(
            ["podman", "exec", "-i", host, "curl", "--config", "-"],
            input=curl_config(url, method, headers, body, timeout, cacert, options),
            capture_output=True, text=True, errors="replace", timeout=timeout + 60,
        )
    except subprocess.TimeoutExpired:
        return 0, "", "podman exec timed out"
    text, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), text, proc.stderr


def request_json(*args: Any, **kwargs: Any) -> Tuple[int, Dict[str, Any]]:
    """(status, parsed JSON body); a body that is not JSON comes back as {"_raw": <its first 500 characters>}."""
    status, text, _ = request(*args, **kwargs)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, {"_raw": text[:500]}
