"""Which variables the bundle reads, sets and declares (tests/unit/test_llm_vars.py, test_inventories.py).

Reads: identifiers inside Jinja (`{{ }}`, `{% %}`, and the bare expressions of when/that/...) in the
YAML and templates of roles/, playbooks/ and site.yml, and the hostvars keys plugins/ look up.
Attribute names (`llm_plan.mode`) and filter names are not variables. Sets: set_fact keys,
register names, vars: keys and the facts modules return.
"""

import ast
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CODE = [REPO / "roles", REPO / "playbooks", REPO / "plugins", REPO / "site.yml"]
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
IDENT = re.compile(r"(?<![\w.$])([a-z_][a-z0-9_]*)\b")
BARE_JINJA_KEYS = {"when", "that", "failed_when", "changed_when", "until", "removed_when"}
SET_FACT = {"set_fact", "ansible.builtin.set_fact"}


def _files(suffixes):
    for root in CODE:
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for p in paths:
            if p.is_file() and p.suffix in suffixes:
                yield p


def _idents(expr):
    # String literals are data, not reads ('llm_' as a prefix, a role's name).
    return set(IDENT.findall(re.sub(r"'[^'\n]*'|\"[^\"\n]*\"", "''", expr)))


def _strings(node, key=None):
    """(key, string) for every string value in a YAML tree (the key it sits under)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)
    elif isinstance(node, str):
        yield key, node
    elif isinstance(node, bool) or node is None:
        return


def _jinja_idents(key, text):
    names = set()
    for block in JINJA.findall(text):
        names |= _idents(block)
    if key in BARE_JINJA_KEYS and "{{" not in text:
        names |= _idents(text)
    return names


def filter_names():
    names = set()
    for p in (REPO / "plugins" / "filter").glob("*.py"):
        names |= set(re.findall(r"[\"'](\w+)[\"']\s*:\s*\w+", p.read_text()))
    return names


def _load_yaml(p):
    try:
        return list(yaml.safe_load_all(p.read_text()))
    except yaml.YAMLError:
        return []


def reads(prefix="llm_"):
    """Variable names starting with prefix that the code reads."""
    names = set()
    for p in _files({".yml", ".yaml"}):
        for doc in _load_yaml(p):
            for key, text in _strings(doc):
                names |= _jinja_idents(key, text)
    for p in _files({".j2"}):
        for block in JINJA.findall(p.read_text()):
            names |= _idents(block)
    for p in _files({".py"}):
        src = p.read_text()
        for block in JINJA.findall(src):  # module EXAMPLES
            names |= _idents(block)
        for node in ast.walk(ast.parse(src)):
            keys = []
            if isinstance(node, ast.Call):  # _get(hostvars, "llm_x"), hv.get("llm_x")
                func = node.func
                fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if fname in ("_get", "get"):
                    keys = node.args
            elif isinstance(node, ast.Subscript):
                keys = [node.slice]
            names |= {k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return {n for n in names if n.startswith(prefix)} - filter_names()


def _walk_tasks(node, out):
    if isinstance(node, list):
        for item in node:
            _walk_tasks(item, out)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k in SET_FACT and isinstance(v, dict):
                out |= {n for n in v if n != "cacheable"}
            elif k == "register" and isinstance(v, str):
                out.add(v)
            elif k == "vars" and isinstance(v, dict):
                out |= set(v)
            _walk_tasks(v, out)


def sets(prefix="llm_"):
    """Variable names starting with prefix that the bundle sets itself (facts, registers, vars)."""
    names = set()
    for p in _files({".yml", ".yaml"}):
        for doc in _load_yaml(p):
            _walk_tasks(doc, names)
    for p in _files({".py"}):
        names |= set(re.findall(r"ansible_facts\s*=\s*\{\s*[\"'](\w+)[\"']", p.read_text()))
    return {n for n in names if n.startswith(prefix)}


def role_options():
    """Every option of every entry point of every role's argument spec (llm_bundle included)."""
    names = set()
    for spec in (REPO / "roles").glob("*/meta/argument_specs.yml"):
        for entry in (yaml.safe_load(spec.read_text())["argument_specs"] or {}).values():
            names |= set((entry or {}).get("options") or {})
    return names


def bundle_spec():
    spec = yaml.safe_load((REPO / "roles" / "llm_bundle" / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"]["main"]["options"]
