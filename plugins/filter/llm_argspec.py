"""Filters for checking role variables before any host is touched (playbooks/preflight.yml)."""

from typing import Any, Dict


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


class FilterModule:
    def filters(self):
        return {"llm_argspec_without_defaults": llm_argspec_without_defaults}
