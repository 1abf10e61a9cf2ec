# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fact-key table (module_utils/_facts.py) covers every stage, and each module and action plugin names its stage.

The module puts its report under FACT_KEY[stage] (_module.run_module) and the action plugin reads it back from
there and runs MODULE[stage]: a module and its action plugin that named different stages would leave the report
unvalidated. The files are read as source (no import of the engine).
"""

from __future__ import absolute_import, division, print_function

import ast
import os

import pytest

from ansible_collections.switchyard.fs.plugins.module_utils._facts import FACT_KEY, MODULE, STAGES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tree(kind, name):
    with open(os.path.join(REPO, "plugins", kind, name + ".py")) as f:
        return ast.parse(f.read())


def test_the_table_covers_every_stage_once():
    assert sorted(FACT_KEY) == sorted(MODULE) == sorted(STAGES)
    assert len(set(FACT_KEY.values())) == len(set(MODULE.values())) == len(STAGES)
    for stage in STAGES:
        assert FACT_KEY[stage] == "switchyard_" + stage and MODULE[stage] == "switchyard.fs.safe_" + stage


@pytest.mark.parametrize("stage", STAGES)
def test_the_action_plugin_runs_the_module_of_its_file_name(stage):
    name = MODULE[stage].rsplit(".", 1)[1]
    assigned = [node.value.value for node in ast.walk(_tree("action", name))
                if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["stage"]]
    assert assigned == [stage]


@pytest.mark.parametrize("stage", STAGES)
def test_the_module_reports_under_its_stage(stage):
    name = MODULE[stage].rsplit(".", 1)[1]
    calls = [node for node in ast.walk(_tree("modules", name))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_module"]
    assert [c.args[1].value for c in calls] == [stage]


def test_every_module_and_action_plugin_is_in_the_table():
    for kind in ("modules", "action"):
        files = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", kind)) if f.endswith(".py"))
        assert files == sorted(m.rsplit(".", 1)[1] for m in MODULE.values()), kind
