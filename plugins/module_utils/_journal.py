# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write-ahead journal of a plan run under state_dir. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import fcntl
import json
import os

from ansible_collections.switchyard.fs.plugins.module_utils import _fsatoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._safepath import open_dirs_below, open_side_dir

JOURNAL_SUFFIX = ".journal"
FINAL_STATES = ("committed", "rolled_back", "recovered", "failed_rollback")


class Journal(object):
    """One JSON line per record; the first ("begin") lists every action and the exact backup
    names it will create, so recovery can decide from the filesystem alone what to undo.
    The file is created under a temp name, fsynced, renamed and its directory fsynced before
    the first mutation; the final record is appended and fsynced before the module reports.

    The writer holds an exclusive flock on the journal for as long as the plan runs: the kernel
    drops it when the process dies, so recovery can tell a crashed plan (lock free) from one
    another process is still running without the process lock (lock held)."""

    def __init__(self, dir_fd, name, durability, fd):
        self.dir_fd = dir_fd
        self.name = name
        self.durability = durability
        self.fd = fd

    @classmethod
    def begin(cls, dir_fd, run_id, record, durability):
        name = run_id + JOURNAL_SUFFIX
        data = (json.dumps(dict(record, record="begin"), sort_keys=True) + "\n").encode("utf-8")
        tmp = fs.temp_name(name, run_id)
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            # Locked before it has its real name: no other process ever sees it unlocked while we run.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_all(fd, data)
            durability.fsync(fd, "journal %s" % name)
            fs.rename_at(dir_fd, tmp, dir_fd, name)
        except BaseException:
            os.close(fd)
            fs.unlink_at(dir_fd, tmp)
            raise
        journal = cls(dir_fd, name, durability, fd)
        try:
            durability.fsync(dir_fd, "journal directory")
        except BaseException:
            # Nothing was mutated yet: withdraw the journal rather than leave a plan to recover.
            fs.unlink_at(dir_fd, name)
            journal.close()
            raise
        return journal

    @classmethod
    def claim(cls, dir_fd, name, durability):
        """Open an existing journal for recovery; None when its writer is still alive (locked).
        On a read-only filesystem the handle is read-only: liveness is still known, appends fail."""
        try:
            fd = os.open(name, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return cls(dir_fd, name, durability, fd)

    def append(self, record, sync=True):
        """Append one record.  A line torn by a crash is terminated first, so it cannot swallow
        this record.  sync=False for progress records that recovery never relies on."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        size = os.fstat(self.fd).st_size
        if size and os.pread(self.fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        half = len(line) // 2
        _write_all(self.fd, line[:half])
        fs.fault_point("mid_journal")
        _write_all(self.fd, line[half:])
        if sync:
            self.durability.fsync(self.fd, "journal %s" % self.name)

    def progress(self, action_id, state):
        self.append({"record": "action", "action_id": action_id, "state": state}, sync=False)

    def finish(self, state, **extra):
        """Append the final record.  If it cannot be made durable it is withdrawn (best effort), so a
        crash before a later end record leaves the plan unfinished, to be recovered."""
        if state not in FINAL_STATES:
            raise AssertionError("journal end state %r is not one of %s" % (state, ", ".join(FINAL_STATES)))
        rec = {"record": "end", "state": state}
        rec.update(extra)
        try:
            self.append(rec)
        except OSError:
            try:
                self.append({"record": "reopen", "state": state}, sync=False)
            except OSError:
                pass
            raise

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_journal(dir_fd, name):
    """(begin record, list of later records).  A torn last line (crash mid-append) is ignored."""
    data = fs.read_small_at(dir_fd, name)
    records = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    if not records or records[0].get("record") != "begin":
        return None, []
    return records[0], records[1:]


def final_state(later):
    """The state of the last "end" record, or None while the plan is unfinished.  A "reopen" record
    after it (an end record whose fsync failed) makes the plan unfinished again."""
    for rec in reversed(later):
        if rec.get("record") == "reopen":
            return None
        if rec.get("record") == "end":
            return rec.get("state")
    return None


def list_journals(dir_fd):
    """Every readable journal: [(name, begin, later)], oldest first by begin timestamp."""
    out = []
    for name in os.listdir(dir_fd):
        if not name.endswith(JOURNAL_SUFFIX) or name.startswith("."):
            continue
        try:
            begin, later = read_journal(dir_fd, name)
        except (OSError, ValueError):
            continue
        if begin is not None:
            out.append((name, begin, later))
    out.sort(key=lambda t: (t[1].get("ts_ms", 0), t[0]))
    return out


def remove_dead_temps(dir_fd):
    """Drop journal temps a crash left before their rename (no mutation followed them).  A temp whose
    writer is alive is still flocked and stays."""
    for name in os.listdir(dir_fd):
        if fs.TEMP_MARKER not in name:
            continue
        try:
            journal = Journal.claim(dir_fd, name, None)
        except OSError:
            continue
        if journal is not None:
            try:
                fs.unlink_at(dir_fd, name)
            except OSError:
                pass  # e.g. a read-only root: harmless, list_journals never reads temps
            finally:
                journal.close()


def open_state_dir(anchor_fd, side, create, durability=None):
    """Open <state_dir>/journal (a SidePath resolved from anchor_fd); None when absent and create is False.

    state_dir and its journal directory are private (0700); missing parents are made 0755 through no symlink."""
    sfd = open_side_dir(anchor_fd, side, create, 0o700, 0o755, durability)
    if sfd is None:
        return None
    try:
        return open_dirs_below(sfd, ["journal"], create, 0o700, side.option, side.host_path, durability)
    finally:
        os.close(sfd)
