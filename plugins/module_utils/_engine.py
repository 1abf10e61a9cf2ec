# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine: plan -> preflight -> apply -> rollback, restore, prune, recovery. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import os
import stat
import time
import traceback
import uuid

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults
from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr
from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts
from ansible_collections.switchyard.fs.plugins.module_utils._gates import row as grow
from ansible_collections.switchyard.fs.plugins.module_utils._gates import target as gtarget
from ansible_collections.switchyard.fs.plugins.module_utils._gates import mounts as gmounts
from ansible_collections.switchyard.fs.plugins.module_utils._gates import source as gsource
from ansible_collections.switchyard.fs.plugins.module_utils._gates import backup as gbackup
from ansible_collections.switchyard.fs.plugins.module_utils._gates import rescue as grescue
from ansible_collections.switchyard.fs.plugins.module_utils._probes import packages as _packages
from ansible_collections.switchyard.fs.plugins.module_utils._probes import smoke as _smoke
from ansible_collections.switchyard.fs.plugins.module_utils._errors import (
    SwitchyardError, PolicyError, LockingError, AtomicSwapError, RestoreFailedError, SmokeError,
    BackupMissingError, InternalError, ERROR_CLASSES)
from ansible_collections.switchyard.fs.plugins.module_utils._fs.lock import acquire_lock, lock_dir_error, LockUnavailableError
from ansible_collections.switchyard.fs.plugins.module_utils._plan import Action, Plan
from ansible_collections.switchyard.fs.plugins.module_utils._policy import resolve_policy
from ansible_collections.switchyard.fs.plugins.module_utils._report import Reporter
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import (
    normalize_root, relative_to_root, resolve_beneath, open_root, follow_beneath, side_path,
    open_anchor, open_dir_beneath, open_side_file, NAME_MAX)


# Journal kinds other than apply: their recovery sweeps or rolls forward, it never undoes.
SIDE_KINDS = ("restore", "prune")


def _now_ms():
    return int(time.time() * 1000)


class Settings(object):
    """The options every module shares (SPEC section 3), validated before anything is touched."""

    def __init__(self, root="/", preset="default", policy=None, lock_path=None, lock_timeout=5.0, state_dir=None,
                 backup_tag="switchyard", audit_log=None, check_mode=False):
        self.root = normalize_root(root)
        self.policy = resolve_policy(preset or "default", policy or {})
        # Side paths (docs/security.md "Side paths"): inside root, or outside only when the knob says so.
        outside = self.policy.allow_side_paths_outside_root
        self.lock_path = lock_path or os.path.join(self.root, "run/lock/switchyard.lock")
        self.lock_side = side_path(self.root, self.lock_path, "lock_path", outside)
        if lock_timeout is None or lock_timeout < 0:
            raise PolicyError("lock_timeout=%r must be a number of seconds >= 0" % (lock_timeout,))
        self.lock_timeout = float(lock_timeout)
        self.state_side = side_path(self.root, state_dir or os.path.join(self.root, "var/lib/switchyard"), "state_dir",
                                    outside)
        self.state_rel = self.state_side.rel
        self.backup_tag = backup_tag
        bk.BackupStore(None, None, backup_tag)  # validates the tag
        self.audit_log = audit_log
        self.audit_side = side_path(self.root, audit_log, "audit_log", outside) if audit_log else None
        self.check_mode = check_mode
        self.backup_dir_rel = None
        if self.policy.backup_dir:
            self.backup_dir_rel = relative_to_root(self.root, os.path.join(self.root, self.policy.backup_dir.lstrip("/")),
                                                   "policy.backup_dir")


class Run(object):
    """State of one module invocation: root handle, durability, reporter, lock."""

    def __init__(self, settings, stage, plan_id):
        self.s = settings
        self.policy = settings.policy
        self.run_id = str(uuid.uuid4())
        self.root_fd = open_root(settings.root)
        self.durability = fs.Durability(self.policy.require_backup_durability)
        self.rep = Reporter(stage, plan_id, self.run_id, settings.check_mode, settings.audit_log,
                            audit_open=self._open_audit_log)
        self.store = bk.BackupStore(self.root_fd, settings.backup_dir_rel, settings.backup_tag)
        self.lock = None
        self.lock_facts = {"lock_backend": "none", "lock_wait_ms": 0.0, "lock_attempts": 0}
        self.recovery = []
        _mounts.pin_mount_table()

    def close(self):
        _mounts.unpin_mount_table()
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

    # -- locking (SPEC section 8) -------------------------------------------------------------
    def take_lock(self):
        """Check mode never creates the lock file; it only reports what a commit would do."""
        if self.s.check_mode:
            return
        try:
            lock_dir = self._open_lock_dir()
            try:
                self.lock = acquire_lock(self.s.lock_path, self.s.lock_timeout, self.rep.plan_id, dir_fd=lock_dir,
                                         name=self.s.lock_side.parts[-1])
            finally:
                os.close(lock_dir)
        except LockUnavailableError as e:
            if self.policy.locking == "required" or not self.policy.allow_unlocked_commit:
                raise LockingError("%s; policy.locking is %s and allow_unlocked_commit is %s"
                                   % (e.msg, self.policy.locking, self.policy.allow_unlocked_commit))
            self.rep.event("apply.attempt", "warn", msg="running without a lock: %s" % e.msg, lock_backend="none")
            return
        except LockingError as e:
            self.lock_facts = {"lock_backend": "flock", "lock_wait_ms": round(getattr(e, "wait_ms", 0.0), 3),
                               "lock_attempts": getattr(e, "attempts", 0)}
            raise
        self.lock_facts = {"lock_backend": self.lock.backend, "lock_wait_ms": round(self.lock.wait_ms, 3),
                           "lock_attempts": self.lock.attempts}

    # -- recovery (SPEC section 4.7) ------------------------------------------------------------
    def recover(self):
        jdir = self.state_dir(create=False)
        if jdir is None:
            return
        try:
            if not self.s.check_mode:
                jr.remove_dead_temps(jdir)
            retired = 0
            for name, begin, later in jr.list_journals(jdir):
                if jr.final_state(later) is not None:
                    if not self.s.check_mode:
                        # Finished (e.g. left by 0.1.0): out of the way of every later run.
                        retired += jr.retire(jdir, name, begin, expire_now=False)
                    continue
                journal = jr.Journal.claim(jdir, name, self.durability)
                if journal is None:
                    # Its writer still holds the journal's flock: a live plan of another process, not a crash.
                    pid, rid = _journal_ids(name, begin)
                    self.rep.event("recovery", "warn", recovered_plan_id=pid, recovered_run_id=rid,
                                   msg="plan %s is still running in another process; left alone" % pid)
                    continue
                try:
                    # Re-read under the flock: the writer may have finished between listing and claiming.
                    begin, later = jr.read_journal(jdir, name)
                    if begin is None or jr.final_state(later) is not None:
                        continue
                    try:
                        # Untrusted like option input: nothing of a bad record is used, least of all as a path.
                        jr.check_begin(name, begin, kinds=("apply",) + SIDE_KINDS)
                    except jr.JournalInvalid as e:
                        pid, rid = _journal_ids(name, begin)
                        result = {"ok": False, "plan_id": pid, "run_id": rid, "paths": [], "dry_run": self.s.check_mode,
                                  "msg": "could not roll back plan %s: %s; nothing was undone from it. Inspect the "
                                         "journal under state_dir %s and the targets of that plan by hand"
                                         % (pid, e, self.s.state_rel)}
                    else:
                        # safe_restore plan_id=<this plan> is the documented way out of "stop": it may undo it.
                        undoing_it = self.rep.stage == "restore" and self.rep.plan_id == begin["plan_id"]
                        # An interrupted restore or prune left no half-done state, only leftovers to sweep.
                        side = begin.get("kind") in SIDE_KINDS
                        if (self.policy.on_unfinished_plan == "stop" and not self.s.check_mode and not undoing_it
                                and not side):
                            raise PolicyError("plan %s (run %s) was interrupted and is unfinished; run any module with "
                                              "policy.on_unfinished_plan: rollback, or safe_restore plan_id=%s"
                                              % (begin["plan_id"], begin["run_id"], begin["plan_id"]))
                        result = self._recover_side(begin) if side else self._recover_one(begin)
                    if not self.s.check_mode:
                        try:
                            journal.finish("recovered" if result["ok"] else "failed_rollback", by_run=self.run_id)
                            jr.retire(jdir, name, begin)
                        except OSError as e:
                            # The undo is idempotent: an unmarked journal is simply recovered again next run.
                            result["ok"] = False
                            result["msg"] += "; could not mark journal %s finished: %s" % (name, e)
                finally:
                    journal.close()
                self.recovery.append(result)
                self.rep.event("recovery", "success" if result["ok"] else "failure", recovered_plan_id=result["plan_id"],
                               recovered_run_id=result["run_id"], paths=result["paths"], msg=result["msg"])
                if not result["ok"] and not self.s.check_mode:
                    # Never carry on over a root a crash left inconsistent (SPEC 4.7).
                    raise RestoreFailedError("%s; nothing else was done. Inspect the paths, then use safe_restore "
                                             "plan_id=%s or targets=... to finish by hand" % (result["msg"], result["plan_id"]))
            if retired:
                jr.expire_retired(jdir)
        finally:
            os.close(jdir)

    def _journal_target(self, act, errors):
        """The target of a (checked) journal action resolved beneath root, or None with the reason in errors."""
        try:
            return resolve_beneath(self.s.root, os.path.join(self.s.root, act["target"].lstrip("/")),
                                   "journal target", self.root_fd)
        except SwitchyardError as e:
            errors.append(e.msg)
            return None

    def _recover_one(self, begin):
        paths, errors = [], []
        # Backups live where the interrupted run put them, whatever this run's policy.backup_dir says.
        store = bk.BackupStore(self.root_fd, begin.get("backup_dir_rel", self.s.backup_dir_rel), begin["tag"])
        for act in reversed(begin.get("actions", [])):
            target = self._journal_target(act, errors)
            if target is None:
                continue
            try:
                if not self.s.check_mode:  # check mode (and so preflight) reports, never mutates
                    _remove_temps(target.parent_fd, target.name, begin["run_id"])
                bdir = store.dir_for(target, create=False)
                if bdir is None:
                    continue
                try:
                    if not self.s.check_mode:
                        for name in (bk.payload_name(target.name, begin["tag"], act["backup_ms"]),
                                     bk.sidecar_name(target.name, begin["tag"], act["backup_ms"])):
                            _remove_temps(bdir, name, begin["run_id"])
                    changed = self._undo_action(target, bdir, act, begin["tag"])
                finally:
                    os.close(bdir)
                if changed:
                    paths.append(act["target"])
            except (SwitchyardError, OSError) as e:
                errors.append("%s: %s" % (act["target"], getattr(e, "msg", None) or e))
            finally:
                target.close()
        ok = not errors
        msg = ("rolled back %d action(s) of interrupted plan %s" % (len(paths), begin["plan_id"]) if ok
               else "could not fully roll back plan %s: %s" % (begin["plan_id"], "; ".join(errors)))
        return {"ok": ok, "plan_id": begin["plan_id"], "run_id": begin["run_id"], "paths": paths, "msg": msg,
                "dry_run": self.s.check_mode}

    def _recover_side(self, begin):
        """Finish an interrupted restore or prune from the filesystem alone, idempotently.

        restore: remove the temps (symlink or file) its run left next to each target; every target is
        either still as it was or already restored, and the backups are untouched.
        prune: delete what is left of each backup it had decided to delete (sidecar and payload): the
        deletion is rolled forward, so no orphan sidecar or payload stays behind."""
        paths, errors = [], []
        kind = begin["kind"]
        for act in begin.get("actions", []):
            target = self._journal_target(act, errors)
            if target is None:
                continue
            try:
                if kind == "restore":
                    if _remove_temps(target.parent_fd, target.name, begin["run_id"], dry_run=self.s.check_mode):
                        paths.append(act["target"])
                    continue
                ms = act["backup_ms"]
                if isinstance(ms, bool) or not isinstance(ms, int):
                    raise PolicyError("journal backup_ms %r is not an integer" % (ms,))
                store = bk.BackupStore(self.root_fd, begin.get("backup_dir_rel", self.s.backup_dir_rel), begin["tag"])
                bdir = store.dir_for(target, create=False)
                if bdir is None:
                    continue
                try:
                    names = [bk.sidecar_name(target.name, begin["tag"], ms), bk.payload_name(target.name, begin["tag"], ms)]
                    left = [n for n in names if fs.lstat_at(bdir, n) is not None]
                    if left and not self.s.check_mode:
                        for n in left:
                            fs.unlink_at(bdir, n)
                        self.durability.fsync(bdir, "backup directory of %s" % act["target"])
                    if left:
                        paths.append(act["target"])
                finally:
                    os.close(bdir)
            except (SwitchyardError, OSError, KeyError) as e:
                errors.append("%s: %s" % (act.get("target"), getattr(e, "msg", None) or e))
            finally:
                target.close()
        ok = not errors
        what = "swept the temps of" if kind == "restore" else "finished deleting the backups of"
        msg = ("%s interrupted %s %s (%d path(s))" % (what, kind, begin["plan_id"], len(paths)) if ok
               else "could not finish interrupted %s %s: %s" % (kind, begin["plan_id"], "; ".join(errors)))
        return {"ok": ok, "plan_id": begin["plan_id"], "run_id": begin["run_id"], "paths": paths, "msg": msg,
                "dry_run": self.s.check_mode}

    def _undo_action(self, target, bdir, act, tag):
        """Undo one journaled action from what the filesystem shows; True when something changed."""
        sname = bk.sidecar_name(target.name, tag, act["backup_ms"])
        pname = bk.payload_name(target.name, tag, act["backup_ms"])
        bad = None
        try:
            parsed = bk.load_sidecar(bdir, sname, tag)
            meta = parsed.meta if parsed is not None else None
            if meta is not None and meta["prior_kind"] != "absent":
                pst = fs.lstat_at(bdir, pname)
                if pst is not None:
                    bk.check_payload_kind(sname, meta["prior_kind"], pst)
        except bk.sc.SidecarInvalid as e:
            meta, bad = None, e
        st = target.lstat()
        swapped = fs.kind_of(st) == "symlink" and fs.readlink_at(target.parent_fd, target.name) == act["link_text"]
        if not swapped:
            # The swap never happened (or was undone).  The plan's backup is dropped only while it merely
            # duplicates the target: if something else replaced the target since, it is the last copy.
            if self.s.check_mode:
                return False
            if meta is None:
                if fs.lstat_at(bdir, pname) is not None and _same_entry(target, bdir, pname):
                    fs.unlink_at(bdir, pname)  # payload without sidecar (or with an unusable one): a duplicate
                    if bad is not None:
                        fs.unlink_at(bdir, sname)
            elif bk.target_matches_backup(target, bk.Backup(bdir, act["backup_ms"], sname, meta),
                                          self.policy.preservation_tier):
                bk.remove_backup(bk.Backup(bdir, act["backup_ms"], sname, meta), self.durability)
            return False
        if bad is not None:
            raise RestoreFailedError("%s was swapped but its backup is unusable: %s; left as is"
                                     % (act["target"], bad), path=act["target"])
        if meta is None:
            raise RestoreFailedError("%s was swapped but its backup %s has no complete sidecar; left as is"
                                     % (act["target"], pname), path=act["target"])
        backup = bk.Backup(bdir, act["backup_ms"], sname, meta)
        if self.s.check_mode:
            return True
        bk.verify_backup(backup, self.policy)
        bk.restore_backup(target, backup, self.policy, self.durability, self.run_id, consume=True)
        return True


def _recovery_changed(run):
    """A recovery that ran for real changed the root: it put targets back, or at least removed the
    interrupted plan's leftover backups and temps and closed its journal."""
    return any(r["paths"] or not r["dry_run"] for r in run.recovery)


_NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _journal_ids(name, begin):
    """(plan_id, run_id) of a journal for reports: the record's own when they are UUIDs, else the run id in the
    journal's name, else the nil UUID.  Never raises on a garbage record."""
    begin = begin if isinstance(begin, dict) else {}
    stem = name[:-len(jr.JOURNAL_SUFFIX)] if name.endswith(jr.JOURNAL_SUFFIX) else ""

    def ok(value):
        return isinstance(value, str) and jr._UUID_RE.match(value) is not None
    rid = begin.get("run_id") if ok(begin.get("run_id")) else (stem if ok(stem) else _NIL_UUID)
    pid = begin.get("plan_id") if ok(begin.get("plan_id")) else _NIL_UUID
    return pid, rid


def _same_entry(target, bdir, pname):
    """True when backup payload pname holds what the target holds (same inode, or same bytes)."""
    tst, pst = target.lstat(), fs.lstat_at(bdir, pname)
    if tst is None or pst is None:
        return False
    if (tst.st_dev, tst.st_ino) == (pst.st_dev, pst.st_ino):
        return True
    if stat.S_ISREG(tst.st_mode) and stat.S_ISREG(pst.st_mode):
        return fs.sha256_at(target.parent_fd, target.name) == fs.sha256_at(bdir, pname)
    if stat.S_ISLNK(tst.st_mode) and stat.S_ISLNK(pst.st_mode):
        return fs.readlink_at(target.parent_fd, target.name) == fs.readlink_at(bdir, pname)
    return False


def _discard_partial_backup(run, la, bdir):
    """Remove what create_backup left when it failed: names reserved for this run (backup_ms) and temps."""
    tag = run.s.backup_tag
    _remove_temps(la.target.parent_fd, la.target.name, run.run_id)
    _remove_temps(bdir, bk.payload_name(la.target.name, tag, la.backup_ms), run.run_id)
    _remove_temps(bdir, bk.sidecar_name(la.target.name, tag, la.backup_ms), run.run_id)
    fs.unlink_at(bdir, bk.sidecar_name(la.target.name, tag, la.backup_ms))
    fs.unlink_at(bdir, bk.payload_name(la.target.name, tag, la.backup_ms))
    run.durability.fsync(bdir, "backup directory of %s" % la.link["target"])


def _remove_temps(dir_fd, name, run_id, dry_run=False):
    """Remove (or with dry_run only list) the temps run_id left for `name`; returns their names."""
    prefix = ".%s%s%s." % (name, fs.TEMP_MARKER, run_id[:8])
    found = []
    for entry in os.listdir(dir_fd):
        if entry.startswith(prefix):
            found.append(entry)
            if not dry_run:
                fs.unlink_at(dir_fd, entry)
    return found


# ---------------------------------------------------------------------------------------------
# Input validation: everything fails with E_POLICY before anything is touched.

def _normalize_links(settings, links):
    if not isinstance(links, list) or not links:
        raise PolicyError("links must be a non-empty list of {source, target}")
    out, seen = [], {}
    for i, link in enumerate(links):
        if not isinstance(link, dict) or set(link) - {"source", "target"} or "source" not in link or "target" not in link:
            raise PolicyError("links[%d]=%r must be a dict with exactly source and target" % (i, link))
        trel = relative_to_root(settings.root, link["target"], "links[%d].target" % i)
        srel = relative_to_root(settings.root, link["source"], "links[%d].source" % i)
        if trel in seen:
            raise PolicyError("links[%d].target=%r duplicates links[%d].target; each target may appear once per plan"
                              % (i, link["target"], seen[trel]))
        if trel == srel:
            raise PolicyError("links[%d]: source and target are both %r" % (i, link["target"]))
        _check_backup_name_budget(settings, trel, "links[%d].target" % i, link["target"])
        seen[trel] = i
        out.append({"target": trel, "source": srel, "target_host": link["target"], "source_host": link["source"],
                    "index": i})
    return out


def _check_backup_name_budget(settings, rel, option, given):
    """The longest name a run derives from a target (the temp name of its sidecar) must fit in one component:
    a name that cannot work is refused here, not discovered halfway through an apply."""
    name = rel.rsplit("/", 1)[-1]
    longest = fs.temp_name(bk.sidecar_name(name, settings.backup_tag, 10 ** 14), "0" * 36)
    if len(os.fsencode(longest)) > NAME_MAX:
        raise PolicyError("%s=%r: its backup and temp names would be %d bytes, over the %d-byte limit of a file name; "
                          "use a shorter backup_tag (now %r) or a shorter file name"
                          % (option, given, len(os.fsencode(longest)), NAME_MAX, settings.backup_tag))


def _reject_aliases(resolved, labels):
    """Two inputs naming one directory entry (however spelled: /bin/ls and /usr/bin/ls on a merged-/usr root)
    are one target: refuse the plan, naming both.  Identity is (parent dev, parent inode, name)."""
    seen = {}
    for r, label in zip(resolved, labels):
        key = _entry_key(r.parent_fd, r.name)
        if key in seen:
            raise PolicyError("%s and %s name the same file (%s); list each target once"
                              % (seen[key], label, r.real_rel))
        seen[key] = label


def _check_target_aliases(run, rels, option):
    """Refuse restore/prune targets that name one entry twice (before the lock, before anything is touched)."""
    resolved = []
    try:
        for i, rel in enumerate(rels):
            resolved.append(resolve_beneath(run.s.root, os.path.join(run.s.root, rel.lstrip("/")),
                                            "%s[%d]" % (option, i), run.root_fd))
        _reject_aliases(resolved, ["%s[%d]=%r" % (option, i, os.path.join(run.s.root, rel.lstrip("/")))
                                   for i, rel in enumerate(rels)])
    finally:
        for r in resolved:
            r.close()


def _entry_key(dir_fd, name):
    st = os.fstat(dir_fd)
    return (st.st_dev, st.st_ino, name)


def _normalize_targets(settings, targets, option="targets"):
    if not isinstance(targets, list) or not targets:
        raise PolicyError("%s must be a non-empty list of paths" % option)
    rels, seen = [], set()
    for i, t in enumerate(targets):
        rel = relative_to_root(settings.root, t, "%s[%d]" % (option, i))
        _check_backup_name_budget(settings, rel, "%s[%d]" % (option, i), t)
        if rel in seen:
            raise PolicyError("%s[%d]=%r is listed twice" % (option, i, t))
        seen.add(rel)
        rels.append(rel)
    return rels


def _inspect_entry(target, label):
    """(lstat, link text or None) of one consistent state of the entry: a symlink replaced between the lstat
    and the readlink is looked at again, a few times, then reported as a clean error."""
    for _attempt in range(5):
        st = target.lstat()
        if st is None or not stat.S_ISLNK(st.st_mode):
            return st, None
        try:
            text = fs.readlink_at(target.parent_fd, target.name)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                continue
            raise
        again = target.lstat()
        if again is not None and (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino):
            return st, text
    raise AtomicSwapError("%s keeps changing while it is inspected (another process is replacing it); nothing was "
                          "done for it: retry when it is quiet" % label, path=label)


class LinkAction(object):
    def __init__(self, action, link, target, src_info):
        self.action = action
        self.link = link
        self.target = target
        self.src_info = src_info  # (real_rel, stat) of the source's final file
        self.st, self.link_text = _inspect_entry(target, link["target_host"])
        self.kind = fs.kind_of(self.st)
        self.noop = self.kind == "symlink" and self.link_text == link["source"]
        self.row = None
        self.backup = None
        self.backup_durable = None
        self.backup_ms = None
        self.swap_method = None
        self.before = None
        self.result = None


def plan(settings, links):
    """The plan apply(settings, links) will run, with the same plan_id and action_ids; touches nothing.

    Validates the links exactly as apply does (raises PolicyError naming the bad input)."""
    return _plan_of(_normalize_links(settings, links))


def _plan_of(norm):
    return Plan("apply", [Action("link", link["target"], link["source"]) for link in norm])


def _restore_plan(rels, which):
    """The plan of safe_restore targets=rels which=which; safe_preflight restores=... uses the same ids."""
    return Plan("restore", [Action("restore", r) for r in rels], extra={"which": which})


def _resolve_links(run, norm):
    """Resolve every link beneath root; refuse aliased targets and sources that lead to a target of the plan."""
    plan = _plan_of(norm)
    by_target = dict((l["target"], l) for l in norm)
    links = [by_target[a.target] for a in plan.actions]
    targets = []
    acts = []
    parents = {}  # one open handle per target directory, however many targets it holds
    mounts = {}   # one mount probe per source directory
    try:
        for link in links:
            targets.append(resolve_beneath(run.s.root, link["target_host"], "target %s" % link["target_host"],
                                           run.root_fd))
            targets[-1].share_parent(parents)
        _reject_aliases(targets, ["links[%d].target=%r" % (l["index"], l["target_host"]) for l in links])
        target_keys = dict((_entry_key(t.parent_fd, t.name), l) for t, l in zip(targets, links))
        for a, link, target in zip(plan.actions, links, targets):
            src_real, sst, smount = _resolve_source(run, link, target_keys, mounts)
            la = LinkAction(a, link, target, (src_real, sst, smount))
            acts.append(la)
            if la.kind in ("directory", "other"):
                raise PolicyError("target %s is a %s; only files, symlinks and absent paths can be replaced by a link"
                                  % (link["target_host"], la.kind))
    except BaseException:
        for t in targets:
            t.close()
        raise
    return plan, acts


class _SourceLoopError(PolicyError):
    """A source chain that reaches a target of its own plan."""


def _dir_mount_status(cache, dir_fd):
    """_mounts.mount_status of a directory, probed once per directory inode in a run (the dict is only read)."""
    st = os.fstat(dir_fd)
    key = (st.st_dev, st.st_ino)
    if key not in cache:
        cache[key] = _mounts.mount_status(dir_fd)
    return cache[key]


def _resolve_source(run, link, target_keys, mounts=None):
    """(in-root real path, lstat, mount status) of the file the source finally resolves to.  A source whose
    chain passes through any target of the plan would make the new link point at itself (or at another
    link of the same plan): invalid input."""
    def visit(dir_fd, name):
        hit = target_keys.get(_entry_key(dir_fd, name))
        if hit is not None:
            what = ("itself" if hit is link else "links[%d].target=%r, which this plan replaces"
                    % (hit["index"], hit["target_host"]))
            raise _SourceLoopError("links[%d].source=%r resolves to %s; the swap would create a link loop: point the "
                                   "source at the provider's real file" % (link["index"], link["source_host"], what))
    try:
        sfd, sparent, sname = follow_beneath(run.root_fd, link["source"], "source %s" % link["source_host"], visit)
    except _SourceLoopError:
        raise
    except PolicyError as e:
        raise PolicyError("source %s does not resolve inside root: %s; install the provider or fix the path"
                          % (link["source_host"], e.msg))
    try:
        sst = fs.lstat_at(sfd, sname)
        if sst is None:
            raise PolicyError("source %s does not exist; install the provider first or fix links[].source"
                              % link["source_host"])
        return ((sparent.rstrip("/") + "/" + sname), sst,
                _dir_mount_status(mounts, sfd) if mounts is not None else _mounts.mount_status(sfd))
    finally:
        os.close(sfd)


def _link_rows(run, acts):
    """Preflight rows for link actions: every gate of SPEC section 6, for real (docs/preflight.md)."""
    policy = run.policy
    ctx = grow.PreflightContext(run.s.root, run.root_fd, policy)
    aliases = _packages.merged_usr_aliases(run.root_fd)
    names = {}
    for la in acts:
        names[la.link["target"]] = sorted(set(_packages.path_aliases(la.link["target"], aliases)
                                              + _packages.path_aliases(la.target.real_rel, aliases)))
    db = _packages.package_owners(run.s.root, [n for la in acts if la.st is not None for n in names[la.link["target"]]])
    alternatives = _packages.alternatives_choices(run.root_fd)
    replaced = {}
    for la in acts:
        replaced[la.link["target"]] = la.link["target"]
        replaced[la.target.real_rel] = la.link["target"]
    rescue = grescue.rescue_gate(run.s.root, run.root_fd, policy, replaced) if policy.require_rescue else None
    extra = _mounts.probe_extra_mounts(run.root_fd, policy.extra_mount_checks)
    mounts = {}  # one mount probe per target directory
    rows = []
    for la in acts:
        row = grow.Row(la.action.action_id, la.link["target"], "link")
        d = row.data
        d.update({"source": la.link["source"], "current_kind": la.kind, "planned_kind": "symlink",
                  "noop": la.noop, "link_text": la.link["source"]})
        gtarget.path_policy_gate(row, policy, la.link["target"], la.target.real_rel)
        # An already-swapped target is not written again, so only a changing one needs a writable mount.
        d["mount"] = gmounts.mount_verdict(row, "the target directory of %s" % la.link["target"],
                                           _dir_mount_status(mounts, la.target.parent_fd), not la.noop, True)
        src_real, sst, smount = la.src_info
        # The source is only linked to and executed, never written: exec is required, rw is not (docs/preflight.md).
        d["source_mount"] = gmounts.mount_verdict(row, "source %s of %s" % (la.link["source"], la.link["target"]), smount,
                                                  False, True)
        gsource.source_trust_gate(row, policy, la.link["source"], src_real, sst, run.s.root, run.root_fd)
        gmounts.extra_mount_gate(row, extra)
        if not la.noop:
            gtarget.immutable_gate(row, policy, la.target.parent_fd, la.target.name)
            gtarget.hazard_gates(row, policy, la.st, la.target.parent_fd, la.target.name)
            gtarget.ownership_gate(row, policy, names[la.link["target"]], la.st, db, la.link_text, alternatives)
            gbackup.backup_gates(row, ctx, run.store, run.s.backup_dir_rel, la.target, la.kind)
        else:
            d["immutable_detection_method"] = "not_applicable"
        grescue.rescue_verdict(row, rescue, (la.link["target"],))
        la.row = row
        rows.append(row)
    return rows, rescue


def _finish_rows(run, rows):
    """Sorted rows, one preflight event each, a preflight.summary; returns (rows, stops).

    override_preflight turns every STOP into a warning (the row keeps policy_ok false and says overridden)."""
    rows = sorted(rows, key=lambda r: (r.data["path"], r.data["action_id"]))
    stops = []
    for r in rows:
        d = r.data
        if run.policy.override_preflight and d["stops"]:
            for s in d["stops"]:
                d["warnings"].append("overridden STOP (policy.override_preflight): " + s["msg"])
            d["overridden"] = True
        elif d["stops"]:
            stops.extend(d["stops"])
        decision = "failure" if (d["stops"] and not d.get("overridden")) else ("warn" if d["warnings"] else "success")
        run.rep.event("preflight", decision, action_id=d["action_id"], path=d["path"], policy_ok=d["policy_ok"],
                      current_kind=d.get("current_kind"), planned_kind=d.get("planned_kind"),
                      stops=[s["msg"] for s in d["stops"]] or None,
                      knobs=sorted(set(s["knob"] for s in d["stops"])) or None, warnings=d["warnings"] or None)
        for w in d["warnings"]:
            run.rep.warnings.append("%s: %s" % (d["path"], w))
    warnings = sum(len(r.data["warnings"]) for r in rows)
    run.rep.event("preflight.summary", "failure" if stops else ("warn" if warnings else "success"), rows=len(rows),
                  stops=len(stops), warnings=warnings,
                  stop_paths=sorted(set(r.data["path"] for r in rows if r.data["stops"] and not r.data.get("overridden"))),
                  overridden=sum(1 for r in rows if r.data.get("overridden")))
    return [r.data for r in rows], stops


def _stop_error(stops, keep_specific=True):
    """The error a STOP maps to.  In apply, E_EXDEV, E_BACKUP_MISSING and E_RESTORE_FAILED keep their own id;
    everything else (and everything in safe_preflight, keep_specific=False) is E_POLICY with the specific
    causes (E_OWNERSHIP, E_EXDEV, ...) first in summary_error_ids."""
    ids = []
    for s in stops:
        if s["error_id"] not in ids:
            ids.append(s["error_id"])
    specific = [i for i in ids if i != "E_POLICY"]
    msg = "preflight found %d STOP%s: %s" % (len(stops), "" if len(stops) == 1 else "s",
                                             "; ".join(s["msg"] for s in stops))
    if keep_specific and specific and specific[0] in ("E_EXDEV", "E_BACKUP_MISSING", "E_RESTORE_FAILED"):
        return ERROR_CLASSES[specific[0]](msg, path=None, cause_ids=specific[1:])
    return PolicyError(msg, cause_ids=specific)


# ---------------------------------------------------------------------------------------------

def _file_state(dir_fd, name, st=None):
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


def preflight(settings, links=None, restores=None, which="latest", fail_on_stop=True):
    """Run every gate for real, change nothing.  Returns (report, error or None)."""
    norm = _normalize_links(settings, links) if links else []
    rrels = _normalize_targets(settings, restores, "restores") if restores else []
    if not norm and not rrels:
        raise PolicyError("safe_preflight needs links and/or restores")
    # One plan, one id: link rows carry the ids safe_apply (and its check mode) gives the same links, restore
    # rows the ids safe_restore targets=... which=... gives.  With both, the report's plan_id is the apply plan's.
    link_plan = _plan_of(norm) if norm else None
    restore_plan = _restore_plan(rrels, which) if rrels else None
    plan_id = (link_plan or restore_plan).plan_id
    actions = (link_plan.actions if link_plan else []) + (restore_plan.actions if restore_plan else [])
    run = Run(settings, "preflight", plan_id)
    run.s.check_mode = True  # preflight never mutates, whatever the task's check mode
    run.rep.dry_run = True
    acts = []
    try:
        run.rep.event("plan", actions=len(actions), preset=run.policy.preset)
        _check_target_aliases(run, rrels, "restores")
        run.recover()
        rows = []
        if norm:
            _lplan, acts = _resolve_links(run, norm)
            lrows, _rescue = _link_rows(run, acts)
            rows.extend(lrows)
        for a in (restore_plan.actions if restore_plan else []):
            rows.append(_restore_row(run, a, which))
        rows, stops = _finish_rows(run, rows)
        err = _stop_error(stops, keep_specific=False) if (stops and fail_on_stop) else None
        summary = {"rows": len(rows), "stops": len(stops), "warnings": sum(len(r["warnings"]) for r in rows),
                   "policy_ok": not stops, "dry_run": True}
        report = run.rep.report(summary, root=settings.root, preset=run.policy.preset, policy=run.policy.as_dict(),
                                rows=rows, recovery=run.recovery)
        return report, err, run.rep.warnings
    finally:
        for la in acts:
            la.target.close()
        run.rep.flush_audit_log()
        run.close()


def _restore_row(run, action, which):
    """Restore readiness: path policy, a writable target directory, a complete verified backup, nothing there that
    restore would refuse to replace, immutable flags and the preservation probe of the target directory."""
    target = resolve_beneath(run.s.root, os.path.join(run.s.root, action.target.lstrip("/")), "restores", run.root_fd)
    try:
        row = grow.Row(action.action_id, action.target, "restore")
        st = target.lstat()
        row.data["current_kind"] = fs.kind_of(st)
        gtarget.path_policy_gate(row, run.policy, action.target, target.real_rel)
        bdir = run.store.dir_for(target, create=False)
        scan = run.store.scan(target, bdir) if bdir is not None else bk.Scan()
        backups = scan.usable
        try:
            for r in scan.rejected:
                row.warn(r.describe())
            b = gbackup.restore_ready_gate(row, run.policy, backups, which)
            if b is None and scan.rejected and row.data["stops"]:
                # Name every unusable sidecar (file and field) in the STOP itself, not only in the warnings.
                row.data["stops"][-1]["msg"] += " (%s)" % "; ".join(r.describe() for r in scan.rejected)
            if b is not None:
                row.data["planned_kind"] = b.prior_kind
                row.data["noop"] = bk.target_matches_backup(target, b, run.policy.preservation_tier)
                if not row.data["noop"]:
                    # Restore writes a temp file in the target directory and renames it over the target.
                    row.data["mount"] = gmounts.mount_gate(row, "the target directory of %s" % action.target, target.parent_fd,
                                                           True, False)
                    gbackup.restore_target_gate(row, row.data["current_kind"])
                    gtarget.immutable_gate(row, run.policy, target.parent_fd, target.name)
                    if b.prior_kind == "file":
                        ctx = grow.PreflightContext(run.s.root, run.root_fd, run.policy)
                        gbackup.preservation_gate(row, ctx, [("the target directory", target.parent_fd)])
        finally:
            if bdir is not None:
                os.close(bdir)
        return row
    finally:
        target.close()


def apply(settings, links, smoke=None):
    """Preflight under the lock, journal, back up, swap, fsync, smoke; roll back on any failure."""
    norm = _normalize_links(settings, links)
    checks = _smoke.validate_checks(smoke)
    run = Run(settings, "apply", None)
    acts = []
    try:
        plan, acts = _resolve_links(run, norm)
        run.rep.plan_id = plan.plan_id
        if run.policy.smoke == "required" and checks is None:
            checks = "resolve"
        run.rep.event("plan", actions=len(acts), preset=run.policy.preset)
        try:
            run.take_lock()
        except LockingError as e:
            # Report the real wait and attempt count: nothing was touched.
            run.rep.event("apply.attempt", "failure", msg=e.msg, **run.lock_facts)
            base = {"root": settings.root, "preset": run.policy.preset, "policy": run.policy.as_dict(), "rows": [],
                    "recovery": []}
            base.update(run.lock_facts)
            return _apply_report(run, acts, base, e, [], False), e, run.rep.warnings
        run.recover()
        # Resolved above only to reject bad input before touching anything (the lock file included);
        # what another run or the recovery changed while we waited is seen only from under the lock.
        stale, acts = acts, []
        for la in stale:
            la.target.close()
        del stale  # not kept alive beside the fresh resolution: a second copy of every action until the end
        plan, acts = _resolve_links(run, norm)
        rows, _rescue = _link_rows(run, acts)
        rows, stops = _finish_rows(run, rows)
        todo = [la for la in acts if not la.noop]
        base = {"root": settings.root, "preset": run.policy.preset, "policy": run.policy.as_dict(), "rows": rows,
                "recovery": run.recovery}
        base.update(run.lock_facts)
        if stops:
            err = _stop_error(stops)
            run.rep.event("apply.attempt", "failure", msg=err.msg, **run.lock_facts)
            return _apply_report(run, acts, base, err, [], False), err, run.rep.warnings
        run.rep.event("apply.attempt", "success", actions=len(todo), **run.lock_facts)
        for la in acts:
            la.before = _file_state(la.target.parent_fd, la.target.name, la.st)
        if not todo:
            return _apply_report(run, acts, base, None, [], False), None, run.rep.warnings
        if run.s.check_mode:
            for la in todo:
                la.result = "changed"
                la.swap_method = "noreplace" if la.st is None else "exchange"  # what a commit would try first
                _apply_event(run, la, "success")
            return _apply_report(run, acts, base, None, [], False), None, run.rep.warnings
        return _commit(run, plan, acts, todo, checks, base)
    finally:
        for la in acts:
            la.target.close()
        run.rep.flush_audit_log()
        run.close()


def _apply_event(run, la, decision, msg=None):
    run.rep.event("apply.result", decision, action_id=la.action.action_id, path=la.link["target"],
                  source=la.link["source"], result=la.result, hash_alg=fs.HASH_ALG,
                  before_hash=(la.before or {}).get("sha256"),
                  backup_durable=la.backup_durable if la.backup_durable is not None else run.durability.durable, msg=msg)


def _commit(run, plan, acts, todo, checks, base):
    s = run.s
    jdir = None
    journal = None
    bdirs = {}
    try:
        now = _now_ms()
        try:
            jdir = run.state_dir(create=True)
            jactions = []
            reserved = set()  # backup names of the whole plan, chosen before the first mutation
            by_inode = {}  # one open handle per backup directory, however many actions back up into it
            for la in todo:
                bdir = run.store.dir_for(la.target, create=True, durability=run.durability)
                bst = os.fstat(bdir)
                if (bst.st_dev, bst.st_ino) in by_inode:
                    os.close(bdir)
                    bdir = by_inode[(bst.st_dev, bst.st_ino)]
                else:
                    by_inode[(bst.st_dev, bst.st_ino)] = bdir
                bdirs[la.action.action_id] = bdir
                la.backup_ms = run.store.next_ms(la.target, bdir, now, reserved)
                jactions.append({"action_id": la.action.action_id, "target": la.link["target"],
                                 "link_text": la.link["source"], "backup_ms": la.backup_ms, "prior_kind": la.kind})
            begin = {"kind": "apply", "plan_id": plan.plan_id, "run_id": run.run_id, "tag": s.backup_tag, "ts_ms": now,
                     "backup_dir_rel": s.backup_dir_rel, "actions": jactions}
            journal = jr.Journal.begin(jdir, run.run_id, begin, run.durability)
        except (OSError, PolicyError) as e:
            # Nothing was swapped yet: fail the plan without touching any target.
            if isinstance(e, PolicyError):  # state_dir or backup_dir refused (docs/security.md "Side paths")
                err = PolicyError("%s; nothing was changed" % e.msg)
            else:
                err = AtomicSwapError("could not write the write-ahead journal under state_dir %s: %s; nothing was "
                                      "changed" % (s.state_rel, e.strerror or e))
            run.rep.event("apply.result", "failure", msg=err.msg, backup_durable=run.durability.durable)
            return _apply_report(run, acts, base, err, [], False), err, run.rep.warnings
        faults.kill_point("after_journal")
        done, err, failed = [], None, None
        batch = fs.DurableBatch(run.durability)
        try:
            # Group commit, phase 1: every backup and sidecar, then all of them durable together (one syncfs
            # per filesystem, one fsync per backup directory) and a journal record saying so.
            for la in todo:
                try:
                    _back_up(run, la, bdirs[la.action.action_id], batch)
                    done.append(la)
                except Exception as e:  # noqa: broad-except -- after the first mutation every failure rolls back
                    failed = la
                    done.append(la)
                    err = _classify(e, la)
                    break
            if err is None:
                try:
                    batch.flush("backups")
                    journal.append({"record": "backups_durable", "actions": len(todo)})
                    faults.kill_point("backups_durable")
                except Exception as e:  # noqa: broad-except
                    err = _classify(e, None)
            # Phase 2: every swap, then each target directory durable once.
            if err is None:
                for la in todo:
                    try:
                        _swap(run, la, batch)
                    except Exception as e:  # noqa: broad-except
                        failed = la
                        err = _classify(e, la)
                        break
                    try:
                        journal.progress(la.action.action_id, "swapped")
                    except OSError:
                        pass  # advisory only: recovery decides from the filesystem, never from progress records
                if err is None:
                    try:
                        batch.flush("swaps")
                    except Exception as e:  # noqa: broad-except
                        err = _classify(e, None)
        finally:
            batch.close()
        smoke_results = []
        if err is None and checks is not None:
            try:
                smoke_results = _smoke.run_checks(s.root, run.root_fd, checks, [l.link for l in acts],
                                                  host_fallback=run.policy.smoke_host_fallback)
            except Exception as e:  # noqa: broad-except -- the swap is done: roll it back and say why
                err = _classify(e, None)
            else:
                bad = [r for r in smoke_results if not r["ok"]]
                run.rep.event("apply.result", "failure" if bad else "success", msg="smoke checks",
                              smoke=[dict(r) for r in smoke_results])
                if bad:
                    detail = "; ".join("%s: %s" % (r["name"], r["detail"]) for r in bad)
                    err = SmokeError("smoke check failed: %s" % detail)
        if err is None:
            try:
                journal.finish("committed")
                jr.retire(jdir, journal.name, begin)
                return _apply_report(run, acts, base, None, [], True, smoke_results), None, run.rep.warnings
            except OSError as e:
                # Unrecorded, the commit would be rolled back by the next run anyway: do it now, and say so.
                err = AtomicSwapError("could not record the commit in journal %s: %s" % (journal.name, e.strerror or e))
        rolled = []
        if failed is not None and failed.result is None:
            failed.result = "failed"
        final = "committed"
        if run.policy.auto_rollback:
            rolled, rb_err = _rollback(run, done, bdirs)
            final = "rolled_back" if rb_err is None else "failed_rollback"
            if rb_err is not None:
                err = RestoreFailedError("%s; rollback was incomplete: %s" % (err.msg, rb_err.msg),
                                         cause_ids=err.summary_error_ids)
        try:
            if final == "committed":
                journal.finish(final, note="failure without auto_rollback")
            else:
                journal.finish(final)
            jr.retire(jdir, journal.name, begin)
        except OSError as e:
            err = err.__class__("%s; journal %s could not be marked %s (%s), so the next run will check this plan "
                                "again" % (err.msg, journal.name, final, e.strerror or e), path=err.path,
                                cause_ids=err.cause_ids)
        report = _apply_report(run, acts, base, err, rolled, True, smoke_results)
        return report, err, run.rep.warnings
    finally:
        if journal is not None:
            journal.close()
        for fd in set(bdirs.values()):
            os.close(fd)
        if jdir is not None:
            os.close(jdir)


def _classify(e, la):
    """The typed error for an exception raised after the first mutation (la: the action it came from, if any)."""
    if isinstance(e, SwitchyardError):
        return e
    where = la.link["target"] if la is not None else None
    prefix = ("%s: " % where) if where else ""
    if isinstance(e, fs.FsyncFailed):
        return AtomicSwapError("%s%s (policy.require_backup_durability is true)" % (prefix, e.strerror), path=where)
    if isinstance(e, fs.EntryChanged):
        return AtomicSwapError("%s%s" % (prefix, e.strerror), path=where)
    if isinstance(e, OSError):
        return AtomicSwapError("%s%s" % (prefix, e), path=where)
    err = InternalError("%sinternal error %s: %s" % (prefix, e.__class__.__name__, e), path=where)
    err.trace = traceback.format_exc()
    return err


def _back_up(run, la, bdir, batch):
    """Phase 1 for one action: its backup (made durable later by batch).  On failure la.backup stays None
    and the rollback removes whatever half-made backup is left."""
    same = _mounts.same_mount(bdir, la.target.parent_fd)
    st = la.target.lstat()
    if (st is None) != (la.st is None) or (st is not None and (st.st_ino, st.st_dev) != (la.st.st_ino, la.st.st_dev)):
        raise AtomicSwapError("%s changed between preflight and apply; nothing was swapped for it" % la.link["target"],
                              path=la.link["target"])
    la.backup = bk.create_backup(la.target, st, bdir, la.backup_ms, run.s.backup_tag,
                                 {"plan_id": run.rep.plan_id, "action_id": la.action.action_id}, run.policy,
                                 run.durability, run.run_id, same,
                                 known_hash=(bk.content_key(la.st), (la.before or {}).get("sha256")) if la.st else None,
                                 batch=batch)


def _swap(run, la, batch):
    """Phase 2 for one action: exchange the new link with the backed-up entry (its directory synced by batch)."""
    outcome = fs.symlink_replace_at(la.target.parent_fd, la.target.name, la.link["source"], run.run_id,
                                    run.durability, expect=la.backup.expect, batch=batch,
                                    expect_hash=la.backup.meta.get("payload_hash"))
    la.swap_method = outcome.method
    # Its backup was made durable with the plan's (phase 1); skipped fsyncs (policy) make nothing durable.
    la.backup_durable = run.durability.durable
    la.result = "changed"
    _apply_event(run, la, "success")


def _rollback(run, done, bdirs):
    """Reverse order, the failed action included.  Returns (rolled back paths, error or None)."""
    rolled, errors = [], []
    for la in reversed(done):
        try:
            if la.backup is None:
                # The target was never touched, but a half-made backup may be left: a payload hard link
                # (which would trip the hard-link gate next run), a sidecar whose directory fsync failed, temps.
                _discard_partial_backup(run, la, bdirs[la.action.action_id])
                continue
            swapped = (la.target.kind() == "symlink"
                       and fs.readlink_at(la.target.parent_fd, la.target.name) == la.link["source"])
            if swapped:
                bk.verify_backup(la.backup, run.policy)
                bk.restore_backup(la.target, la.backup, run.policy, run.durability, run.run_id, consume=True)
            else:
                bk.remove_backup(la.backup, run.durability)
            la.result = "rolled_back"
            rolled.append(la.link["target"])
            run.rep.event("rollback", "success", action_id=la.action.action_id, path=la.link["target"])
        except Exception as e:  # noqa: broad-except -- one failed undo must not stop the others
            errors.append("%s: %s" % (la.link["target"], getattr(e, "msg", None) or e))
            la.result = "rollback_failed"
            run.rep.event("rollback", "failure", action_id=la.action.action_id, path=la.link["target"],
                          msg=errors[-1])
    run.rep.event("rollback.summary", "failure" if errors else "success", paths=rolled,
                  failed=len(errors))
    return rolled, (RestoreFailedError("; ".join(errors)) if errors else None)


def _apply_report(run, acts, base, err, rolled, committed, smoke_results=()):
    actions = []
    for la in acts:
        after = None
        if la.noop:
            result = "unchanged"
        else:
            result = la.result or ("skipped" if err is not None else "changed")
        if committed:
            after = _file_state(la.target.parent_fd, la.target.name)
        elif result == "changed":
            after = {"kind": "symlink", "link_target": la.link["source"], "mode": "0777", "owner": "0:0"}
        else:
            after = la.before
        a = {"action_id": la.action.action_id, "path": la.link["target"], "source": la.link["source"], "result": result,
             "hash_alg": fs.HASH_ALG, "before_hash": (la.before or {}).get("sha256"),
             "after_hash": (after or {}).get("sha256"), "before": la.before, "after": after,
             "backup_durable": la.backup_durable if la.backup is not None else None, "swap_method": la.swap_method}
        if la.backup is not None and result == "changed":
            a["backup"] = la.backup.describe()
        actions.append(a)
    actions.sort(key=lambda a: (a["path"], a["action_id"]))
    if err is None:
        changed = any(a["result"] == "changed" for a in actions)
    else:
        # After a complete rollback the filesystem is as it was; anything else did change it.
        changed = any(a["result"] in ("changed", "rollback_failed") for a in actions)
    changed = changed or _recovery_changed(run)
    summary = {"actions": len(actions), "changed": sum(1 for a in actions if a["result"] == "changed"),
               "unchanged": sum(1 for a in actions if a["result"] == "unchanged"),
               "rolled_back": len(rolled), "backup_durable": run.durability.durable,
               "decision": "failure" if err is not None else "success"}
    if err is not None:
        summary["error_id"] = err.error_id
        summary["summary_error_ids"] = err.summary_error_ids
    base = dict(base)
    actions = _merge_rows(base.pop("rows", []), actions, "action_id")
    report = run.rep.report(summary, actions=actions, rolled_back_paths=rolled, **base)
    report["smoke"] = list(smoke_results)
    report["changed"] = bool(changed)
    return report


def _merge_rows(rows, entries, key):
    """One entry per action: its preflight row's findings, then its decision and result (docs/facts.md)."""
    by_key = dict((r[key], r) for r in rows if r.get(key) is not None)
    merged, seen = [], set()
    for e in entries:
        row = by_key.get(e.get(key))
        m = dict(row) if row is not None else {}
        m.update(e)
        if row is not None:
            seen.add(e.get(key))
        merged.append(m)
    merged.extend(r for r in rows if r.get(key) not in seen)
    merged.sort(key=lambda m: (m["path"], m.get("action_id") or ""))
    return merged


def _plan_backups(run, plan_id):
    """[(target, backup_ms, tag)] of everything plan_id changed, newest run first per target: the same plan
    applied again (say after a package upgrade re-swapped some targets) journals only what it changed, so
    every journal of the plan counts, and per target its newest backup wins.  E_BACKUP_MISSING when none."""
    jdir = run.state_dir(create=False)
    newest = {}
    if jdir is not None:
        try:
            # Retired (finished) journals, then the live directory.
            for name, begin, _later in jr.finished_journals_of(jdir, plan_id) + jr.list_journals(jdir):
                if not isinstance(begin, dict) or begin.get("plan_id") != plan_id or begin.get("kind") != "apply":
                    continue
                try:
                    jr.check_begin(name, begin)
                except jr.JournalInvalid as e:
                    raise RestoreFailedError("%s; nothing was restored from it. Restore by targets instead" % e)
                for a in begin["actions"]:
                    if a["target"] not in newest or a["backup_ms"] > newest[a["target"]][1]:
                        newest[a["target"]] = (a["target"], a["backup_ms"], begin["tag"])
        finally:
            os.close(jdir)
    if not newest:
        raise BackupMissingError("no journal of plan_id %s under state_dir %s; restore by targets instead"
                                 % (plan_id, run.s.state_rel))
    return [newest[t] for t in sorted(newest, reverse=True)]


def restore(settings, targets=None, plan_id=None, which="latest"):
    """Restore targets from their latest/previous complete backup, or undo everything one apply did."""
    if bool(targets) == bool(plan_id):
        raise PolicyError("safe_restore needs exactly one of targets or plan_id")
    if which not in ("latest", "previous"):
        raise PolicyError("which=%r must be latest or previous" % (which,))
    plan = None
    if plan_id:
        try:
            plan_id = str(uuid.UUID(plan_id))
        except (ValueError, TypeError, AttributeError):
            raise PolicyError("plan_id=%r is not a UUID; use the plan_id a safe_apply returned" % (plan_id,))
    else:
        plan = _restore_plan(_normalize_targets(settings, targets), which)
    run = Run(settings, "restore", plan_id or plan.plan_id)
    prepared, results, rows = [], [], []
    try:
        try:
            return _restore_run(run, plan, which, prepared, results, rows)
        except SwitchyardError as err:
            # Every failure returns the stage's full report (facts and events), never just an exception:
            # e.g. safe_restore plan_id=... whose backup is missing or does not verify.
            run.rep.event("restore", "failure", msg=err.msg, path=err.path)
            return _restore_report(run, results, rows, err), err, run.rep.warnings
    finally:
        _close_prepared(prepared)
        run.rep.flush_audit_log()
        run.close()


def _restore_report(run, results, rows, err):
    results.sort(key=lambda r: r["path"])
    changed = any(r["result"] == "changed" for r in results) or _recovery_changed(run)
    summary = {"targets": len(results), "changed": sum(1 for r in results if r["result"] == "changed"),
               "backup_durable": run.durability.durable, "decision": "failure" if err else "success",
               "sidecar_integrity_verified": all(r.get("sidecar_integrity_verified", True) for r in results)}
    if err is not None:
        summary["error_id"] = err.error_id
        summary["summary_error_ids"] = err.summary_error_ids
    rep = run.rep.report(summary, root=run.s.root, preset=run.policy.preset, results=_merge_rows(rows, results, "path"),
                         recovery=run.recovery, **run.lock_facts)
    rep["changed"] = changed
    return rep


def _restore_run(run, plan, which, prepared, results, rows):
    settings = run.s
    plan_id = run.rep.plan_id if plan is None else None
    if plan is not None:
        _check_target_aliases(run, [a.target for a in plan.actions], "targets")
    run.take_lock()
    run.recover()
    if plan_id:
        items = _plan_backups(run, plan_id)
    else:
        items = [(a.target, None, settings.backup_tag) for a in plan.actions]
    run.rep.event("plan", actions=len(items), preset=run.policy.preset)
    err = None
    if not plan_id:
        # The same gates safe_preflight runs for restores, now under the lock: nothing is touched on a STOP.
        rows[:], stops = _finish_rows(run, [_restore_row(run, a, which) for a in plan.actions])
        if stops:
            err = _stop_error(stops)
            return _restore_report(run, [], rows, err), err, run.rep.warnings
    # Verify everything first: a missing or tampered backup fails before any target is touched.
    for rel, ms, tag in items:
        target = resolve_beneath(settings.root, os.path.join(settings.root, rel.lstrip("/")), "targets", run.root_fd)
        bdir = run.store.dir_for(target, create=False)
        prepared.append((target, bdir))
        store = bk.BackupStore(run.root_fd, settings.backup_dir_rel, tag)
        scan = store.scan(target, bdir) if bdir is not None else bk.Scan()
        backups = scan.usable
        if ms is not None:
            for r in scan.rejected:  # (a restore by targets reported them in its preflight rows)
                run.rep.warnings.append("%s: %s" % (rel, r.describe()))
            bad = [r for r in scan.rejected if r.ms == ms]
            if bad:
                raise RestoreFailedError("%s; nothing was restored" % bad[0].describe(), path=rel)
            chosen = [b for b in backups if b.ms == ms]
            if not chosen:
                results.append({"path": rel, "result": "unchanged", "note": "backup of this plan is gone (already "
                                "rolled back or pruned)"})
                prepared[-1] = (target, bdir, None)
                continue
            b = chosen[0]
        else:
            b = bk.require_backup(backups, which, target, scan.rejected)
        bk.verify_backup(b, run.policy)
        prepared[-1] = (target, bdir, b)
    run.rep.event("apply.attempt", "success", actions=len(items), **run.lock_facts)
    journal, jdir = _begin_side_journal(run, "restore", [entry[0].rel for entry in prepared if entry[2] is not None])
    try:
        for entry in prepared:
            target, bdir, b = entry
            if b is None:
                continue
            rel = target.rel
            before = _file_state(target.parent_fd, target.name)
            if bk.target_matches_backup(target, b, run.policy.preservation_tier):
                results.append({"path": rel, "result": "unchanged", "before": before, "after": before,
                                "backup": b.describe(), "sidecar_integrity_verified": True})
                run.rep.event("restore", "success", path=rel, result="unchanged")
                continue
            if target.kind() == "file":
                raise RestoreFailedError("%s is a regular file that differs from its backup; restoring would destroy "
                                         "it. Move it away (or back it up with safe_apply) and restore again" % rel,
                                         path=rel)
            pf_row = grow.Row(None, rel, "restore")
            gtarget.immutable_gate(pf_row, run.policy, target.parent_fd, target.name)
            if pf_row.data["stops"]:
                raise PolicyError("; ".join(s["msg"] for s in pf_row.data["stops"]), path=rel)
            applied = {}
            if not run.s.check_mode:
                applied = bk.restore_backup(target, b, run.policy, run.durability, run.run_id, consume=False)
            after = _file_state(target.parent_fd, target.name) if not run.s.check_mode else {
                "kind": b.prior_kind, "sha256": b.meta.get("payload_hash"), "link_target": b.meta.get("prior_link_target")}
            results.append({"path": rel, "result": "changed", "before": before, "after": after,
                            "backup": b.describe(), "sidecar_integrity_verified": b.meta.get("payload_hash") is not None
                            or b.prior_kind != "file", "preservation_applied": applied,
                            "hash_alg": fs.HASH_ALG, "before_hash": before.get("sha256"),
                            "after_hash": after.get("sha256")})
            run.rep.event("restore", "success", path=rel, result="changed", preservation_applied=applied or None)
    except (SwitchyardError, OSError) as e:
        err = e if isinstance(e, SwitchyardError) else RestoreFailedError(str(e))
        run.rep.event("restore", "failure", msg=err.msg)
    finally:
        _end_side_journal(run, journal, jdir, err)
        _close_prepared(prepared)
    return _restore_report(run, results, rows, err), err, run.rep.warnings


def _begin_side_journal(run, kind, actions):
    """Write-ahead journal of a restore or prune run, before its first mutation (docs/durability.md).

    restore: actions are the target paths; recovery removes the temps the run left next to them.
    prune: actions are (target path, backup_ms); recovery finishes deleting those backups.
    Returns (journal, journal dir fd), or (None, None) in check mode or when nothing will be written."""
    if run.s.check_mode or not actions:
        return None, None
    if kind == "restore":
        jactions = [{"target": rel} for rel in actions]
    else:
        jactions = [{"target": rel, "backup_ms": ms} for rel, ms in actions]
    jdir = None
    try:
        jdir = run.state_dir(create=True)
        begin = {"kind": kind, "plan_id": run.rep.plan_id, "run_id": run.run_id, "tag": run.s.backup_tag,
                 "ts_ms": _now_ms(), "backup_dir_rel": run.s.backup_dir_rel, "actions": jactions}
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


def _end_side_journal(run, journal, jdir, err):
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


def _close_prepared(prepared):
    while prepared:
        entry = prepared.pop()
        entry[0].close()
        if entry[1] is not None:
            os.close(entry[1])


def _retained(backups, count, age, now, keep_original):
    """The backups (newest first) prune keeps: the newest always; those within count and age; and, with
    keep_original, the newest one holding regular-file bytes (after file -> link -> link it is the only
    copy of the original file, however old).  Returns (kept, the one kept only for being that copy or None)."""
    keep = []
    for i, b in enumerate(backups):
        too_many = count is not None and i >= count
        too_old = age is not None and (now - b.ms) / 1000.0 > age
        if i == 0 or not (too_many or too_old):
            keep.append(b)
    if keep_original:
        newest_file = next((b for b in backups if b.prior_kind == "file"), None)
        if newest_file is not None and newest_file not in keep:
            keep.append(newest_file)
            return keep, newest_file
    return keep, None


def prune(settings, targets, retention_count=None, retention_age=None):
    """Delete old complete backups of targets; never the newest one, nor (policy.prune_keep_original) the
    newest copy of a regular file.  Also sweeps what a killed prune left: a checked sidecar whose payload is
    gone.  Never deletes a payload without sidecar (it may be the last copy) or a sidecar it cannot parse."""
    rels = _normalize_targets(settings, targets)
    count = retention_count if retention_count is not None else settings.policy.retention_count
    age = retention_age if retention_age is not None else settings.policy.retention_age
    if count is None and age is None:
        raise PolicyError("safe_prune needs retention_count and/or retention_age (or the policy knobs of the same name)")
    if count is not None and (isinstance(count, bool) or int(count) < 1):
        raise PolicyError("retention_count=%r must be >= 1 (the newest backup is always kept)" % (count,))
    plan = Plan("prune", [Action("prune", r) for r in rels], extra={"count": count, "age": age})
    run = Run(settings, "prune", plan.plan_id)
    chosen, results = [], []
    try:
        try:
            return _prune_run(run, rels, count, age, chosen, results)
        except SwitchyardError as err:
            # Every failure returns the stage's full report (facts and events).
            run.rep.event("prune.result", "failure", msg=err.msg, path=err.path)
            summary = {"targets": len(results), "pruned": sum(r["pruned"] for r in results), "decision": "failure",
                       "backup_durable": run.durability.durable, "error_id": err.error_id,
                       "summary_error_ids": err.summary_error_ids}
            rep = run.rep.report(summary, root=settings.root, results=results, recovery=run.recovery,
                                 **run.lock_facts)
            rep["changed"] = summary["pruned"] > 0 or _recovery_changed(run)
            return rep, err, run.rep.warnings
    finally:
        for target, bdir, _doomed, _incomplete in chosen:
            target.close()
            if bdir is not None:
                os.close(bdir)
        run.rep.flush_audit_log()
        run.close()


def _prune_run(run, rels, count, age, chosen, results):
    settings = run.s
    _check_target_aliases(run, rels, "targets")
    run.take_lock()
    run.recover()
    now = _now_ms()
    # Decide everything first, then journal the deletions, then delete: a kill at any point is
    # finished by the next run (docs/durability.md).
    for rel in rels:
        target = resolve_beneath(settings.root, os.path.join(settings.root, rel.lstrip("/")), "targets", run.root_fd)
        chosen.append((target, None, None, ()))
        bdir = run.store.dir_for(target, create=False)
        scan = run.store.scan(target, bdir) if bdir is not None else bk.Scan()
        backups = scan.usable
        keep, original = _retained(backups, count, age, now, run.policy.prune_keep_original)
        doomed = [b for b in backups if b not in keep]
        for r in scan.rejected:
            run.rep.warnings.append("%s: %s; prune left it alone" % (rel, r.describe()))
        for _ms, name in scan.orphan_payloads:
            run.rep.warnings.append("%s: backup payload %s has no sidecar; prune left it alone (it may be the "
                                    "last copy of an original). Restore from it or remove it by hand"
                                    % (rel, run.store.where(target, name)))
        notes = []
        if original is not None:
            notes.append("kept %s beyond retention: the newest backup holding a regular file "
                         "(policy.prune_keep_original)" % original.payload)
        if scan.incomplete:
            notes.append("removed %d sidecar(s) whose payload was already gone (an interrupted prune)"
                         % len(scan.incomplete))
        chosen[-1] = (target, bdir, doomed, scan.incomplete)
        results.append(_prune_result(rel, len(backups), doomed, notes, scan.incomplete))
    journal, jdir = _begin_side_journal(run, "prune", [(t.rel, b.ms) for t, _d, doomed, _i in chosen for b in doomed])
    err = None
    try:
        if not run.s.check_mode:
            # Results say what was deleted, also when a deletion fails halfway.
            for i, (_target, bdir, doomed, incomplete) in enumerate(chosen):
                total = results[i]["kept"] + results[i]["pruned"]
                notes = [results[i]["note"]] if "note" in results[i] else []
                done = []
                try:
                    for b in doomed:
                        try:
                            bk.remove_backup(b, run.durability)
                        finally:
                            if fs.lstat_at(b.dir_fd, b.sidecar) is None:  # deleted (even if its fsync failed)
                                done.append(b)
                    # What a prune (or rollback) killed between its two unlinks left: a checked sidecar whose
                    # payload is gone.  Its name is ours (target, tag, ms) and it holds no bytes of anything.
                    for b in incomplete:
                        faults.kill_point("before_unlink_backup")
                        fs.unlink_at(bdir, b.sidecar)
                    if incomplete:
                        run.durability.fsync(bdir, "backup directory of %s" % results[i]["path"])
                except BaseException:
                    results[i] = _prune_result(results[i]["path"], total, done, notes)
                    for later in range(i + 1, len(chosen)):  # nothing after the failure was deleted
                        results[later] = _prune_result(results[later]["path"], results[later]["kept"]
                                                       + results[later]["pruned"], [])
                    raise
                results[i] = _prune_result(results[i]["path"], total, done, notes, incomplete)
    except (SwitchyardError, OSError) as e:
        err = e if isinstance(e, SwitchyardError) else AtomicSwapError("could not delete a backup: %s" % e)
        raise err
    finally:
        _end_side_journal(run, journal, jdir, err)
    pruned = sum(r["pruned"] for r in results)
    run.rep.event("prune.result", "success", pruned=pruned, targets=len(results))
    summary = {"targets": len(results), "pruned": pruned, "decision": "success",
               "backup_durable": run.durability.durable}
    rep = run.rep.report(summary, root=settings.root, results=results, recovery=run.recovery, **run.lock_facts)
    rep["changed"] = any(r["result"] == "changed" for r in results) or _recovery_changed(run)
    return rep, None, run.rep.warnings


def _prune_result(rel, total, doomed, notes=(), incomplete=()):
    res = {"path": rel, "kept": total - len(doomed), "pruned": len(doomed),
           "pruned_backups": [b.payload or b.sidecar for b in doomed],
           "result": "changed" if (doomed or incomplete) else "unchanged"}
    if notes:
        res["note"] = "; ".join(notes)
    return res
