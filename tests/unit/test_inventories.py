"""The shipped inventories name only variables that exist.

Every variable set in inventories/example and inventories/demo (group_vars, host_vars, hosts.yml)
or shown in their comments as `name: value` must be an option of some role's argument spec
(roles/llm_bundle holds the bundle-wide llm_* ones), an llm_* variable the bundle reads, an Ansible
connection variable (ansible_*), or a helper the inventory itself uses in its own templates.
"""

import re
from pathlib import Path

import bundle_vars
import pytest
import yaml

INVENTORIES = [bundle_vars.REPO / "inventories" / n for n in ("example", "demo")]
#: `# name: value` or `"name": value` in a comment; names with an underscore (not prose like `Rollout:`).
COMMENT_NAME = re.compile(r"[\s{\"']([a-z][a-z0-9]*_[a-z0-9_]*)[\"']?:\s")


def _host_tree_vars(group):
    names = set((group or {}).get("vars") or {})
    for host_vars in ((group or {}).get("hosts") or {}).values():
        names |= set(host_vars or {})
    for child in ((group or {}).get("children") or {}).values():
        names |= _host_tree_vars(child)
    return names


def inventory_names(inv: Path):
    """(names set in YAML, names mentioned in comments, every value text) of one inventory."""
    set_names, commented, values = set(), set(), []
    for f in sorted(inv.rglob("*.yml")):
        text = f.read_text()
        data = yaml.safe_load(text) or {}
        if f.parent.name in ("group_vars", "host_vars"):
            set_names |= set(data)
            values += [v for _, v in bundle_vars._strings(data)]
        else:
            for group in data.values():
                set_names |= _host_tree_vars(group)
        for line in text.splitlines():
            if "#" in line:
                commented |= set(COMMENT_NAME.findall(" " + line.split("#", 1)[1]))
    return set_names, commented, values


@pytest.mark.parametrize("inv", INVENTORIES, ids=lambda p: p.name)
def test_inventory_names_only_existing_variables(inv):
    set_names, commented, values = inventory_names(inv)
    known = bundle_vars.role_options() | bundle_vars.reads()
    # Helpers: set here and used by this inventory's own templates (demo's demo_assets_dir).
    used_here = set()
    for v in values:
        used_here |= bundle_vars._jinja_idents(None, v)
    unknown = {n for n in set_names | commented
               if n not in known and not n.startswith("ansible_")
               and not (n in set_names and n in used_here)}
    assert unknown == set(), "%s names variables nothing reads" % inv.relative_to(bundle_vars.REPO)


def test_the_check_catches_an_unknown_name():
    known = bundle_vars.role_options() | bundle_vars.reads()
    assert "llm_public_hostname" not in known and "llm_rollout_batch" not in known
    assert {"llm_server_name", "llm_rollout_serial", "nvidia_driver_branch"} <= known
