"""The apt hook's runner (roles/provider_swap/files/switchyard_reapply.py) without Ansible, on sandbox roots.

Laid out as the role lays it out: <dir>/reapply.py, <dir>/plan.json and the collection's module_utils
copied under <dir>/ansible_collections/switchyard/fs/plugins/module_utils, run with `python -I -S` (no
site-packages: the standard library alone) on the oldest and newest Python the collection supports.
The role itself, with a real dpkg, is proven on the fleet (tests/fleet/test_fleet_apt_hook.py).
"""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import make_sandbox  # noqa: E402
from harness import REPO, target_pythons  # noqa: E402

RUNNER = os.path.join(REPO, "roles", "provider_swap", "files", "switchyard_reapply.py")
NAMES = ("f000", "f001", "f002")


def install_runner(hook_dir):
    """What roles/provider_swap/tasks/apt_hook.yml copies: the runner and the engine files, unchanged."""
    engine = os.path.join(hook_dir, "ansible_collections", "switchyard", "fs", "plugins", "module_utils")
    os.makedirs(engine)
    base = os.path.join(REPO, "plugins", "module_utils")
    for src in glob.glob(os.path.join(base, "*.py")) + glob.glob(os.path.join(base, "*", "*.py")):
        if os.path.basename(src) != "_module.py":
            dst = os.path.join(engine, os.path.relpath(src, base))
            if not os.path.isdir(os.path.dirname(dst)):
                os.makedirs(os.path.dirname(dst))
            shutil.copy(src, dst)
    shutil.copy(RUNNER, os.path.join(hook_dir, "reapply.py"))
    for dirpath, dirnames, filenames in os.walk(hook_dir):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def write_plan(hook_dir, sb, links, **settings):
    s = {"root": sb.root, "preset": "production", "policy": {"require_rescue": False},
         "lock_timeout": 2.0, "backup_tag": "switchyard"}
    s.update(settings)
    with open(os.path.join(hook_dir, "plan.json"), "w") as f:
        json.dump({"plan_id": None, "links": links, "smoke": [], "settings": s}, f)
    os.chmod(os.path.join(hook_dir, "plan.json"), 0o644)


def run_hook(python, hook_dir, *args):
    log = os.path.join(os.path.dirname(hook_dir), "log", "apt-hook.log")
    return subprocess.run([python, "-I", "-S", os.path.join(hook_dir, "reapply.py"), "--log", log] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                          check=False, env={"PATH": "/usr/bin:/bin"})


def log_lines(log):
    with open(log) as f:
        return [json.loads(line) for line in f]


def dpkg_unpack(path, data):
    with open(path + ".dpkg-new", "wb") as f:
        f.write(data)
    os.chmod(path + ".dpkg-new", 0o755)
    os.rename(path + ".dpkg-new", path)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def setup(tmp_path):
    sb = make_sandbox(tmp_path, tools=(), synthetic=len(NAMES))
    links = [{"source": sb.p("/opt/prov/bin/" + n), "target": sb.p("/usr/bin/" + n)} for n in NAMES]
    hook_dir = str(tmp_path / "hook")
    install_runner(hook_dir)
    log = str(tmp_path / "log" / "apt-hook.log")
    write_plan(hook_dir, sb, links)
    return sb, links, hook_dir, log


def _pythons():
    found = target_pythons()
    return [found[0], found[-1]] if len(found) > 1 else found


@pytest.mark.parametrize("python", _pythons())
def test_the_runner_reswaps_what_a_package_wrote_and_logs_it(setup, python):
    sb, links, hook_dir, log = setup
    # Nothing applied yet: the hook applies the recorded plan (as it would after any dpkg run).
    res = run_hook(python, hook_dir)
    assert res.returncode == 0, res.stderr
    first = log_lines(log)[-1]
    assert first["decision"] == "success" and sorted(first["changed"]) == sorted("/usr/bin/" + n for n in NAMES), first
    assert all(os.path.islink(l["target"]) for l in links)

    # dpkg writes new bytes over one link: the next hook run swaps it back and keeps those bytes.
    upgraded = b"#!/bin/sh\n# upgraded by a package\n"
    dpkg_unpack(links[1]["target"], upgraded)
    res = run_hook(python, hook_dir)
    assert res.returncode == 0, res.stderr
    entry = log_lines(log)[-1]
    assert entry["decision"] == "success" and entry["changed"] == ["/usr/bin/f001"] and entry["unchanged"] == 2
    assert entry["backups"]["/usr/bin/f001"]["payload_hash"] == hashlib.sha256(upgraded).hexdigest()
    assert "swapped 1 target(s) back" in res.stderr and entry["plan_id"] in res.stderr
    assert os.path.islink(links[1]["target"])

    # A run with nothing drifted changes nothing and says nothing on stderr.
    res = run_hook(python, hook_dir)
    assert res.returncode == 0 and res.stderr == ""
    assert log_lines(log)[-1]["changed"] == [] and log_lines(log)[-1]["decision"] == "success"


def test_a_failing_reapply_is_logged_and_never_fails_dpkg(setup, tmp_path):
    sb, links, hook_dir, log = setup
    # The lock is held by someone else (an Ansible run in progress): E_LOCKING, logged, exit 0.
    lock = sb.p("/run/lock/switchyard.lock")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl,os,sys,time\n"
                               "fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT, 0o600)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)", lock],
                              stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = run_hook(sys.executable, hook_dir)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 0
    entry = log_lines(log)[-1]
    assert entry["decision"] == "failure" and entry["error_id"] == "E_LOCKING", entry
    assert "re-apply failure (E_LOCKING)" in res.stderr
    assert not any(os.path.islink(l["target"]) for l in links)
    # --strict (for running it by hand) reports the failure in the exit status.
    holder2 = subprocess.Popen([sys.executable, "-c", "import fcntl,os,sys,time\n"
                                "fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT, 0o600)\n"
                                "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)", lock],
                               stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert holder2.stdout.readline().strip() == "held"
        assert run_hook(sys.executable, hook_dir, "--strict").returncode == 1
    finally:
        holder2.kill()
        holder2.wait()


@pytest.mark.parametrize("attack", ["plan_group_writable", "engine_file_not_root", "engine_symlink",
                                    "engine_package_symlink"])
def test_the_runner_refuses_files_a_less_trusted_user_could_have_written(setup, attack):
    """The hook runs as root from dpkg: a plan or engine file anyone but root could write would be code or
    paths chosen by that user. It refuses (logged, exit 0) before importing or reading anything else."""
    sb, links, hook_dir, log = setup
    engine = os.path.join(hook_dir, "ansible_collections/switchyard/fs/plugins/module_utils")
    if attack == "plan_group_writable":
        os.chmod(os.path.join(hook_dir, "plan.json"), 0o664)
    elif attack == "engine_file_not_root":
        os.chown(os.path.join(engine, "_stages", "apply.py"), 1000, 1000)
    elif attack == "engine_symlink":
        os.rename(os.path.join(engine, "_probes", "smoke.py"), os.path.join(hook_dir, "elsewhere.py"))
        os.symlink(os.path.join(hook_dir, "elsewhere.py"), os.path.join(engine, "_probes", "smoke.py"))
    else:  # a whole engine package swapped for a symlink to a directory someone else controls
        os.rename(os.path.join(engine, "_probes"), os.path.join(hook_dir, "elsewhere"))
        os.symlink(os.path.join(hook_dir, "elsewhere"), os.path.join(engine, "_probes"))
    res = run_hook(sys.executable, hook_dir)
    assert res.returncode == 0
    entry = log_lines(log)[-1]
    assert entry["decision"] == "refused", entry
    assert "re-apply refused" in res.stderr
    assert not any(os.path.islink(l["target"]) for l in links)
