# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The public surface other collections may import: it changes only on purpose (docs/api.md)."""

from __future__ import absolute_import, division, print_function

import __future__
import ast
import importlib
import os
import types

import pytest
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "ansible_collections.switchyard.fs.plugins"
PRIVATE_HEADER = "Private to this collection."
_FUTURE_FEATURE = type(__future__.division)  # the "from __future__ import" names every module carries

# Changing either pin is an API change: update docs/api.md and CHANGELOG.md in the same commit.
PUBLIC_MODULE_UTILS = {"engine"}
FACADE_ALL = {
    "Settings", "plan", "preflight", "apply", "restore", "prune",
    "Plan", "Action", "KNOBS", "PRESETS", "resolve_policy", "ERROR_TABLE",
    "SwitchyardError", "PolicyError", "OwnershipError", "LockingError", "AtomicSwapError", "ExdevError",
    "BackupMissingError", "RestoreFailedError", "SmokeError", "InternalError",
}
# Low-level atoms and engine internals a consumer must never reach through the facade.
ATOMS = {
    "symlink_replace_at", "hardlink_at", "resolve_beneath", "open_dir_beneath", "SafePath", "readlink_at",
    "fsync_dir", "renameat", "unlinkat", "Durability", "BackupStore", "Journal", "acquire_lock", "LockHandle",
    "Run", "LinkAction", "normalize_root", "relative_to_root", "Reporter", "ArgumentSpec", "run_module",
}


def _facade():
    return importlib.import_module(PACKAGE + ".module_utils.engine")


def _module_files(subpackage):
    d = os.path.join(REPO, "plugins", subpackage)
    return sorted(f[:-3] for f in os.listdir(d) if f.endswith(".py") and f != "__init__.py")


def _private_files(subpackage):
    """Every private module of a subpackage, its private packages' modules included ("_fs/atoms")."""
    d = os.path.join(REPO, "plugins", subpackage)
    found = [n for n in _module_files(subpackage) if n.startswith("_")]
    for pkg in sorted(os.listdir(d)):
        if pkg.startswith("_") and os.path.isdir(os.path.join(d, pkg)) and pkg != "__pycache__":
            found.extend("%s/%s" % (pkg, f[:-3]) for f in sorted(os.listdir(os.path.join(d, pkg)))
                         if f.endswith(".py"))
    return found


def _public_attributes(module):
    return set(n for n, v in vars(module).items()
               if not n.startswith("_") and not isinstance(v, (types.ModuleType, _FUTURE_FEATURE)))


def test_public_module_utils_modules_are_exactly_the_pinned_set():
    public = set(n for n in _module_files("module_utils") if not n.startswith("_"))
    assert public == PUBLIC_MODULE_UTILS


def test_plugin_utils_has_no_public_module():
    assert [n for n in _module_files("plugin_utils") if not n.startswith("_")] == []


def test_facade_all_is_pinned():
    assert set(_facade().__all__) == FACADE_ALL
    assert len(_facade().__all__) == len(FACADE_ALL), "duplicate names in __all__"


def test_facade_exposes_nothing_beyond_all():
    assert _public_attributes(_facade()) == set(_facade().__all__)


def test_every_name_in_all_resolves():
    facade = _facade()
    missing = [n for n in facade.__all__ if not hasattr(facade, n)]
    assert missing == []


@pytest.mark.parametrize("name", sorted(ATOMS))
def test_atom_is_not_reachable_through_the_facade(name):
    assert not hasattr(_facade(), name)


def test_no_fs_atom_is_reachable_through_the_facade():
    """Every public function of the atom modules, not just the ones named above."""
    facade = _facade()
    for private in ("_fs.atoms", "_fs.durable", "_fs.swap", "_fs.safepath", "_fs.sidepath", "_fs.backup",
                    "_fs.backup_store", "_fs.journal", "_fs.journal_check", "_fs.lock", "_fs.xattr"):
        mod = importlib.import_module(PACKAGE + ".module_utils." + private)
        leaked = sorted(n for n in _public_attributes(mod)
                        if callable(getattr(mod, n)) and getattr(mod, n).__module__ == mod.__name__
                        and hasattr(facade, n))
        assert leaked == [], "%s leaks through the facade: %s" % (private, leaked)


def test_facade_imports_no_private_module_as_attribute():
    assert [n for n, v in vars(_facade()).items() if isinstance(v, types.ModuleType)] == []


@pytest.mark.parametrize("subpackage,name", [(s, n) for s in ("module_utils", "plugin_utils")
                                             for n in _private_files(s)])
def test_private_module_starts_with_the_private_header(subpackage, name):
    with open(os.path.join(REPO, "plugins", subpackage, name + ".py")) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    first = doc.splitlines()[0] if doc else ""
    assert first.endswith(PRIVATE_HEADER), "%s/%s.py: first docstring line must end with %r" % (
        subpackage, name, PRIVATE_HEADER)


def test_facade_docstring_points_to_the_api_doc():
    assert "docs/api.md" in (_facade().__doc__ or "")


def test_facade_plan_has_the_ids_apply_reports(tmp_path):
    facade = _facade()
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "opt/prov").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"old")
    (root / "opt/prov/tool").write_bytes(b"new")
    links = [{"source": str(root / "opt/prov/tool"), "target": str(root / "usr/bin/tool")}]
    settings = facade.Settings(root=str(root), policy={"source_trust": "allow"}, check_mode=True)
    planned = facade.plan(settings, links)
    report, _error, _warnings = facade.apply(settings, links)
    assert report["plan_id"] == planned.plan_id
    assert [a["action_id"] for a in entries(report)] == [a.action_id for a in planned.actions]
