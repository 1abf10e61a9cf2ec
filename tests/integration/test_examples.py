# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every module's EXAMPLES parse, pass ansible-playbook --syntax-check and use only documented
options; the production-preset examples run for real, end to end, against a sandbox root."""

from __future__ import absolute_import, division, print_function

import importlib
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from harness import REPO, VENV_BIN, ansible_env, run_playbook

MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules")) if f.endswith(".py"))
EXAMPLE_ROOT = "/srv/sandbox"
TASK_KEYWORDS = {"name", "register", "when", "check_mode", "diff", "become", "tags", "vars", "loop",
                 "ignore_errors", "changed_when", "failed_when", "delegate_to", "environment", "no_log"}


def _examples(module):
    mod = importlib.import_module("ansible_collections.switchyard.fs.plugins.modules." + module)
    tasks = yaml.safe_load(mod.EXAMPLES)
    assert isinstance(tasks, list) and tasks, "%s: EXAMPLES must be a non-empty list of tasks" % module
    return tasks


def _play(tasks):
    return yaml.safe_dump([{"name": "Examples", "hosts": "localhost", "gather_facts": False, "tasks": tasks}],
                          sort_keys=False)


def _module_key(task):
    keys = [k for k in task if k.startswith("switchyard.fs.")]
    return keys[0] if keys else None


@pytest.fixture(scope="module")
def documented_options():
    """{fqcn: {option: suboptions-or-None}} from ansible-doc, the doc fragment merged in."""
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-doc"), "--json"] + ["switchyard.fs." + m for m in MODULES],
                          env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    return dict((name, d["doc"]["options"]) for name, d in docs.items())


@pytest.mark.parametrize("module", MODULES)
def test_examples_pass_syntax_check(tmp_path, module):
    r = run_playbook(tmp_path, _play(_examples(module)), extra_args=["--syntax-check"])
    assert r.rc == 0, r


@pytest.mark.parametrize("module", MODULES)
def test_examples_use_only_documented_options(module, documented_options):
    for task in _examples(module):
        assert set(task) - TASK_KEYWORDS - {_module_key(task) or "ansible.builtin.debug"} == set(), task
        fqcn = _module_key(task)
        if fqcn is None:
            continue
        options = documented_options[fqcn]
        unknown = sorted(set(task[fqcn]) - set(options))
        assert unknown == [], "%s example %r uses undocumented options %s" % (module, task.get("name"), unknown)
        for key, value in (task[fqcn].get("policy") or {}).items():
            assert key in options["policy"]["suboptions"], "unknown policy knob %s in %r" % (key, task.get("name"))


def test_every_module_has_a_production_preset_example():
    for module in MODULES:
        presets = [t[_module_key(t)].get("preset") for t in _examples(module) if _module_key(t)]
        assert "production" in presets, module


def test_apply_production_example_configures_lock_and_smoke():
    [task] = [t for t in _examples("safe_apply") if _module_key(t) and t[_module_key(t)].get("preset") == "production"]
    args = task["switchyard.fs.safe_apply"]
    assert "lock_timeout" in args and "lock_path" in args
    assert isinstance(args["smoke"], list) and args["smoke"]


# -- the production examples, for real -----------------------------------------------------------

def _copy_with_libraries(exe, root, rel):
    """exe at root/rel plus every shared library it loads at the same path, so it runs in a chroot."""
    dst = os.path.join(root, rel.lstrip("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(exe, dst)
    out = subprocess.run(["ldd", exe], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         universal_newlines=True, check=False).stdout
    for lib in re.findall(r"(/\S+)", out):
        if os.path.isfile(lib):
            for path in (lib, os.path.realpath(lib)):
                target = os.path.join(root, path.lstrip("/"))
                if not os.path.exists(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy2(path, target)


def _production_sandbox(tmp_path):
    """An /srv/sandbox-like root: root-owned ls and provider ls, a busybox rescue, lock and state dirs."""
    assert os.geteuid() == 0, "the production preset needs a root-owned source and chroot: run the tests as root"
    root = os.path.join(str(tmp_path), "srv", "sandbox")
    for d in ("usr/bin", "opt/provider/bin", "run/lock", "var/lib"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    ls = shutil.which("ls", path="/usr/bin:/bin")
    _copy_with_libraries(ls, root, "/usr/bin/ls")
    _copy_with_libraries(ls, root, "/opt/provider/bin/ls")
    # The rescue toolset production requires (and runs): busybox on PATH inside the root.
    _copy_with_libraries(shutil.which("busybox") or "/bin/busybox", root, "/usr/bin/busybox")
    os.chown(os.path.join(root, "opt/provider/bin/ls"), 0, 0)
    os.chmod(os.path.join(root, "opt/provider/bin/ls"), 0o755)
    return root


def _production_tasks(root):
    """The production-preset examples in the order an operator runs them: preflight, apply, undo, prune."""
    chosen = []
    for module in ("safe_preflight", "safe_apply", "safe_restore", "safe_prune"):
        tasks = _examples(module)
        for i, task in enumerate(tasks):
            key = _module_key(task)
            if key and task[key].get("preset") == "production":
                chosen.append(task)
                # keep the example's follow-up tasks (they read what it registered)
                for follow in tasks[i + 1:]:
                    if _module_key(follow):
                        break
                    chosen.append(follow)
    text = yaml.safe_dump(chosen, sort_keys=False).replace(EXAMPLE_ROOT, root)
    return yaml.safe_load(text)


def test_production_examples_run_for_real_against_a_sandbox_root(tmp_path):
    root = _production_sandbox(tmp_path)
    target = os.path.join(root, "usr/bin/ls")
    with open(target, "rb") as f:
        original = f.read()
    tasks = _production_tasks(root)
    names = [t["name"] for t in tasks]
    r = run_playbook(tmp_path, _play(tasks))
    assert r.rc == 0, r

    pre = r.result(names[0])
    assert pre["ansible_facts"]["switchyard_preflight"]["summary"]["stops"] == 0, pre

    [apply_name] = [t["name"] for t in tasks if "switchyard.fs.safe_apply" in t]
    applied = r.result(apply_name)
    assert applied["changed"] is True
    facts = applied["ansible_facts"]["switchyard_apply"]
    assert facts["preset"] == "production"
    assert facts["lock_backend"] and facts["lock_attempts"] >= 1
    assert [s["ok"] for s in facts["smoke"]] == [True]
    assert facts["summary"]["backup_durable"] is True

    [restore_name] = [t["name"] for t in tasks if "switchyard.fs.safe_restore" in t]
    restored = r.result(restore_name)
    assert restored["changed"] is True, restored
    # The undo put back the very bytes that were there before the swap.
    assert not os.path.islink(target)
    with open(target, "rb") as f:
        assert f.read() == original

    [prune_name] = [t["name"] for t in tasks if "switchyard.fs.safe_prune" in t]
    assert "switchyard_prune" in r.result(prune_name)["ansible_facts"]


def test_production_apply_example_leaves_the_link_and_is_idempotent(tmp_path):
    root = _production_sandbox(tmp_path)
    [task] = [t for t in _production_tasks(root) if "switchyard.fs.safe_apply" in t]
    first = run_playbook(tmp_path, _play([task]))
    assert first.rc == 0, first
    assert os.readlink(os.path.join(root, "usr/bin/ls")) == "/opt/provider/bin/ls"
    second = run_playbook(tmp_path, _play([task]))
    assert second.rc == 0, second
    assert second.result(task["name"])["changed"] is False
