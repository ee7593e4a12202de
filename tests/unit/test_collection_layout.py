"""The repository is also the collection llmstack.serving (galaxy.yml): what keeps both working."""

import importlib.util

import yaml

from conftest import REPO


def _imports(path):
    return [play["ansible.builtin.import_playbook"] for play in yaml.safe_load(path.read_text())]


def test_collection_site_playbook_matches_top_level_site():
    top = _imports(REPO / "site.yml")
    assert top == ["playbooks/" + name for name in _imports(REPO / "playbooks" / "site.yml")]


def test_playbook_adjacent_filters_cover_every_filter_plugin():
    import llm_datastores
    import llm_fleet
    import llm_monitoring
    import llm_offline

    import llm_argspec
    import llm_index
    import llm_plan_report
    import llm_plan_table
    import llm_preflight

    spec = importlib.util.spec_from_file_location(
        "llm_filters_shim", REPO / "playbooks" / "filter_plugins" / "llm_filters.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    names = set()
    for module in (llm_argspec, llm_datastores, llm_fleet, llm_index, llm_monitoring, llm_offline,
                   llm_plan_report, llm_plan_table, llm_preflight):
        names |= set(module.FilterModule().filters())
    assert set(shim.FilterModule().filters()) == names
    assert sorted(p.stem for p in (REPO / "plugins" / "filter").glob("*.py")) == \
        sorted(shim._PLUGINS)


def test_galaxy_metadata_builds_what_the_bundle_needs():
    meta = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert (meta["namespace"], meta["name"]) == ("llmstack", "serving")
    ignored = set(meta["build_ignore"])
    for path in ("tests", "molecule", "inventories", ".cache", ".venv", ".secrets", "ansible.cfg"):
        assert path in ignored
    for path in ("roles", "plugins", "playbooks", "meta"):
        assert path not in ignored
    # `make demo`'s playbooks need this repository's podman test host: not part of the collection.
    assert {"playbooks/demo.yml", "playbooks/demo-destroy.yml"} <= ignored
    assert all((REPO / p).is_file() for p in ("playbooks/demo.yml", "playbooks/demo-destroy.yml"))
