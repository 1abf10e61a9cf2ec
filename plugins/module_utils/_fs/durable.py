# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durability: fsync policy (require_backup_durability), syncfs and the group commit of a plan. Private to this collection."""

from __future__ import absolute_import, division, print_function

import ctypes
import errno
import os

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults
from ansible_collections.switchyard.fs.plugins.module_utils._fs.atoms import TEMP_MARKER, libc


class FsyncFailed(OSError):
    """An fsync that policy requires did not succeed."""


class Durability(object):
    """Applies require_backup_durability to every fsync: required, a failed fsync raises FsyncFailed;
    not required, fsyncs are skipped altogether (the rollout knob of the seed) and nothing is durable."""

    def __init__(self, required=True):
        self.required = required
        self.durable = bool(required)
        self.failures = []
        self._fail_at = faults.fsync_failure_at()
        self._count = 0
        self._new_dirs = {}  # st_dev -> own fd on a directory of that filesystem that got a new subdirectory

    def fsync(self, fd, what):
        self._sync(os.fsync, fd, what)

    def syncfs(self, fd, what):
        """Make everything written to the filesystem holding fd durable at once (group commit)."""
        self._sync(_syncfs, fd, what)

    def new_directory(self, parent_fd, name):
        """parent_fd got the new subdirectory `name`.  Its entry is made durable by the next sync, before anything
        written inside it is: one syncfs per filesystem for all the directories created until then (a fresh root
        creates var, var/lib, var/lib/switchyard and its journal directory: one syncfs instead of four fsyncs)."""
        if not self.required:
            return
        dev = os.fstat(parent_fd).st_dev
        if dev not in self._new_dirs:
            self._new_dirs[dev] = os.dup(parent_fd)

    def flush_new_directories(self):
        """syncfs each filesystem that got new directories since the last sync; returns their st_dev values."""
        pending, self._new_dirs = self._new_dirs, {}
        try:
            for fd in pending.values():
                self._do(_syncfs, fd, "new directories (filesystem)")
        finally:
            for fd in pending.values():
                os.close(fd)
        return set(pending)

    def _sync(self, call, fd, what):
        if not self.required:
            return
        if self._new_dirs and os.fstat(fd).st_dev in self.flush_new_directories():
            return  # that syncfs made fd's writes durable too
        self._do(call, fd, what)

    def _do(self, call, fd, what):
        self._count += 1
        faults.kill_point("before_fsync")
        try:
            if self._fail_at is not None and self._count == self._fail_at:
                raise OSError(errno.EIO, "injected fsync failure (%s)" % faults.FAIL_FSYNC_ENV)
            call(fd)
        except OSError as e:
            self.durable = False
            self.failures.append("%s: %s" % (what, e.strerror or e))
            raise FsyncFailed(e.errno or errno.EIO, "fsync of %s failed: %s" % (what, e.strerror or e))


def _syncfs(fd):
    lc = libc()
    fn = getattr(lc, "syncfs", None) if lc is not None else None
    if fn is None:
        os.sync()  # no syncfs(2) wrapper: sync everything (cannot report errors, but never skips data)
        return
    if fn(ctypes.c_int(fd)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class DurableBatch(object):
    """Group commit: files written and directories changed by many actions are made durable together,
    one syncfs per filesystem and one fsync per directory, instead of three fsyncs per action."""

    def __init__(self, durability):
        self.durability = durability
        self._dirs = {}         # (st_dev, st_ino) -> own fd on the directory
        self._filesystems = {}  # st_dev -> (st_dev, st_ino) of a directory on it, for syncfs
        self._temps = {}        # (st_dev, st_ino) -> temp-looking entries of that directory, listed once per plan

    def temps_in(self, dir_fd):
        """The entries of this directory that look like temps ('*.swy-tmp.*'), listed once per batch: a plan with
        many targets in one directory sweeps dead temps without reading the directory once per target."""
        st = os.fstat(dir_fd)
        key = (st.st_dev, st.st_ino)
        if key not in self._temps:
            self._temps[key] = [e for e in os.listdir(dir_fd) if TEMP_MARKER in e]
        return self._temps[key]

    def wrote_in(self, dir_fd):
        """A file's data was written in this directory (and the directory changed)."""
        key = self.changed(dir_fd)
        self._filesystems.setdefault(key[0], key)

    def changed(self, dir_fd):
        """An entry of this directory was created, renamed or removed."""
        st = os.fstat(dir_fd)
        key = (st.st_dev, st.st_ino)
        if key not in self._dirs:
            self._dirs[key] = os.dup(dir_fd)
        return key

    def flush(self, what):
        """syncfs each filesystem written to, then fsync each changed directory once; then start empty."""
        try:
            for key in self._filesystems.values():
                self.durability.syncfs(self._dirs[key], "%s (filesystem)" % what)
            for fd in self._dirs.values():
                self.durability.fsync(fd, "%s (directory)" % what)
        finally:
            self.close()

    def close(self):
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs, self._filesystems = {}, {}
