# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``ansible-test units`` and ``ansible-test integration`` over the collection, as part of ``make test``.

The shipped files are staged at ``<repo>/.build/ansible-test/ansible_collections/switchyard/fs`` the
way ``tests/sanity/test_sanity.py`` does it (a copy with its own git index).

- units: ``tests/unit`` in ansible-test's own virtual environment (``--venv``, requirements from
  ``tests/unit/requirements.txt``) under this venv's Python (see ``units_args`` for the target Pythons).
- integration: ``tests/integration/targets/<module>`` (each on a sandbox root it creates itself) with
  ``--local``, once with the newest ansible-core (this venv) and once with the oldest one
  ``meta/runtime.yml`` claims (2.16, in ``.build/venv-core2.16``, built here with pip from pyenv's
  Python 3.11). The target Python is set explicitly with ``--python-interpreter``.

Run alone:  .venv/bin/python tests/ansible_test/test_ansible_test.py units|integration|integration-2.16 [args...]
"""

from __future__ import absolute_import, division, print_function

import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, ".build")
STAGE_ROOT = os.path.join(BUILD, "ansible-test")
STAGE = os.path.join(STAGE_ROOT, "ansible_collections", "switchyard", "fs")
PY_BIN = os.path.join(STAGE_ROOT, "bin")
VENV_BIN = os.path.dirname(sys.executable)
OLDEST_CORE = "2.16"
OLDEST_VENV = os.path.join(BUILD, "venv-core" + OLDEST_CORE)
OLDEST_CONTROLLER_PYTHON = "3.11"  # ansible-core 2.16 runs its controller on Python 3.10 to 3.12
TARGETS = ("safe_preflight", "safe_apply", "safe_restore", "safe_prune")


def _sanity_helpers():
    spec = importlib.util.spec_from_file_location("switchyard_sanity_helpers",
                                                  os.path.join(REPO, "tests", "sanity", "test_sanity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SANITY = _sanity_helpers()


def prepare_interpreters():
    """PY_BIN holds python3.X links to each pyenv interpreter; ansible-test finds target Pythons on PATH."""
    if os.path.isdir(PY_BIN):
        shutil.rmtree(PY_BIN)
    os.makedirs(PY_BIN)
    found = SANITY.target_interpreters()
    for version, exe in found.items():
        os.symlink(exe, os.path.join(PY_BIN, "python" + version))
    return found


def oldest_core_venv():
    """A venv with ansible-core 2.16 and jsonschema (the action plugins' controller dependency)."""
    python = SANITY.target_interpreters().get(OLDEST_CONTROLLER_PYTHON)
    assert python, "Python %s not found (pyenv install %s)" % (OLDEST_CONTROLLER_PYTHON, OLDEST_CONTROLLER_PYTHON)
    stamp = os.path.join(OLDEST_VENV, ".installed")
    if not os.path.exists(stamp):
        if os.path.isdir(OLDEST_VENV):
            shutil.rmtree(OLDEST_VENV)
        subprocess.check_call([python, "-m", "venv", OLDEST_VENV])
        major, minor = OLDEST_CORE.split(".")
        subprocess.check_call([os.path.join(OLDEST_VENV, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                               "ansible-core>=%s,<%s.%d" % (OLDEST_CORE, major, int(minor) + 1), "jsonschema>=4.18"])
        with open(stamp, "w") as f:
            f.write("")
    return os.path.join(OLDEST_VENV, "bin")


def core_version(bin_dir):
    out = subprocess.check_output([os.path.join(bin_dir, "python"), "-c",
                                   "from ansible.release import __version__; print(__version__)"])
    return out.decode().strip()


def ansible_test_env(bin_dir):
    env = SANITY.sanity_env()
    env["PATH"] = os.pathsep.join([PY_BIN, bin_dir] + env["PATH"].split(os.pathsep)[2:])
    # The unit tests ansible-test runs get a temp root of their own: sharing /tmp/pytest-of-root with the
    # pytest session around them let the two pick or clean up each other's numbered basetemp (FileExistsError).
    tmp = os.path.join(BUILD, "ansible-test-tmp")
    os.makedirs(tmp, exist_ok=True)
    env["TMPDIR"] = tmp
    return env


def run_ansible_test(command, args, bin_dir=VENV_BIN, stream=False):
    """Stage, then run ``ansible-test <command>`` there with the ansible-test of ``bin_dir``.  Runs from one
    checkout take turns: they share the stage (and ansible-test's venvs under tests/output)."""
    os.makedirs(STAGE_ROOT, exist_ok=True)
    with open(os.path.join(BUILD, "ansible-test.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.time()
        SANITY.stage_collection(STAGE)
        prepare_interpreters()
        SANITY.install_get_pip_stand_in()
        cmd = [os.path.join(bin_dir, "ansible-test"), command, "--color", "no"] + list(args)
        kwargs = {} if stream else {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        proc = subprocess.run(cmd, cwd=STAGE, env=ansible_test_env(bin_dir), universal_newlines=True, timeout=1500,
                              check=False, **kwargs)
        return proc, time.time() - started


def units_args():
    """One ansible-test units run on the controller's Python.  The module_utils tests on the oldest and newest
    target Python (3.8, 3.13) would repeat what pytest already runs, at about 3 minutes each (every --venv is
    built from scratch on a fresh clone); the managed-host code is exercised on 3.8 and 3.13 by the playbook
    tests and the sanity import/compile tests instead.  Both remain one command away:
    ``ansible-test units --venv --python 3.8 tests/unit/plugins/module_utils/``."""
    # test_metadata_fuzz.py mounts a tmpfs for a module-scoped world; under ansible-test's pytest its teardown
    # does not run before the next test asks for a temp dir, and every later test errors. pytest runs it.
    files = sorted(os.path.relpath(os.path.join(d, f), REPO) for d, _s, fs in os.walk(os.path.join(REPO, "tests", "unit"))
                   for f in fs if f.startswith("test_") and f.endswith(".py") and f != "test_metadata_fuzz.py")
    return ["--venv", "--python", "%d.%d" % sys.version_info[:2], "--num-workers", "1"] + files, []


def integration_args(bin_dir):
    return ["--local", "--python-interpreter", os.path.join(bin_dir, "python"), "-v"] + list(TARGETS)


def _fail_message(what, proc, took):
    return "ansible-test %s failed after %.0fs:\n%s" % (what, took, proc.stdout[-6000:])


@pytest.mark.xdist_group("ansible_test")
def test_ansible_test_units_run_the_unit_tests():
    controller, targets = units_args()
    for args in [controller] + targets:
        proc, took = run_ansible_test("units", args)
        assert proc.returncode == 0, _fail_message("units " + " ".join(args), proc, took)
        assert " passed" in proc.stdout and " skipped" not in proc.stdout, proc.stdout[-3000:]


@pytest.mark.xdist_group("ansible_test")
def test_ansible_test_integration_targets_with_the_newest_ansible_core():
    proc, took = run_ansible_test("integration", integration_args(VENV_BIN))
    assert proc.returncode == 0, _fail_message("integration (ansible-core %s)" % core_version(VENV_BIN), proc, took)
    for target in TARGETS:
        assert "Running %s integration test role" % target in proc.stdout, target


@pytest.mark.xdist_group("ansible_test")
def test_ansible_test_integration_targets_with_the_oldest_claimed_ansible_core():
    bin_dir = oldest_core_venv()
    assert core_version(bin_dir).startswith(OLDEST_CORE + "."), core_version(bin_dir)
    with open(os.path.join(REPO, "meta", "runtime.yml")) as f:
        assert 'requires_ansible: ">=%s.0"' % OLDEST_CORE in f.read(), "meta/runtime.yml claims another oldest core"
    proc, took = run_ansible_test("integration", integration_args(bin_dir), bin_dir=bin_dir)
    assert proc.returncode == 0, _fail_message("integration (ansible-core %s)" % core_version(bin_dir), proc, took)
    for target in TARGETS:
        assert "Running %s integration test role" % target in proc.stdout, target


if __name__ == "__main__":
    _what = sys.argv[1] if len(sys.argv) > 1 else "integration"
    if _what == "units":
        _c, _t = units_args()
        _runs = [("units", a, VENV_BIN) for a in [_c] + _t]
    elif _what == "integration-" + OLDEST_CORE:
        _b = oldest_core_venv()
        _runs = [("integration", integration_args(_b), _b)]
    else:
        _runs = [("integration", integration_args(VENV_BIN), VENV_BIN)]
    _rc = 0
    for _cmd, _args, _bin in _runs:
        _proc, _took = run_ansible_test(_cmd, _args + sys.argv[2:], bin_dir=_bin, stream=True)
        print("ansible-test %s %s: rc=%d in %.0fs" % (_cmd, " ".join(_args), _proc.returncode, _took))
        _rc = _rc or _proc.returncode
    sys.exit(_rc)
