# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write-ahead journal of a plan run under state_dir. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import json
import os

from ansible_collections.switchyard.fs.plugins.module_utils import _fsatoms as fs

JOURNAL_SUFFIX = ".journal"
FINAL_STATES = ("committed", "rolled_back", "recovered", "failed_rollback")


class Journal(object):
    """One JSON line per record; the first ("begin") lists every action and the exact backup
    names it will create, so recovery can decide from the filesystem alone what to undo.
    The file is created under a temp name, fsynced, renamed and its directory fsynced before
    the first mutation; the final record is appended and fsynced before the module reports."""

    def __init__(self, dir_fd, name, durability):
        self.dir_fd = dir_fd
        self.name = name
        self.durability = durability

    @classmethod
    def begin(cls, dir_fd, run_id, record, durability):
        name = run_id + JOURNAL_SUFFIX
        data = (json.dumps(dict(record, record="begin"), sort_keys=True) + "\n").encode("utf-8")
        fs.write_file_replace_at(dir_fd, name, data, run_id, durability, mode=0o600)
        return cls(dir_fd, name, durability)

    def append(self, record):
        fd = os.open(self.name, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        try:
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
            self.durability.fsync(fd, "journal %s" % self.name)
        finally:
            os.close(fd)

    def finish(self, state, **extra):
        assert state in FINAL_STATES
        rec = {"record": "end", "state": state}
        rec.update(extra)
        self.append(rec)


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
    for rec in reversed(later):
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


def open_state_dir(root_fd, state_rel_parts, create):
    """Open <state_dir>/journal beneath root; None when it does not exist and create is False."""
    parts = list(state_rel_parts) + ["journal"]
    if create:
        return fs.makedirs_at(root_fd, parts, 0o700)
    fd = os.dup(root_fd)
    try:
        for p in parts:
            try:
                nfd = fs.open_dir_at(fd, p)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return None
                raise
            os.close(fd)
            fd = nfd
        res, fd = fd, None
        return res
    finally:
        if fd is not None:
            os.close(fd)
