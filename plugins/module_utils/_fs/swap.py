# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Swapping an entry into place without a moment where its name is missing: renameat2, checked replace and remove. Private to this collection."""

from __future__ import absolute_import, division, print_function

import ctypes
import errno
import os
import platform
import stat
import time

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults
from ansible_collections.switchyard.fs.plugins.module_utils._fs.atoms import (
    EntryChanged, create_exclusive_at, libc, lstat_at, rename_at, sha256_at, temp_name, unlink_at)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# renameat2(2) syscall numbers, for a libc that predates its wrapper (glibc < 2.28).
_RENAMEAT2_NR = {"x86_64": 316, "aarch64": 276, "ppc64le": 357, "ppc64": 357, "s390x": 347, "i686": 353,
                 "i386": 353, "armv7l": 382, "riscv64": 276, "loongarch64": 276}


def renameat2(src_dirfd, src, dst_dirfd, dst, flags):
    """renameat2(2).  Raises OSError(EINVAL/ENOSYS/ENOTSUP) where the kernel or filesystem lacks `flags`."""
    lc = libc()
    if lc is None:
        raise OSError(errno.ENOSYS, "renameat2: no libc")
    args = (ctypes.c_int(src_dirfd), os.fsencode(src), ctypes.c_int(dst_dirfd), os.fsencode(dst), ctypes.c_uint(flags))
    fn = getattr(lc, "renameat2", None)
    if fn is not None:
        rc = fn(*args)
    else:
        nr = _RENAMEAT2_NR.get(platform.machine())
        if nr is None:
            raise OSError(errno.ENOSYS, "renameat2: unknown syscall number on %s" % platform.machine())
        rc = lc.syscall(ctypes.c_long(nr), *args)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "renameat2(%s -> %s): %s" % (src, dst, os.strerror(err)))


# Errors that mean "this filesystem/kernel cannot do this renameat2 flag", never "the entry changed".
_NO_RENAMEAT2 = frozenset(e for e in (errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", None),
                                      getattr(errno, "EOPNOTSUPP", None)) if e is not None)


class SwapOutcome(object):
    """What came out of the target's place when a temp entry was renamed over it."""

    def __init__(self, method, displaced=None):
        self.method = method        # "exchange" | "noreplace" | "rename"
        self.displaced = displaced  # exchange: the temp name now holding the entry that was at the target


def _swap_into_place(src_dirfd, tmp, dirfd, name, expect):
    """Move the prepared entry `tmp` (in src_dirfd) to `name` (in dirfd) without a moment where `name` is missing.

    expect None: RENAME_NOREPLACE, so an entry that appeared meanwhile is never overwritten.
    Otherwise RENAME_EXCHANGE: the old entry comes out under `tmp` for the caller to check (and to swap
    back when it is not the one that was backed up).  Where the filesystem has neither, a last check of
    the entry and a plain rename (the window is one syscall; facts say which method ran)."""
    flags = RENAME_NOREPLACE if expect is None else RENAME_EXCHANGE
    try:
        renameat2(src_dirfd, tmp, dirfd, name, flags)
    except OSError as e:
        if e.errno not in _NO_RENAMEAT2:
            raise
        if not _same_entry_state(lstat_at(dirfd, name), expect):
            raise EntryChanged(errno.EAGAIN, "%s changed after it was inspected (a concurrent writer?); "
                                             "its new content was left in place" % name)
        rename_at(src_dirfd, tmp, dirfd, name)
        return SwapOutcome("rename")
    if expect is None:
        return SwapOutcome("noreplace")
    return SwapOutcome("exchange", tmp)


ANY_ENTRY = object()  # expect=ANY_ENTRY: replace whatever is there (plain rename)


def replace_checked(dirfd, tmp, name, expect=ANY_ENTRY, src_dirfd=None, expect_hash=None):
    """Rename the prepared entry `tmp` (in src_dirfd, default dirfd) over `name` (no instant without `name`)
    and return the SwapOutcome.

    `expect` is the lstat of the entry the caller inspected (and backed up), or None when `name` must be
    absent.  An exchange that brings out anything else (another inode, or the same one written since) is
    swapped back and raises EntryChanged, so what a package manager wrote meanwhile is never discarded.
    expect_hash: the sha256 the entry had; a regular file changed too recently for its timestamps to prove
    anything (recently_changed) is compared by its bytes too.  `tmp` is gone afterwards in every case."""
    src_dirfd = dirfd if src_dirfd is None else src_dirfd
    try:
        if expect is ANY_ENTRY:
            rename_at(src_dirfd, tmp, dirfd, name)
            outcome = SwapOutcome("rename")
        else:
            outcome = _swap_into_place(src_dirfd, tmp, dirfd, name, expect)
    except BaseException:
        unlink_at(src_dirfd, tmp)
        raise
    if outcome.displaced is not None:
        out = lstat_at(src_dirfd, outcome.displaced)
        same = _same_entry_state(out, expect)
        if same and expect_hash and stat.S_ISREG(out.st_mode) and recently_changed(out):
            same = sha256_at(src_dirfd, outcome.displaced) == expect_hash
        if not same:
            renameat2(src_dirfd, outcome.displaced, dirfd, name, RENAME_EXCHANGE)
            unlink_at(src_dirfd, outcome.displaced)
            raise EntryChanged(errno.EAGAIN, "%s changed after it was inspected (a concurrent writer?); "
                                             "its new content was left in place" % name)
        unlink_at(src_dirfd, outcome.displaced)
    return outcome


def remove_checked(dirfd, name, expect, run_id):
    """Remove `name` only if it is still the entry inspected (`expect`): it is first renamed to a temp name
    (RENAME_NOREPLACE), checked there, and put back when a concurrent writer had replaced it."""
    tmp = temp_name(name, run_id)
    try:
        renameat2(dirfd, name, dirfd, tmp, RENAME_NOREPLACE)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        if e.errno not in _NO_RENAMEAT2:
            raise
        rename_at(dirfd, name, dirfd, tmp)
    if not _same_entry_state(lstat_at(dirfd, tmp), expect):
        try:
            renameat2(dirfd, tmp, dirfd, name, RENAME_NOREPLACE)
        except OSError as e:
            if e.errno not in _NO_RENAMEAT2:
                raise  # the name was taken again meanwhile: the writer's entry stays under the temp name
            rename_at(dirfd, tmp, dirfd, name)
        raise EntryChanged(errno.EAGAIN, "%s changed after it was inspected (a concurrent writer?); "
                                         "its new content was left in place" % name)
    unlink_at(dirfd, tmp)


def symlink_replace_at(dirfd, name, link_text, run_id, durability, expect=ANY_ENTRY, batch=None, expect_hash=None):
    """symlinkat under a temp name, swap it into `name` (replace_checked), fsync the directory (or leave
    that to batch.flush())."""
    tmp = temp_name(name, run_id)
    os.symlink(link_text, tmp, dir_fd=dirfd)
    faults.kill_point("before_rename")
    outcome = replace_checked(dirfd, tmp, name, expect, expect_hash=expect_hash)
    faults.kill_point("after_rename")
    if batch is None:
        durability.fsync(dirfd, "directory of %s" % name)
    else:
        batch.changed(dirfd)
    return outcome


# File timestamps come from the kernel's coarse clock (one tick, up to 10 ms; more on some filesystems), so
# two writes within one tick leave the same mtime.  A stat comparison proves "unchanged" only for a file
# whose mtime is older than this when it is checked; a younger one is compared by its bytes.  (ctime cannot
# serve: linking and renaming, which the engine itself does, move it.)
TIMESTAMP_SLACK_NS = 100 * 1000 * 1000


def recently_changed(st, now_ns=None):
    """True when st's mtime is too close to now for a timestamp comparison to prove anything."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return st.st_mtime_ns > now_ns - TIMESTAMP_SLACK_NS


def _same_entry_state(st, expect):
    """Same inode and unwritten since it was inspected: a write in place moves mtime (or size).  ctime is
    not compared: the rename that brought the entry out moves it."""
    if st is None or expect is None:
        return st is None and expect is None
    return ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            == (expect.st_dev, expect.st_ino, expect.st_size, expect.st_mtime_ns))


def write_file_replace_at(dirfd, name, data, run_id, durability, mode=0o644, batch=None):
    """Write bytes to a temp name, fsync, renameat over `name`, fsync the directory.
    With a DurableBatch both syncs are left to batch.flush()."""
    tmp = temp_name(name, run_id)
    fd = create_exclusive_at(dirfd, tmp, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if batch is None:
                durability.fsync(fd, name)
        finally:
            os.close(fd)
        rename_at(dirfd, tmp, dirfd, name)
    except BaseException:
        unlink_at(dirfd, tmp)
        raise
    if batch is None:
        durability.fsync(dirfd, "directory of %s" % name)
    else:
        batch.wrote_in(dirfd)
