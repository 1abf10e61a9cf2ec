# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state of one module invocation (Run: root fd, side paths, lock, reporter) and what every stage shares. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import stat
import time
import uuid

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults
from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup_store as bks
from ansible_collections.switchyard.fs.plugins.module_utils._fs import durable
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr
from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts
from ansible_collections.switchyard.fs.plugins.module_utils._errors import AtomicSwapError, LockingError, PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.lock import (
    LockUnavailableError, acquire_lock, lock_dir_error)
from ansible_collections.switchyard.fs.plugins.module_utils._report.reporter import Reporter
from ansible_collections.switchyard.fs.plugins.module_utils._report.stage_events import BY_STAGE
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import open_dir_beneath, open_root
from ansible_collections.switchyard.fs.plugins.module_utils._fs.sidepath import open_anchor, open_side_file


def now_ms():
    return int(time.time() * 1000)


class Run(object):
    """State of one module invocation: root handle, durability, reporter and its typed events, lock.

    Built with its stage, plan id and check mode, all fixed for the run; the caller's Settings are only read
    (a preflight() and then an apply() with the same Settings commit)."""

    def __init__(self, settings, stage, plan_id, check_mode):
        self.s = settings
        self.policy = settings.policy
        self.stage = stage
        self.plan_id = plan_id
        self.check_mode = bool(check_mode)
        self.run_id = str(uuid.uuid4())
        self.root_fd = open_root(settings.root)
        self.durability = durable.Durability(self.policy.require_backup_durability)
        self.rep = Reporter(stage, plan_id, self.run_id, self.check_mode, settings.audit_log,
                            audit_open=self._open_audit_log)
        self.events = BY_STAGE[stage](self.rep)
        self.store = bks.BackupStore(self.root_fd, settings.backup_dir_rel, settings.backup_tag)
        self.lock = None
        self.lock_facts = {"lock_backend": "none", "lock_wait_ms": 0.0, "lock_attempts": 0}
        self.recovery = []
        _mounts.pin_mount_table()

    def close(self):
        _mounts.unpin_mount_table()
        try:
            self.durability.flush_new_directories()  # directories this run created and never synced after
        except OSError:
            pass  # nothing inside them was relied on; the next run that writes there syncs them again
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
            if self.root_fd is not None:
                os.close(self.root_fd)
                self.root_fd = None

    def state_dir(self, create):
        """<state_dir>/journal, beneath root (docs/security.md "Side paths"); None when absent and not create."""
        anchor = open_anchor(self.s.state_side, self.root_fd)
        try:
            return jr.open_state_dir(anchor, self.s.state_side, create, self.durability if create else None)
        finally:
            os.close(anchor)

    def _open_audit_log(self):
        anchor = open_anchor(self.s.audit_side, self.root_fd)
        try:
            return open_side_file(anchor, self.s.audit_side, os.O_WRONLY | os.O_APPEND, 0o640)
        finally:
            os.close(anchor)

    def _open_lock_dir(self):
        """The directory of lock_path, by the one walk beneath root (missing parents made 0755, never through a
        symlink); the lock file itself is then opened in it by name."""
        side = self.s.lock_side
        anchor = open_anchor(side, self.root_fd)
        try:
            return open_dir_beneath(anchor, side.parts[:-1], side.option, side.host_path, create_mode=0o755)[0]
        except OSError as e:
            raise lock_dir_error(e, side.host_path)
        finally:
            os.close(anchor)

    def take_lock(self):
        """The run's lock (docs/locking.md).  Check mode never creates the lock file: it only reports what a
        commit would do."""
        if self.check_mode:
            return
        try:
            lock_dir = self._open_lock_dir()
            try:
                self.lock = acquire_lock(self.s.lock_path, self.s.lock_timeout, self.plan_id, dir_fd=lock_dir,
                                         name=self.s.lock_side.parts[-1])
            finally:
                os.close(lock_dir)
        except LockUnavailableError as e:
            if self.policy.locking == "required" or not self.policy.allow_unlocked_commit:
                raise LockingError("%s; policy.locking is %s and allow_unlocked_commit is %s"
                                   % (e.msg, self.policy.locking, self.policy.allow_unlocked_commit))
            self.events.unlocked(e.msg)
            return
        except LockingError as e:
            self.lock_facts = {"lock_backend": "flock", "lock_wait_ms": round(getattr(e, "wait_ms", 0.0), 3),
                               "lock_attempts": getattr(e, "attempts", 0)}
            raise
        self.lock_facts = {"lock_backend": self.lock.backend, "lock_wait_ms": round(self.lock.wait_ms, 3),
                           "lock_attempts": self.lock.attempts}


def file_state(dir_fd, name, st=None):
    """Diff-friendly description of an entry: kind, link target, sha256, mode, owner. Never bytes."""
    st = st if st is not None else fs.lstat_at(dir_fd, name)
    kind = fs.kind_of(st)
    out = {"kind": kind}
    if st is None:
        return out
    out.update({"mode": "%04o" % stat.S_IMODE(st.st_mode), "owner": "%d:%d" % (st.st_uid, st.st_gid)})
    if kind == "symlink":
        out["link_target"] = fs.readlink_at(dir_fd, name)
    elif kind == "file":
        out["sha256"] = fs.sha256_at(dir_fd, name)
        out["size"] = st.st_size
    return out


def merge_rows(rows, entries, key):
    """One entry per action: its preflight row's findings, then its decision and result (docs/facts.md).  The
    rows become the entries (updated in place: no second copy of every row)."""
    by_key = dict((r[key], r) for r in rows if r.get(key) is not None)
    merged, seen = [], set()
    for e in entries:
        row = by_key.get(e.get(key))
        m = row if row is not None else {}
        m.update(e)
        if row is not None:
            seen.add(e.get(key))
        merged.append(m)
    merged.extend(r for r in rows if r.get(key) not in seen)
    merged.sort(key=lambda m: (m["path"], m.get("action_id") or ""))
    return merged


def begin_side_journal(run, kind, actions):
    """Write-ahead journal of a restore or prune run, before its first mutation (docs/durability.md).

    restore: actions are the target paths; recovery removes the temps the run left next to them.
    prune: actions are (target path, backup_ms); recovery finishes deleting those backups.
    Called only by a run that commits.  Returns (journal, journal dir fd), or (None, None) when nothing will
    be written."""
    if not actions:
        return None, None
    if kind == "restore":
        jactions = [{"target": rel} for rel in actions]
    else:
        jactions = [{"target": rel, "backup_ms": ms} for rel, ms in actions]
    jdir = None
    try:
        jdir = run.state_dir(create=True)
        begin = {"kind": kind, "plan_id": run.plan_id, "run_id": run.run_id, "tag": run.s.backup_tag,
                 "ts_ms": now_ms(), "backup_dir_rel": run.s.backup_dir_rel, "actions": jactions}
        journal = jr.Journal.begin(jdir, run.run_id, begin, run.durability)
        journal.begin_record = begin
    except (OSError, PolicyError) as e:
        if isinstance(e, PolicyError):
            if jdir is not None:
                os.close(jdir)
            raise
        if jdir is not None:
            os.close(jdir)
        raise AtomicSwapError("could not write the write-ahead journal under state_dir %s: %s; nothing was changed"
                              % (run.s.state_rel, e.strerror or e))
    faults.kill_point("after_journal")
    return journal, jdir


def end_side_journal(run, journal, jdir, err):
    """The end record, then retirement.  If it cannot be written the run's leftovers are simply swept
    (restore) or its deletions finished (prune) by the next run: both are idempotent."""
    if journal is None:
        return
    if err is not None and journal.begin_record["kind"] == "prune":
        # A deletion that failed halfway (payload gone, sidecar left) is finished by the next run's
        # recovery, exactly as after a kill: the journal stays unfinished.
        journal.close()
        os.close(jdir)
        return
    try:
        journal.finish("committed", outcome="failure" if err is not None else "success",
                       error_id=err.error_id if err is not None else None)
        jr.retire(jdir, journal.name, journal.begin_record)
    except OSError as e:
        run.rep.warnings.append("journal %s could not be marked finished (%s); the next run sweeps it"
                                % (journal.name, e.strerror or e))
    finally:
        journal.close()
        os.close(jdir)
