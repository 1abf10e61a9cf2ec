# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the mount probe against real tmpfs mounts and fixture mount tables. Private to this collection."""
from __future__ import absolute_import, division, print_function

import errno
import os
import subprocess

import pytest

from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(name, options): a real tmpfs under tmp_path, always unmounted in teardown."""
    assert os.geteuid() == 0, "mounting tmpfs needs root: run the tests as root"
    mounted = []

    def _mount(name, options="size=1m"):
        mnt = tmp_path / name
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True)
        mounted.append(str(mnt))
        return mnt

    yield _mount
    for mnt in reversed(mounted):
        subprocess.run(["umount", mnt], check=False)


@pytest.fixture
def bind(tmp_path):
    assert os.geteuid() == 0, "bind mounts need root: run the tests as root"
    mounted = []

    def _bind(src, name):
        dst = tmp_path / name
        dst.mkdir()
        subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
        mounted.append(str(dst))
        return dst

    yield _bind
    for mnt in reversed(mounted):
        subprocess.run(["umount", mnt], check=False)


def _open_dir(path):
    return os.open(str(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@pytest.fixture
def opened():
    fds = []

    def _open(path):
        fds.append(_open_dir(path))
        return fds[-1]

    yield _open
    for fd in fds:
        os.close(fd)


def _rw_exec(status):
    return (status["method"], status["known"], status["rw"], status["exec"])


# --- real kernel ---------------------------------------------------------------------------

def test_ordinary_directory_is_rw_and_exec(tmp_path, opened):
    fd = opened(tmp_path)
    status = _mounts.mount_status(fd)
    assert _rw_exec(status) == ("statvfs", True, True, True)
    assert status["path"] == str(tmp_path)
    assert status["dev"] == os.stat(str(tmp_path)).st_dev
    assert status["mountpoint"] is not None


def test_read_only_tmpfs_reports_rw_false_and_its_mount_point(tmpfs, opened):
    mnt = tmpfs("ro", "ro,size=1m")
    status = _mounts.mount_status(opened(mnt))
    assert _rw_exec(status) == ("statvfs", True, False, True)
    assert (status["mountpoint"], status["fstype"]) == (str(mnt), "tmpfs")


def test_noexec_tmpfs_reports_exec_false(tmpfs):
    mnt = tmpfs("nx", "noexec,size=1m")
    status = _mounts.mount_status(str(mnt))
    assert _rw_exec(status) == ("statvfs", True, True, False)
    assert status["mountpoint"] == str(mnt)


def test_subdirectory_reports_the_enclosing_tmpfs_mount_point(tmpfs, opened):
    mnt = tmpfs("outer")
    (mnt / "sub" / "deeper").mkdir(parents=True)
    status = _mounts.mount_status(opened(mnt / "sub" / "deeper"))
    assert status["mountpoint"] == str(mnt)
    assert status["path"] == str(mnt / "sub" / "deeper")


def test_mount_point_with_a_space_is_decoded_from_the_kernel_table(tmpfs):
    mnt = tmpfs("with space\tand tab", "ro,size=1m")
    status = _mounts.mount_status(str(mnt))
    assert status["mountpoint"] == str(mnt)
    assert status["rw"] is False


def test_mount_table_answers_when_statvfs_cannot(tmpfs):
    mnt = tmpfs("ro", "ro,noexec,size=1m")
    status = _mounts.mount_status(str(mnt / "not-there"))
    assert _rw_exec(status) == ("mounts", True, False, False)
    assert (status["mountpoint"], status["dev"]) == (str(mnt), None)


def test_nothing_known_fails_closed(tmp_path):
    status = _mounts.mount_status(str(tmp_path / "missing"), mounts_path=str(tmp_path / "no-table"))
    assert _rw_exec(status) == ("unknown", False, None, None)
    assert status["mountpoint"] is None


def test_same_mount_tells_another_filesystem_apart(tmp_path, tmpfs, opened):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mnt = tmpfs("other")
    assert _mounts.same_mount(opened(tmp_path / "a"), opened(tmp_path / "b")) is True
    assert _mounts.same_mount(opened(tmp_path / "a"), opened(mnt)) is False


def test_bind_mount_is_same_filesystem_but_not_same_mount(tmp_path, bind, opened):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    view = bind(src, "view")
    fd_src, fd_view = opened(src), opened(view)
    assert os.fstat(fd_src).st_dev == os.fstat(fd_view).st_dev  # one filesystem, two mounts
    assert _mounts.same_mount(fd_src, fd_view) is False
    # The reason same_mount exists: rename(2) refuses to cross mounts of one filesystem.
    with pytest.raises(OSError) as info:
        os.rename("f", "g", src_dir_fd=fd_src, dst_dir_fd=fd_view)
    assert info.value.errno == errno.EXDEV


def test_same_mount_within_one_directory(tmp_path, opened):
    (tmp_path / "a").mkdir()
    assert _mounts.same_mount(opened(tmp_path), opened(tmp_path / "a")) is True


# --- mount table parser on fixture text ----------------------------------------------------

TABLE = (
    "/dev/vda / ext4 rw,relatime 0 0\n"
    "tmpfs /a/b tmpfs rw,nosuid,nodev 0 0\n"
    "tmpfs /a/b/c tmpfs ro,noexec 0 0\n"
    "server:/x /srv/with\\040space nfs4 rw,noexec 0 0\n"
    "tmpfs /srv/back\\134slash\\011tab tmpfs ro 0 0\n"
    "overlay /over overlay rw 0 0\n"
    "tmpfs /over tmpfs ro,noexec 0 0\n"
)


def _mp(path):
    entry = _mounts.find_mount(path, _mounts.parse_mounts(TABLE))
    return entry and entry["mountpoint"]


@pytest.mark.parametrize("path, mountpoint", [
    ("/a/b/c/d", "/a/b/c"),
    ("/a/b/c", "/a/b/c"),
    ("/a/b/x", "/a/b"),
    ("/a/b", "/a/b"),
    ("/a/bc", "/"),
    ("/a/b/cd", "/a/b"),
    ("/etc/passwd", "/"),
    ("/", "/"),
])
def test_longest_mount_point_prefix_wins_on_whole_components(path, mountpoint):
    assert _mp(path) == mountpoint


def test_octal_escapes_are_decoded():
    entries = _mounts.parse_mounts(TABLE)
    points = [e["mountpoint"] for e in entries]
    assert "/srv/with space" in points
    assert "/srv/back\\slash\ttab" in points
    assert _mp("/srv/with space/file") == "/srv/with space"
    assert _mp("/srv/with") == "/"


def test_later_entry_on_the_same_mount_point_is_the_one_on_top():
    entry = _mounts.find_mount("/over/x", _mounts.parse_mounts(TABLE))
    assert (entry["fstype"], entry["options"]) == ("tmpfs", ["ro", "noexec"])


def test_fixture_table_gives_rw_and_exec_when_statvfs_fails(tmp_path):
    table = tmp_path / "mounts"
    table.write_text(TABLE)
    status = _mounts.mount_status("/srv/with space/no/such/file", mounts_path=str(table))
    assert _rw_exec(status) == ("mounts", True, True, False)
    assert (status["mountpoint"], status["fstype"]) == ("/srv/with space", "nfs4")


def test_short_or_blank_lines_are_skipped():
    assert _mounts.parse_mounts("\n\ngarbage line\n") == []
