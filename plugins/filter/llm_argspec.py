"""Filters for checking role variables before any host is touched (playbooks/preflight.yml)."""

import difflib
from typing import Any, Dict, Iterable, List


def _strip(options: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for name, spec in (options or {}).items():
        spec = {k: v for k, v in spec.items() if k != "default"}
        if isinstance(spec.get("options"), dict):
            spec["options"] = _strip(spec["options"])
        out[name] = spec
    return out


def llm_argspec_without_defaults(options: Dict[str, Any]) -> Dict[str, Any]:
    """Drop `default` from an argument spec's options (recursively).

    Preflight checks only what the operator set (inventory, group_vars, -e). Role defaults are
    often templates of the plan ("{{ llm_plan.weights_bytes }}") that only the role resolves,
    so they are left to the role's own validation.
    """
    return _strip(options)


def llm_unknown_variables(names: Iterable[str], known: Iterable[str],
                          prefixes: Iterable[str]) -> List[Dict[str, str]]:
    """Variables with a bundle prefix (a role's name + "_", or "llm_") that no spec declares.

    `names`: the host's variable names; `known`: every option of every role's spec (plus names
    the bundle sets itself); `prefixes`: the bundle's prefixes. Returns [{name, closest}] sorted
    by name; closest is the most similar known name ("" when none is close), so a misspelled
    `llamacpp_prot` is reported with `llamacpp_port`.
    """
    known = sorted(set(known))
    prefixes = tuple(prefixes)
    out = []
    for name in sorted(set(names)):
        if name.startswith("_") or not name.startswith(prefixes) or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        out.append({"name": name, "closest": close[0] if close else ""})
    return out


class FilterModule:
    def filters(self):
        return {"llm_argspec_without_defaults": llm_argspec_without_defaults,
                "llm_unknown_variables": llm_unknown_variables}
