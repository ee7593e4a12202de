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


# --- roles read only what other roles publish ---------------------------------------------------
#
# A role may read: its own variables, bundle-wide `llm_*` variables (the plan `llm_plan` included),
# Ansible's facts and magic variables, and the RESULTS another role publishes. A role publishes a
# result by naming it (backticked, first column) in the table under the `## Results` heading of its
# README. Another role's `_<role>_...` (private) variables and its unpublished `<role>_...` inputs,
# registers or facts are off limits: the check below scans every Jinja expression of a role's tasks,
# handlers, templates, vars, defaults and meta (templates, `{{ }}`/`{% %}` in YAML strings, and the
# bare expressions of when/changed_when/failed_when/until/that).

import re  # noqa: E402
import warnings  # noqa: E402

import jinja2  # noqa: E402
from jinja2 import meta as jinja_meta  # noqa: E402

ROLE_NAMES = sorted((p.name for p in ROLES), key=len, reverse=True)  # longest prefix first
BARE_KEYS = {"when", "changed_when", "failed_when", "until", "that"}
SCANNED_DIRS = ("tasks", "handlers", "templates", "vars", "defaults", "meta")


class _AnyName(dict):
    """Every filter and test name exists (Ansible's included): only the names read matter here."""

    def __contains__(self, name):
        return True

    def __getitem__(self, name):
        return lambda *args, **kwargs: None

    def get(self, name, default=None):
        return self[name]


_JINJA = jinja2.Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])
_JINJA.filters, _JINJA.tests = _AnyName(), _AnyName()


class _AnyTagLoader(yaml.SafeLoader):
    """Reads Ansible YAML (!unsafe, !vault) as plain values."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node)
                                    if isinstance(node, yaml.ScalarNode) else None)


def jinja_names(text: str, bare: bool = False) -> set:
    """Top-level variable names a Jinja template (or a bare expression, like `when:`) reads."""
    if bare and "{{" not in text and "{%" not in text:
        text = "{{ " + text + " }}"
    if "{{" not in text and "{%" not in text:
        return set()
    with warnings.catch_warnings():  # regexes like '\\.' in Ansible string literals
        warnings.simplefilter("ignore", DeprecationWarning)
        return jinja_meta.find_undeclared_variables(_JINJA.parse(text))


def _yaml_names(node, bare: bool = False) -> set:
    names = set()
    if isinstance(node, dict):
        for key, value in node.items():
            names |= _yaml_names(value, bare=key in BARE_KEYS)
    elif isinstance(node, list):
        for item in node:
            names |= _yaml_names(item, bare=bare)
    elif isinstance(node, str):
        names |= jinja_names(node, bare=bare)
    elif isinstance(node, bool) or node is None:
        pass
    return names


def file_names(path: Path) -> set:
    text = path.read_text()
    if path.suffix == ".j2":
        return jinja_names(text)
    return _yaml_names(yaml.load(text, Loader=_AnyTagLoader))


def owner_of(name: str):
    """The role whose prefix the variable carries (`_vllm_x` and `vllm_x` belong to vllm), or None."""
    bare = name[1:] if name.startswith("_") else name
    return next((r for r in ROLE_NAMES if bare.startswith(r + "_")), None)


def published(role: str) -> set:
    """Variables a role publishes: the backticked first column of the table under `## Results`."""
    readme = (REPO / "roles" / role / "README.md").read_text()
    section = re.search(r"^## Results\s*$(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if not section:
        return set()
    return set(re.findall(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`", section.group(1), re.M))


def foreign_reads(role: str, names: set, publishes=published) -> set:
    """Names of another role's variables that role `role` reads without that role publishing them."""
    bad = set()
    for name in names:
        owner = owner_of(name)
        if owner is None or owner == role:
            continue
        if name.startswith("_") or name not in publishes(owner):
            bad.add(name)
    return bad


def test_the_cross_role_check_catches_a_private_and_an_unpublished_read():
    text = ("{{ _python_runtime_install is changed }} {{ cuda_toolkit_version }} "
            "{% for b in llm_backends %}{{ b.base_url }}{% endfor %} {{ vllm_port }} {{ llm_plan.mode }}")
    names = jinja_names(text)
    assert foreign_reads("vllm", names, publishes=lambda owner: {"cuda_toolkit_version"}) == \
        {"_python_runtime_install"}
    assert foreign_reads("vllm", names, publishes=lambda owner: set()) == \
        {"_python_runtime_install", "cuda_toolkit_version"}
    assert jinja_names("_base_x is defined and llm_plan.mode == 'cpu'", bare=True) == \
        {"_base_x", "llm_plan"}
    assert owner_of("nvidia_driver_x") == "nvidia_driver" and owner_of("llm_plan") is None


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_publishes_only_llm_or_its_own_variables(role):
    assert {n for n in published(role.name)
            if not (n.startswith("llm_") or n.startswith(role.name + "_"))} == set()


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_reads_no_other_roles_private_or_unpublished_variables(role):
    bad = {}
    for sub in SCANNED_DIRS:
        for path in sorted((role / sub).rglob("*")):
            if path.suffix in (".yml", ".yaml", ".j2"):
                found = foreign_reads(role.name, file_names(path))
                if found:
                    bad[str(path.relative_to(REPO))] = sorted(found)
    assert bad == {}, "reads other roles' private or unpublished variables"


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
