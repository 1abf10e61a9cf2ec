# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``ansible-test sanity`` over the collection, offline apart from PyPI, as part of ``make test``.

ansible-test needs the collection at ``.../ansible_collections/switchyard/fs``.  The checkout is
copied (the files git would ship: tracked plus untracked-but-not-ignored, so .venv/.build never
leak in) into ``<repo>/.build/sanity/ansible_collections/switchyard/fs``, which gets a git index of
its own: ansible-test lists content with the nearest git repository, and the checkout's (which
ignores .build) would otherwise hide every file.  The copy lives under the checkout, not /tmp: ansible-test
runs its own helper scripts from /tmp and must not find ours there.

Every target Python 3.8 to 3.13 found under pyenv is put on PATH as ``python3.X``, so the
version-dependent tests (compile, import) run for each.  ansible-test bootstraps pip in its
virtual environments with a ``get-pip`` script from a host this machine cannot reach; the
stand-in written to ``~/.ansible/test/cache/`` uses ``ensurepip`` and then installs the pinned
pip with the ordinary client instead.

Run alone:  .venv/bin/python tests/sanity/test_sanity.py [ansible-test sanity options...]
"""

from __future__ import absolute_import, division, print_function

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGE_ROOT = os.path.join(REPO, ".build", "sanity")
STAGE = os.path.join(STAGE_ROOT, "ansible_collections", "switchyard", "fs")
PY_BIN = os.path.join(STAGE_ROOT, "bin")
VENV_BIN = os.path.dirname(sys.executable)
PYENV_VERSIONS = "/root/.pyenv/versions"
TARGET_MINORS = (8, 9, 10, 11, 12, 13)
# Directories that are never part of the collection, for checkouts without git metadata.
NOT_SHIPPED = {".git", ".venv", ".build", ".cache", ".pytest_cache", ".hypothesis", "__pycache__", "output"}

GET_PIP_STAND_IN = '''\
"""Offline stand-in for ansible-test's get-pip bootstrap: ensurepip, then pip install the pinned pip."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"],
                      stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
'''


def shipped_files(repo=REPO):
    """Relative paths of the files the collection consists of (what git would commit)."""
    # A git worktree has a .git *file*: it still is a git checkout (and a copied .git file would point
    # the stage's `git add` at the checkout's own index).
    if os.path.exists(os.path.join(repo, ".git")):
        out = subprocess.check_output(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                      cwd=repo)
        names = [n for n in out.decode("utf-8").split("\0") if n]
        return sorted(n for n in names if os.path.isfile(os.path.join(repo, n)) or os.path.islink(os.path.join(repo, n)))
    found = []
    for top, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if d not in NOT_SHIPPED]
        for f in files:
            if not f.endswith(".pyc") and f not in NOT_SHIPPED:
                found.append(os.path.relpath(os.path.join(top, f), repo))
    return sorted(found)


def stage_collection(stage=STAGE):
    """A fresh copy of the shipped files at ``stage`` (a path ending in ansible_collections/switchyard/fs)."""
    stage_root = os.path.dirname(os.path.dirname(os.path.dirname(stage)))
    # tests/output keeps ansible-test's controller venv between runs (minutes of installs saved).
    output, kept = os.path.join(stage, "tests", "output"), os.path.join(stage_root, "output.kept")
    if os.path.isdir(kept):
        shutil.rmtree(kept)
    if os.path.isdir(output):
        os.rename(output, kept)
    if os.path.isdir(stage):
        shutil.rmtree(stage)
    for rel in shipped_files():
        src, dst = os.path.join(REPO, rel), os.path.join(stage, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    if os.path.isdir(kept):
        os.makedirs(os.path.dirname(output), exist_ok=True)
        os.rename(kept, output)
    # ansible-test lists content with git when it finds a .git at or above the content root; the
    # checkout's own .git (which ignores .build) is above this one, so the copy gets its own index.
    git = ["git", "-c", "init.defaultBranch=main", "-c", "user.name=sanity", "-c", "user.email=sanity@localhost"]
    subprocess.check_call(git + ["init", "-q"], cwd=stage)
    subprocess.check_call(git + ["add", "-A"], cwd=stage)
    return stage


def target_interpreters():
    """{"3.X": path} for every target Python 3.8+ that pyenv (or PATH) provides."""
    found = {}
    if os.path.isdir(PYENV_VERSIONS):
        for name in sorted(os.listdir(PYENV_VERSIONS)):
            m = re.match(r"^3\.(\d+)\.\d+$", name)
            if m and int(m.group(1)) in TARGET_MINORS:
                exe = os.path.join(PYENV_VERSIONS, name, "bin", "python3.%s" % m.group(1))
                if os.access(exe, os.X_OK):
                    found["3.%s" % m.group(1)] = exe
    for minor in TARGET_MINORS:
        version = "3.%d" % minor
        if version not in found:
            exe = shutil.which("python" + version)
            if exe and "/shims/" not in exe:
                found[version] = exe
    return found


def prepare_interpreters():
    """PY_BIN holds python3.X links to each interpreter; ansible-test finds them on PATH."""
    if os.path.isdir(PY_BIN):
        shutil.rmtree(PY_BIN)
    os.makedirs(PY_BIN)
    found = target_interpreters()
    for version, exe in found.items():
        os.symlink(exe, os.path.join(PY_BIN, "python" + version))
    return found


def pip_bootstrap_version():
    from ansible_test._internal.python_requirements import get_venv_packages  # pylint: disable=import-outside-toplevel

    class _Python(object):
        version = "%d.%d" % sys.version_info[:2]

    return get_venv_packages(_Python())["pip"]


def install_get_pip_stand_in():
    cache = os.path.expanduser("~/.ansible/test/cache")
    path = os.path.join(cache, "get_pip_%s.py" % pip_bootstrap_version().replace(".", "_"))
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(GET_PIP_STAND_IN)
        os.rename(path + ".tmp", path)
    return path


def sanity_env():
    env = dict(os.environ)
    for var in [k for k in env if k.startswith(("ANSIBLE_", "PYTEST_"))] + ["PYTHONPATH"]:
        env.pop(var, None)
    env["PATH"] = os.pathsep.join([PY_BIN, VENV_BIN, env.get("PATH", "")])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run_sanity(extra_args=(), stream=False):
    """Stage, then run ansible-test sanity there.  Runs from one checkout take turns: they share the
    stage directory (and ansible-test's venvs), and a restage under a running ansible-test breaks it."""
    os.makedirs(STAGE_ROOT, exist_ok=True)
    with open(os.path.join(STAGE_ROOT, "..", "sanity.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.time()
        stage_collection()
        found = prepare_interpreters()
        install_get_pip_stand_in()
        cmd = [os.path.join(VENV_BIN, "ansible-test"), "sanity", "--venv", "--color", "no"]
        cmd += list(extra_args)
        kwargs = {} if stream else {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        proc = subprocess.run(cmd, cwd=STAGE, env=sanity_env(), universal_newlines=True, timeout=1500, check=False,
                              **kwargs)
        return proc, found, time.time() - started


@pytest.mark.xdist_group("sanity")
def test_ansible_test_sanity_passes_for_every_target_python():
    proc, found, took = run_sanity()
    missing = sorted(set("3.%d" % m for m in TARGET_MINORS) - set(found))
    assert not missing, "target Pythons not found: %s" % ", ".join(missing)
    findings = "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("ERROR:", "FATAL:")))
    assert proc.returncode == 0, "ansible-test sanity failed after %.0fs:\n%s\n--- output tail ---\n%s" % (
        took, findings[-20000:], proc.stdout[-3000:])
    # A sanity test whose tool is missing is skipped with a warning, not failed: treat that as a failure.
    skipped = [line for line in proc.stdout.splitlines() if "Required program" in line and "not found" in line]
    assert skipped == [], "sanity tests skipped for a missing tool (scripts/install-system-deps.sh installs them): %s" % skipped


if __name__ == "__main__":
    _proc, _found, _took = run_sanity(sys.argv[1:], stream=True)
    print("ansible-test sanity: rc=%d in %.0fs (pythons: %s)" % (_proc.returncode, _took, ", ".join(sorted(_found))))
    sys.exit(_proc.returncode)
