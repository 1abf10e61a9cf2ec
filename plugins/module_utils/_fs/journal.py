# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write-ahead journal of a plan run under state_dir. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import fcntl
import json
import os
import re
import uuid

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs.journal_check import sort_key_ms
from ansible_collections.switchyard.fs.plugins.module_utils._fs.sidepath import open_dirs_below, open_side_dir

JOURNAL_SUFFIX = ".journal"
FINAL_STATES = ("committed", "rolled_back", "recovered", "failed_rollback")
MAX_JOURNAL_BYTES = 16 << 20


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
        faults.kill_point("mid_journal")
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
    """(begin record, list of later records).  A torn last line (crash mid-append) is ignored, and so is
    any line that is not a JSON object (garbage, too deeply nested): records are dicts, nothing more is
    promised here; journal_check.check_begin() validates a begin record before anything uses it."""
    data = fs.read_small_at(dir_fd, name, MAX_JOURNAL_BYTES)
    records = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line, parse_int=_bounded_int)
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict):
            records.append(rec)
    if not records or records[0].get("record") != "begin":
        return None, []
    return records[0], records[1:]


def _bounded_int(text):
    """No journal integer needs more than 24 digits; int() of a huge one is quadratic on old Pythons."""
    if len(text.lstrip("-")) > 24:
        raise ValueError("integer with more than 24 digits")
    return int(text)


def final_state(later):
    """The state of the last "end" record, or None while the plan is unfinished.  A "reopen" record
    after it (an end record whose fsync failed) makes the plan unfinished again.  An end record whose
    state is not a short string is ignored."""
    for rec in reversed(later):
        if rec.get("record") == "reopen":
            return None
        if rec.get("record") == "end" and isinstance(rec.get("state"), str) and 0 < len(rec["state"]) <= 64:
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
    out.sort(key=lambda t: (sort_key_ms(t[1]), t[0]))
    return out


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


# -- retirement and retention of finished journals ----------------------------------------------
#
# A finished journal (one with a durable "end" record) is moved out of the journal directory into
# journal/done/, so every run's recovery reads only unfinished (or live) journals: its cost does not
# grow with history.  done/ keeps the newest JOURNAL_RETENTION journals (by begin time, which leads
# their names) for safe_restore plan_id=...; older ones are deleted when a journal is retired.

DONE_DIR = "done"
JOURNAL_RETENTION = 1000
_NIL_UUID = "00000000-0000-0000-0000-000000000000"
_DONE_RE = re.compile(r"^(\d{13})\.([0-9a-f-]{36})\.([0-9a-f-]{36})\.journal$")


def _uuid_or(value, default):
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else default
    except ValueError:
        return default


def done_name(begin):
    """<ts_ms>.<plan_id>.<run_id>.journal, from validated fields only (never a path read from disk)."""
    ts = begin.get("ts_ms")
    ts = ts if isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts < 10 ** 13 else 0
    return "%013d.%s.%s%s" % (ts, _uuid_or(begin.get("plan_id"), _NIL_UUID),
                              _uuid_or(begin.get("run_id"), str(uuid.uuid4())), JOURNAL_SUFFIX)


def retire(dir_fd, name, begin, retention=None, expire_now=True):
    """Move the finished journal `name` into done/ and (expire_now) expire the oldest beyond the
    retention.  Best effort: a journal that stays (read-only root, lost rename) is finished, and the
    next run that may write retires it.  Returns True when it was moved."""
    faults.kill_point("before_retire")
    try:
        done_fd = fs.makedirs_at(dir_fd, [DONE_DIR], 0o700)
    except OSError:
        return False
    try:
        try:
            fs.rename_at(dir_fd, name, done_fd, done_name(begin))
        except OSError:
            return False
        if expire_now:
            expire(done_fd, JOURNAL_RETENTION if retention is None else retention)
        return True
    finally:
        os.close(done_fd)


def expire_retired(dir_fd, retention=None):
    """expire() on journal/done/ once, after retiring many journals in a row."""
    try:
        done_fd = fs.open_dir_at(dir_fd, DONE_DIR)
    except OSError:
        return 0
    try:
        return expire(done_fd, JOURNAL_RETENTION if retention is None else retention)
    except OSError:
        return 0
    finally:
        os.close(done_fd)


def expire(done_fd, keep):
    """Delete the oldest finished journals so that at most `keep` remain; returns how many went."""
    names = sorted(n for n in os.listdir(done_fd) if _DONE_RE.match(n))
    gone = 0
    for n in names[:max(0, len(names) - keep)]:
        try:
            fs.unlink_at(done_fd, n)
            gone += 1
        except OSError:
            pass
    return gone


def finished_journals_of(dir_fd, plan_id):
    """[(name, begin, later)] of the retired journals of plan_id, oldest first.  Reads only the files
    whose name carries plan_id."""
    try:
        done_fd = fs.open_dir_at(dir_fd, DONE_DIR)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return []
        raise
    out = []
    try:
        for n in sorted(os.listdir(done_fd)):
            m = _DONE_RE.match(n)
            if not m or m.group(2) != plan_id:
                continue
            try:
                begin, later = read_journal(done_fd, n)
            except (OSError, ValueError):
                continue
            if begin is not None:
                out.append((n, begin, later))
    finally:
        os.close(done_fd)
    return out
