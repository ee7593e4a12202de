# -*- coding: utf-8 -*-
"""Playbook-adjacent filters: the short names the playbooks use (llm_plan_table, ...).

Ansible adds a `filter_plugins/` folder beside a playbook to its filter path, for playbooks run
from the clone and for the collection's playbooks (`ansible-playbook llmstack.serving.plan`)
alike; Jinja resolves short filter names only there (and ansible.cfg's filter_plugins, which an
installed collection does not have), never through a collection. This file loads the real
plugins from plugins/filter/, which sits at the same relative place in the clone and in the
installed collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import os

_FILTER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                           "plugins", "filter")
_PLUGINS = ("llm_argspec", "llm_datastores", "llm_fleet", "llm_index", "llm_monitoring",
            "llm_offline", "llm_plan_table", "llm_plan_report", "llm_preflight")


def _load(name):
    spec = importlib.util.spec_from_file_location(
        "llm_playbook_filters_" + name, os.path.join(_FILTER_DIR, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FilterModule:
    def filters(self):
        out = {}
        for name in _PLUGINS:
            out.update(_load(name).FilterModule().filters())
        return out
