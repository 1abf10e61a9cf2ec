# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The layers of docs/architecture.md, checked: imports only go down, files stay small, each says what it owns."""

from __future__ import absolute_import, division, print_function

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE_UTILS = os.path.join(REPO, "plugins", "module_utils")
PREFIX = "ansible_collections.switchyard.fs.plugins.module_utils."
MAX_LINES = 400

# docs/architecture.md, "Layers": a module may import its own layer and the layers below it, never above.
LAYERS = {
    "_errors": 0, "_policy": 0, "_plan": 0, "_faults": 0, "_facts": 0,
    "_fs": 1,
    "_probes": 2,
    "_gates": 3, "_report": 3,
    "_stages": 4,
    "engine": 5,
    "_module": 6,
}


def _modules():
    for dirpath, dirnames, filenames in os.walk(MODULE_UTILS):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in sorted(filenames):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                yield os.path.relpath(path, MODULE_UTILS)[:-3].replace(os.sep, "."), path


def _layer(dotted):
    top = dotted.split(".")[0]
    assert top in LAYERS, "%s is in no layer: add it to docs/architecture.md and to LAYERS here" % dotted
    return LAYERS[top]


def _imports(path):
    """The collection's module_utils modules a file imports ("_fs.atoms", "_stages.run", ...)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            yield node.lineno, node.module[len(PREFIX):]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PREFIX):
                    yield node.lineno, alias.name[len(PREFIX):]


@pytest.mark.parametrize("name,path", sorted(_modules()))
def test_imports_only_go_down(name, path):
    mine = _layer(name)
    upward = ["line %d: %s (layer %d)" % (line, dep, _layer(dep)) for line, dep in _imports(path) if _layer(dep) > mine]
    assert upward == [], "%s (layer %d) imports upward: %s" % (name, mine, upward)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The check itself: a gate importing a stage is found."""
    bad = tmp_path / "gate.py"
    bad.write_text("from ansible_collections.switchyard.fs.plugins.module_utils._stages.run import Run\n")
    assert [_layer(dep) for _line, dep in _imports(str(bad))] == [4] and _layer("_gates.target") == 3


def test_the_module_glue_reaches_the_engine_only_through_the_facade():
    deps = [dep for _line, dep in _imports(os.path.join(MODULE_UTILS, "_module.py"))]
    assert "engine" in deps
    assert [d for d in deps if d.split(".")[0] in ("_stages", "_gates", "_probes", "_fs")] == []


def _plugin_files():
    for dirpath, dirnames, filenames in os.walk(os.path.join(REPO, "plugins")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in sorted(filenames):
            if f.endswith(".py"):
                yield os.path.relpath(os.path.join(dirpath, f), REPO)


@pytest.mark.parametrize("rel", sorted(_plugin_files()))
def test_no_plugin_file_is_above_the_line_budget(rel):
    with open(os.path.join(REPO, rel)) as f:
        lines = sum(1 for _line in f)
    assert lines <= MAX_LINES, "%s has %d lines; split it by concern (docs/architecture.md)" % (rel, lines)


@pytest.mark.parametrize("rel", sorted(r for r in _plugin_files() if not r.endswith("__init__.py")
                                       or r.startswith("plugins/module_utils/_")))
def test_each_file_says_first_what_it_owns(rel):
    with open(os.path.join(REPO, rel)) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    first = doc.splitlines()[0].strip() if doc else ""
    assert len(first) > 20, "%s: the first docstring line must say what the file owns" % rel
