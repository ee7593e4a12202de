"""One home for the bundle-wide variables: roles/llm_bundle/meta/argument_specs.yml.

Every llm_* variable the code reads (roles/, playbooks/, plugins/, site.yml) must be declared
there, unless the bundle sets it itself (a fact, a register, vars:); and every declared one must
still be read. playbooks/preflight.yml validates the spec like every role's.
"""

import bundle_vars


def test_every_llm_variable_read_is_declared_in_the_bundle_spec():
    undeclared = bundle_vars.reads() - bundle_vars.sets() - set(bundle_vars.bundle_spec())
    assert undeclared == set(), \
        "llm_* variables read but not declared in roles/llm_bundle/meta/argument_specs.yml"


def test_every_declared_llm_variable_is_read():
    assert set(bundle_vars.bundle_spec()) - bundle_vars.reads() == set(), \
        "declared in roles/llm_bundle/meta/argument_specs.yml but read nowhere"


def test_bundle_spec_holds_only_llm_variables_and_no_facts():
    spec = set(bundle_vars.bundle_spec())
    assert {n for n in spec if not n.startswith("llm_")} == set()
    # llm_api_key is both: the operator's (vault) or, unset, a fact the base role generates. llm_lora_adapters too:
    # offline mode (playbooks/tasks/offline-sources.yml) rewrites each adapter's source to the bundle's folder.
    assert spec & bundle_vars.sets() == {"llm_api_key", "llm_lora_adapters"}


def test_the_collector_sees_jinja_reads_and_skips_attributes_and_plain_text():
    found = bundle_vars._jinja_idents("msg", "set llm_a: {{ llm_b | default(llm_c.llm_d) }} {% if llm_e %}")
    assert {n for n in found if n.startswith("llm_")} == {"llm_b", "llm_c", "llm_e"}
    assert "llm_f" in bundle_vars._jinja_idents("when", "llm_f is defined")


def test_preflight_validates_every_role_spec_including_the_bundle_one():
    preflight = (bundle_vars.REPO / "playbooks" / "preflight.yml").read_text()
    assert 'paths: "{{ playbook_dir }}/../roles"' in preflight and "recurse: true" in preflight
    assert (bundle_vars.REPO / "roles" / "llm_bundle" / "meta" / "argument_specs.yml").is_file()
