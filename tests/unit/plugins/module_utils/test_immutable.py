# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the immutable/append-only probe against the real kernel. Private to this collection."""
from __future__ import absolute_import, division, print_function

import os
import platform
import shutil
import subprocess

import pytest

from ansible_collections.switchyard.fs.plugins.module_utils import _faults
from ansible_collections.switchyard.fs.plugins.module_utils._probes import immutable as _immutable

# Resolved once: some tests take lsattr (and so chattr) off PATH.
CHATTR = shutil.which("chattr")


@pytest.fixture(autouse=True)
def _root_and_chattr():
    """Real inode flags: chattr must be installed and the tests must run as root."""
    assert os.geteuid() == 0, "chattr +i/+a needs root: run the tests as root"
    assert CHATTR, "chattr missing: run scripts/install-system-deps.sh (e2fsprogs)"


@pytest.fixture
def dirfd(tmp_path):
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


@pytest.fixture
def via_ioctl(monkeypatch):
    monkeypatch.delenv(_faults.DISABLE_IOCTL_ENV, raising=False)
    return "ioctl"


@pytest.fixture
def via_lsattr(monkeypatch):
    assert shutil.which("lsattr"), "lsattr missing: run scripts/install-system-deps.sh (e2fsprogs)"
    monkeypatch.setenv(_faults.DISABLE_IOCTL_ENV, "1")
    return "lsattr"


@pytest.fixture(params=["via_ioctl", "via_lsattr"])
def method(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def no_lsattr_on_path(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv(_faults.DISABLE_IOCTL_ENV, "1")
    monkeypatch.setenv("PATH", str(empty))


def _flags(result):
    return (result["method"], result["immutable"], result["append_only"], result["reliable"])


# FS_IOC_GETFLAGS as the kernel headers of each architecture define it (_IOR('f', 1, long)).
KERNEL_FS_IOC_GETFLAGS = {
    "x86_64": 0x80086601, "aarch64": 0x80086601, "riscv64": 0x80086601, "s390x": 0x80086601,
    "i686": 0x80046601, "armv7l": 0x80046601, "ppc64le": 0x40086601, "ppc64": 0x40086601,
}


def test_request_number_matches_kernel_headers():
    machine = platform.machine()
    assert machine in KERNEL_FS_IOC_GETFLAGS, (
        "no known FS_IOC_GETFLAGS for %s: add it from the kernel headers (asm/ioctl.h encoding)" % machine)
    assert _immutable.FS_IOC_GETFLAGS == KERNEL_FS_IOC_GETFLAGS[machine]


def test_plain_file_is_not_immutable(tmp_path, dirfd, method):
    (tmp_path / "f").write_text("x")
    assert _flags(_immutable.detect_flags(dirfd, "f")) == (method, False, False, True)


def test_immutable_file_is_detected(tmp_path, dirfd, chattr, method):
    (tmp_path / "f").write_text("x")
    chattr("i", tmp_path / "f")
    assert _flags(_immutable.detect_flags(dirfd, "f")) == (method, True, False, True)


def test_append_only_file_is_detected(tmp_path, dirfd, chattr, method):
    (tmp_path / "f").write_text("x")
    chattr("a", tmp_path / "f")
    assert _flags(_immutable.detect_flags(dirfd, "f")) == (method, False, True, True)


def test_immutable_subdirectory_entry_is_detected(tmp_path, dirfd, chattr, method):
    (tmp_path / "d").mkdir()
    chattr("i", tmp_path / "d")
    assert _flags(_immutable.detect_flags(dirfd, "d")) == (method, True, False, True)


def test_immutable_directory_itself_is_detected(tmp_path, chattr, method):
    target = tmp_path / "d"
    target.mkdir()
    chattr("i", target)
    fd = os.open(str(target), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _flags(_immutable.detect_dir_flags(fd)) == (method, True, False, True)
    finally:
        os.close(fd)


def test_plain_directory_itself_is_not_immutable(dirfd, method):
    assert _flags(_immutable.detect_dir_flags(dirfd)) == (method, False, False, True)


def test_directory_flags_work_through_an_o_path_handle(tmp_path, chattr, method):
    target = tmp_path / "d"
    target.mkdir()
    chattr("a", target)
    fd = os.open(str(target), os.O_PATH | os.O_DIRECTORY)
    try:
        assert _flags(_immutable.detect_dir_flags(fd)) == (method, False, True, True)
    finally:
        os.close(fd)


def test_symlink_to_immutable_file_is_not_followed(tmp_path, dirfd, chattr, method):
    (tmp_path / "real").write_text("x")
    chattr("i", tmp_path / "real")
    os.symlink("real", str(tmp_path / "link"))
    result = _immutable.detect_flags(dirfd, "link")
    assert _flags(result) == ("not_applicable", False, False, True)
    assert "symlink" in result["detail"]


def test_absent_entry_is_not_applicable(dirfd, method):
    result = _immutable.detect_flags(dirfd, "missing")
    assert _flags(result) == ("not_applicable", False, False, True)
    assert result["detail"] == "absent"


def test_without_ioctl_or_lsattr_the_answer_is_unknown(tmp_path, dirfd, chattr, no_lsattr_on_path):
    (tmp_path / "f").write_text("x")
    chattr("i", tmp_path / "f")
    result = _immutable.detect_flags(dirfd, "f")
    assert _flags(result) == ("unknown", None, None, False)
    assert "lsattr not found" in result["detail"]


def test_directory_without_ioctl_or_lsattr_is_unknown(dirfd, no_lsattr_on_path):
    assert _flags(_immutable.detect_dir_flags(dirfd)) == ("unknown", None, None, False)


def test_filesystem_without_flag_support_is_unknown(via_ioctl):
    # procfs has no fileattr support: the kernel answers ENOTTY and lsattr fails the same way.
    fd = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = _immutable.detect_flags(fd, "status")
    finally:
        os.close(fd)
    assert _flags(result) == ("unknown", None, None, False)
    assert "unsupported (ENOTTY)" in result["detail"]


def test_fifo_is_not_opened_and_is_unknown(tmp_path, dirfd, method):
    os.mkfifo(str(tmp_path / "p"))
    result = _immutable.detect_flags(dirfd, "p")
    assert _flags(result) == ("unknown", None, None, False)
    assert "special file" in result["detail"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_name_must_be_a_single_entry(dirfd, name):
    with pytest.raises(ValueError):
        _immutable.detect_flags(dirfd, name)


def test_immutable_file_on_tmpfs_is_detected(tmp_path, chattr, via_ioctl):
    # tmpfs gained i/a flag support in Linux 6.0; older kernels refuse chattr there.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "f").write_text("x")
        proc = subprocess.run([CHATTR, "+i", str(mnt / "f")], stderr=subprocess.PIPE,
                              universal_newlines=True, check=False)
        if proc.returncode != 0:
            # Only the kernel lacking the ioctl on tmpfs is a skip; any other chattr failure fails.
            unsupported = ("Inappropriate ioctl for device", "Operation not supported")
            assert any(u in proc.stderr for u in unsupported), proc.stderr
            pytest.skip("kernel %s lacks FS_IOC_GETFLAGS/FS_IOC_SETFLAGS on tmpfs (added in Linux 6.0): %s"
                        % (platform.release(), proc.stderr.strip()))
        try:
            fd = os.open(str(mnt), os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert _flags(_immutable.detect_flags(fd, "f")) == ("ioctl", True, False, True)
            finally:
                os.close(fd)
        finally:
            subprocess.run([CHATTR, "-i", str(mnt / "f")], check=False)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("line, expected", [
    ("----i---------e------- /proc/self/fd/3/f\n", (True, False)),
    ("-----a--------e------- /proc/self/fd/3/f\n", (False, True)),
    ("----ia-------------- name with spaces\n", (True, True)),
    ("--------------e------- f\n", (False, False)),
    ("suSDiadAcEjItTeCxFNPVm f", (True, True)),
])
def test_lsattr_flags_column_is_parsed(line, expected):
    assert _immutable.parse_lsattr_line(line) == expected


@pytest.mark.parametrize("line", ["", "   \n", "lsattr: Operation not supported"])
def test_unrecognisable_lsattr_output_is_rejected(line):
    assert _immutable.parse_lsattr_line(line) is None
