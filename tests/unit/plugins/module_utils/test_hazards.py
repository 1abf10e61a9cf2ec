# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one hazard check (_fs/hazards.py) on real files, and the backup's re-check built on it. Private to this collection."""
from __future__ import absolute_import, division, print_function

import os
import shutil
import subprocess

import pytest

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._fs import hazards as hz
from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings

SETCAP = shutil.which("setcap")


def _file(path, mode=0o755):
    with open(str(path), "wb") as f:
        f.write(b"#!/bin/sh\nexit 0\n")
    os.chmod(str(path), mode)
    return str(path)


def _hazards(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return hz.file_hazards(os.fstat(fd), fd)
    finally:
        os.close(fd)


@pytest.fixture
def files(tmp_path):
    """plain, setuid, setgid, capability-bearing and hard-linked regular files (real setcap, real link)."""
    assert os.geteuid() == 0, "needs root (setcap)"
    assert SETCAP, "setcap missing: run scripts/install-system-deps.sh (libcap2-bin)"
    out = {"plain": _file(tmp_path / "plain"), "setuid": _file(tmp_path / "setuid", 0o4755),
           "setgid": _file(tmp_path / "setgid", 0o2755), "cap": _file(tmp_path / "cap"),
           "linked": _file(tmp_path / "linked")}
    subprocess.run([SETCAP, "cap_net_raw+ep", out["cap"]], check=True)
    os.link(out["linked"], str(tmp_path / "other-name"))
    return out


def test_file_hazards_of_real_files(files, tmp_path):
    assert _hazards(files["plain"]) == []
    assert _hazards(files["setuid"]) == [hz.SETID] and _hazards(files["setgid"]) == [hz.SETID]
    assert _hazards(files["cap"]) == [hz.CAPABILITY]
    assert _hazards(files["linked"]) == [hz.HARDLINKS]
    os.chmod(files["linked"], 0o6755)
    assert _hazards(files["linked"]) == [hz.SETID, hz.HARDLINKS]
    # Without an fd no capability is seen; anything but a regular file has no hazard at all.
    assert hz.file_hazards(os.stat(files["cap"]), None) == []
    os.mkfifo(str(tmp_path / "fifo"))
    assert hz.file_hazards(os.lstat(str(tmp_path / "fifo")), None) == []
    assert hz.file_hazards(None, None) == []


@pytest.mark.parametrize("name,knob,words", [
    ("setuid", "suid_sgid", "became setuid/setgid (mode 4755) after preflight"),
    ("cap", "suid_sgid", "gained file capabilities after preflight"),
    ("linked", "hardlinks", "gained 1 hard links after preflight"),
])
def test_the_backup_re_check_refuses_each_hazard_its_knob_stops(files, name, knob, words):
    """create_backup runs the same check on the fd it backs up from: STOP knobs refuse, warn/allow and
    override_preflight let it through."""
    fd = os.open(files[name], os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fst = os.fstat(fd)
        with pytest.raises(PolicyError) as info:
            bk._hazards_of_open_file("/usr/bin/x", fd, fst, Settings(policy={knob: "stop"}).policy)
        assert words in info.value.msg and "policy.%s is stop" % knob in info.value.msg
        for policy in ({knob: "warn"}, {knob: "allow"}, {knob: "stop", "override_preflight": True}):
            bk._hazards_of_open_file("/usr/bin/x", fd, fst, Settings(policy=policy).policy)
    finally:
        os.close(fd)


def test_the_backup_re_check_lets_a_plain_file_through(files):
    fd = os.open(files["plain"], os.O_RDONLY | os.O_NOFOLLOW)
    try:
        policy = Settings(policy={"suid_sgid": "stop", "hardlinks": "stop"}).policy
        bk._hazards_of_open_file("/usr/bin/x", fd, os.fstat(fd), policy)
    finally:
        os.close(fd)
