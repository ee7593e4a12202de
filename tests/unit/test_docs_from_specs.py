"""README variable tables are generated from meta/argument_specs.yml and must not drift.

`make docs` (tests/docs/regenerate.sh) rewrites the part of each role README between
<!-- BEGIN_ANSIBLE_DOCS --> and <!-- END_ANSIBLE_DOCS --> with aar-doc (requirements.txt) and the
template tests/docs/variables.md.j2. This test regenerates a copy and fails when a committed
README differs: someone edited a spec without `make docs`, or edited the generated table by hand.
"""

import difflib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (REPO / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
AAR_DOC = Path(sys.executable).parent / "aar-doc"
BEGIN, END = "<!-- BEGIN_ANSIBLE_DOCS -->", "<!-- END_ANSIBLE_DOCS -->"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """{role name: README text} after `make docs` on a copy of the roles' meta and READMEs."""
    assert AAR_DOC.is_file(), "aar-doc is not installed next to %s: pip install -r requirements.txt" \
        % sys.executable
    copy = tmp_path_factory.mktemp("bundle")
    for role in ROLES:
        shutil.copytree(role / "meta", copy / "roles" / role.name / "meta")
        shutil.copy(role / "README.md", copy / "roles" / role.name / "README.md")
    proc = subprocess.run(["bash", str(REPO / "tests" / "docs" / "regenerate.sh"), str(copy)],
                          env={"PATH": "/usr/bin:/bin", "AAR_DOC": str(AAR_DOC)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {role.name: (copy / "roles" / role.name / "README.md").read_text() for role in ROLES}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_readme_has_one_generated_section(role):
    lines = (role / "README.md").read_text().splitlines()
    assert lines.count(BEGIN) == 1 and lines.count(END) == 1, \
        "README needs exactly one %s ... %s pair (the generated variables)" % (BEGIN, END)
    assert lines.index(BEGIN) < lines.index(END)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_readme_tables_match_the_argument_spec(role, regenerated):
    committed = (role / "README.md").read_text()
    diff = "".join(difflib.unified_diff(committed.splitlines(True), regenerated[role.name].splitlines(True),
                                        "committed", "regenerated"))
    assert diff == "", "README tables drifted from meta/argument_specs.yml; run `make docs`:\n" + diff
