# -*- coding: utf-8 -*-
"""The one dead-temp sweep (_fs.atoms.remove_dead_temps) for its three callers: backup/restore (one name, writers
told apart by flock), the journal directory (every temp) and recovery of a finished run (that run's temps, any kind)."""

from __future__ import absolute_import, division, print_function

import errno
import os
import subprocess

import pytest

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs

RUN_A = "aaaaaaaa-0000-4000-8000-000000000000"
RUN_B = "bbbbbbbb-0000-4000-8000-000000000000"


@pytest.fixture
def d(tmp_path):
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def _temp(dirfd, name, run_id, live=False):
    """A regular temp as create_exclusive_at leaves it; live: its writer still holds the fd (and the flock)."""
    tmp = fs.temp_name(name, run_id)
    fd = fs.create_exclusive_at(dirfd, tmp)
    if not live:
        os.close(fd)
        return tmp, None
    return tmp, fd


def test_a_dead_writers_temp_goes_and_a_live_writers_temp_stays(d):
    path, dirfd = d
    dead, _fd = _temp(dirfd, "ls", RUN_A)
    live, live_fd = _temp(dirfd, "ls", RUN_B, live=True)
    other, _fd = _temp(dirfd, "cat", RUN_A)
    try:
        assert fs.remove_dead_temps(dirfd, "ls") == [dead]
        assert sorted(os.listdir(str(path))) == sorted([live, other])
    finally:
        os.close(live_fd)


def test_a_symlink_temp_cannot_be_locked_and_stays_without_run_id(d):
    path, dirfd = d
    link = fs.temp_name("ls", RUN_A)
    os.symlink("/usr/bin/x", link, dir_fd=dirfd)
    assert fs.remove_dead_temps(dirfd, "ls") == []
    assert os.path.islink(str(path / link))


def test_run_id_removes_every_temp_of_that_run_only_of_any_kind(d):
    path, dirfd = d
    link = fs.temp_name("ls", RUN_A)
    os.symlink("/usr/bin/x", link, dir_fd=dirfd)
    mine, mine_fd = _temp(dirfd, "ls", RUN_A, live=True)  # run_id says the run is over: its flock does not matter
    theirs, _fd = _temp(dirfd, "ls", RUN_B)
    try:
        assert sorted(fs.remove_dead_temps(dirfd, "ls", run_id=RUN_A)) == sorted([link, mine])
        assert os.listdir(str(path)) == [theirs]
    finally:
        os.close(mine_fd)


def test_dry_run_lists_and_removes_nothing(d):
    path, dirfd = d
    dead, _fd = _temp(dirfd, "ls", RUN_A)
    assert fs.remove_dead_temps(dirfd, "ls", run_id=RUN_A, dry_run=True) == [dead]
    assert fs.remove_dead_temps(dirfd, "ls", dry_run=True) == [dead]
    assert os.listdir(str(path)) == [dead]


def test_without_name_every_dead_temp_goes_and_nothing_else(d):
    """The journal directory's sweep: a journal temp of a crashed begin() goes; journals, live temps stay."""
    path, dirfd = d
    dead, _fd = _temp(dirfd, RUN_A + ".journal", RUN_A)
    live, live_fd = _temp(dirfd, RUN_B + ".journal", RUN_B, live=True)
    (path / (RUN_A + ".journal")).write_bytes(b"{}\n")
    try:
        assert fs.remove_dead_temps(dirfd) == [dead]
        assert sorted(os.listdir(str(path))) == sorted([live, RUN_A + ".journal"])
    finally:
        os.close(live_fd)


def test_entries_listed_earlier_are_used_instead_of_listing_again(d):
    path, dirfd = d
    dead, _fd = _temp(dirfd, "ls", RUN_A)
    later, _fd = _temp(dirfd, "ls", RUN_B)
    assert fs.remove_dead_temps(dirfd, "ls", entries=[dead]) == [dead]
    assert os.listdir(str(path)) == [later]


def test_a_temp_on_a_read_only_filesystem_stays_without_failing(tmp_path):
    """Sweeping is housekeeping: on a real read-only tmpfs a dead temp stays and the sweep does not fail (the
    journal directory of a read-only root); the sweep of a finished run (run_id) reports the EROFS."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    assert os.geteuid() == 0, "mounting tmpfs needs root: run the tests as root"
    subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)])
    try:
        dirfd = os.open(str(mnt), os.O_RDONLY | os.O_DIRECTORY)
        try:
            dead, _fd = _temp(dirfd, "ls", RUN_A)
            subprocess.check_call(["mount", "-o", "remount,ro", str(mnt)])
            assert fs.remove_dead_temps(dirfd) == []
            assert fs.remove_dead_temps(dirfd, "ls") == []
            with pytest.raises(OSError) as info:
                fs.remove_dead_temps(dirfd, "ls", run_id=RUN_A)
            assert info.value.errno == errno.EROFS
            assert os.listdir(str(mnt)) == [dead]
        finally:
            os.close(dirfd)
    finally:
        subprocess.check_call(["umount", str(mnt)])
