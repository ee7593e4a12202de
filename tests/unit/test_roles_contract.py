"""Every role keeps its contract: an argument spec, defaults that match it, a README naming it.

Bad variables must fail before any change (playbooks/preflight.yml validates every role's
`main` spec), which only works when each variable a role reads from defaults is in its spec.
"""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())


def _spec(role: Path) -> dict:
    return yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_a_main_argument_spec(role):
    assert (role / "meta" / "argument_specs.yml").is_file()
    assert "options" in _spec(role)["main"]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_defaults_match_its_argument_spec(role):
    defaults_file = role / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.exists() else {}
    options = set(_spec(role)["main"]["options"])
    public = {k for k in defaults if not k.startswith("_")}
    assert public - options == set(), "defaults missing from the argument spec"
    undocumented_defaults = {o for o in options if o.startswith(role.name + "_")} - public
    # Options of the role's own prefix that have no default must be required in the spec.
    spec = _spec(role)["main"]["options"]
    assert {o for o in undocumented_defaults if not spec[o].get("required")} == set(), \
        "options without a default in defaults/main.yml must be required"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_readme_names_every_option(role):
    readme = (role / "README.md").read_text()
    missing = [o for o in _spec(role)["main"]["options"] if o not in readme]
    assert missing == [], "README does not mention these options"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_variables_carry_the_role_prefix(role):
    defaults_file = role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {}
    assert [k for k in defaults if not k.startswith(role.name + "_")] == []


#: The headings every role README has, in this order (more sections may sit between them).
README_SKELETON = ["## What it does", "## Requirements", "## Variables", "## Example",
                   "## Tested in CI vs on paper"]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_readme_follows_the_skeleton(role):
    headings, in_code = [], False
    for line in (role / "README.md").read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("## "):
            headings.append(line)
    assert [h for h in headings if h in README_SKELETON] == README_SKELETON, headings
