# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Crash recovery: finish or undo the journals an interrupted run left. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import stat
from functools import partial

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal_check as jcheck
from ansible_collections.switchyard.fs.plugins.module_utils._fs import sidecar as sc
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup_store as bks
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr
from ansible_collections.switchyard.fs.plugins.module_utils._errors import (
    PolicyError, RestoreFailedError, SwitchyardError)
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import resolve_beneath

# Journal kinds other than apply: their recovery sweeps or rolls forward, it never undoes.
SIDE_KINDS = ("restore", "prune")


def recover(run):
    """Finish or undo every journal an interrupted run left under state_dir (docs/durability.md).

    Each step is decided first and carried out through _act, the one check-mode gate of recovery: check mode
    (and so every preflight) decides and reports exactly what a committing run would do, and changes nothing."""
    jdir = run.state_dir(create=False)
    if jdir is None:
        return
    try:
        _act(run, [partial(fs.remove_dead_temps, jdir)])
        retired = 0
        for name, begin, later in jr.list_journals(jdir):
            if jr.final_state(later) is not None:
                # Finished (e.g. left by 0.1.0): out of the way of every later run.
                retired += sum(_act(run, [partial(jr.retire, jdir, name, begin, expire_now=False)]))
                continue
            journal = jr.Journal.claim(jdir, name, run.durability)
            if journal is None:
                # Its writer still holds the journal's flock: a live plan of another process, not a crash.
                run.events.recovery_left_alone(*_journal_ids(name, begin))
                continue
            try:
                # Re-read under the flock: the writer may have finished between listing and claiming.
                begin, later = jr.read_journal(jdir, name)
                if begin is None or jr.final_state(later) is not None:
                    continue
                try:
                    # Untrusted like option input: nothing of a bad record is used, least of all as a path.
                    jcheck.check_begin(name, begin, kinds=("apply",) + SIDE_KINDS)
                except jcheck.JournalInvalid as e:
                    pid, rid = _journal_ids(name, begin)
                    result = {"ok": False, "plan_id": pid, "run_id": rid, "paths": [], "dry_run": run.check_mode,
                              "msg": "could not roll back plan %s: %s; nothing was undone from it. Inspect the "
                                     "journal under state_dir %s and the targets of that plan by hand"
                                     % (pid, e, run.s.state_rel)}
                else:
                    # safe_restore plan_id=<this plan> is the documented way out of "stop": it may undo it.
                    undoing_it = run.stage == "restore" and run.plan_id == begin["plan_id"]
                    # An interrupted restore or prune left no half-done state, only leftovers to sweep.
                    side = begin.get("kind") in SIDE_KINDS
                    # Check mode only reports: it never stops on what a commit would stop on.
                    if (run.policy.on_unfinished_plan == "stop" and not run.check_mode and not undoing_it
                            and not side):
                        raise PolicyError("plan %s (run %s) was interrupted and is unfinished; run any module with "
                                          "policy.on_unfinished_plan: rollback, or safe_restore plan_id=%s"
                                          % (begin["plan_id"], begin["run_id"], begin["plan_id"]))
                    result = _recover_side(run, begin) if side else _recover_one(run, begin)
                try:
                    _act(run, [partial(journal.finish, "recovered" if result["ok"] else "failed_rollback",
                                       by_run=run.run_id),
                               partial(jr.retire, jdir, name, begin)])
                except OSError as e:
                    # The undo is idempotent: an unmarked journal is simply recovered again next run.
                    result["ok"] = False
                    result["msg"] += "; could not mark journal %s finished: %s" % (name, e)
            finally:
                journal.close()
            run.recovery.append(result)
            run.events.recovered(result["plan_id"], result["run_id"], result["ok"], result["paths"], result["msg"])
            if not result["ok"] and not run.check_mode:
                # Never carry on over a root a crash left inconsistent.
                raise RestoreFailedError("%s; nothing else was done. Inspect the paths, then use safe_restore "
                                         "plan_id=%s or targets=... to finish by hand" % (result["msg"], result["plan_id"]))
        if retired:
            jr.expire_retired(jdir)
    finally:
        os.close(jdir)


def _act(run, deeds):
    """The one check-mode gate of recovery: carry out the decided deeds in order and return their results;
    in check mode, nothing (and an empty list)."""
    if run.check_mode:
        return []
    return [deed() for deed in deeds]


def _journal_target(run, act, errors):
    """The target of a (checked) journal action resolved beneath root, or None with the reason in errors."""
    try:
        return resolve_beneath(run.s.root, os.path.join(run.s.root, act["target"].lstrip("/")),
                               "journal target", run.root_fd)
    except SwitchyardError as e:
        errors.append(e.msg)
        return None


def _recover_one(run, begin):
    paths, errors = [], []
    rid, tag = begin["run_id"], begin["tag"]
    # Backups live where the interrupted run put them, whatever this run's policy.backup_dir says.
    store = bks.BackupStore(run.root_fd, begin.get("backup_dir_rel", run.s.backup_dir_rel), tag)
    for act in reversed(begin.get("actions", [])):
        target = _journal_target(run, act, errors)
        if target is None:
            continue
        try:
            _act(run, [partial(fs.remove_dead_temps, target.parent_fd, target.name, run_id=rid)])
            bdir = store.dir_for(target, create=False)
            if bdir is None:
                continue
            try:
                _act(run, [partial(fs.remove_dead_temps, bdir, name, run_id=rid)
                           for name in (bks.payload_name(target.name, tag, act["backup_ms"]),
                                        bks.sidecar_name(target.name, tag, act["backup_ms"]))])
                changed, undo = _undo_action(run, target, bdir, act, tag)
                _act(run, [undo])
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
    return {"ok": ok, "plan_id": begin["plan_id"], "run_id": rid, "paths": paths, "msg": msg,
            "dry_run": run.check_mode}


def _recover_side(run, begin):
    """Finish an interrupted restore or prune from the filesystem alone, idempotently.

    restore: remove the temps (symlink or file) its run left next to each target; every target is
    either still as it was or already restored, and the backups are untouched.
    prune: delete what is left of each backup it had decided to delete (sidecar and payload): the
    deletion is rolled forward, so no orphan sidecar or payload stays behind."""
    paths, errors = [], []
    kind, rid, tag = begin["kind"], begin["run_id"], begin["tag"]
    for act in begin.get("actions", []):
        target = _journal_target(run, act, errors)
        if target is None:
            continue
        try:
            if kind == "restore":
                if fs.remove_dead_temps(target.parent_fd, target.name, run_id=rid, dry_run=True):
                    paths.append(act["target"])
                    _act(run, [partial(fs.remove_dead_temps, target.parent_fd, target.name, run_id=rid)])
                continue
            ms = act["backup_ms"]
            if isinstance(ms, bool) or not isinstance(ms, int):
                raise PolicyError("journal backup_ms %r is not an integer" % (ms,))
            store = bks.BackupStore(run.root_fd, begin.get("backup_dir_rel", run.s.backup_dir_rel), tag)
            bdir = store.dir_for(target, create=False)
            if bdir is None:
                continue
            try:
                names = [bks.sidecar_name(target.name, tag, ms), bks.payload_name(target.name, tag, ms)]
                left = [n for n in names if fs.lstat_at(bdir, n) is not None]
                if left:
                    paths.append(act["target"])
                    _act(run, [partial(_unlink_all, run, bdir, left, act["target"])])
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
    return {"ok": ok, "plan_id": begin["plan_id"], "run_id": rid, "paths": paths, "msg": msg,
            "dry_run": run.check_mode}


def _unlink_all(run, bdir, names, path):
    for n in names:
        fs.unlink_at(bdir, n)
    run.durability.fsync(bdir, "backup directory of %s" % path)


def _undo_action(run, target, bdir, act, tag):
    """Decide how to undo one journaled action from what the filesystem shows: (True when the target changes
    back, the deed that does it).  Raises when the target was swapped but its backup cannot bring it back."""
    sname = bks.sidecar_name(target.name, tag, act["backup_ms"])
    pname = bks.payload_name(target.name, tag, act["backup_ms"])
    bad = None
    try:
        parsed = bks.load_sidecar(bdir, sname, tag)
        meta = parsed.meta if parsed is not None else None
        if meta is not None and meta["prior_kind"] != "absent":
            pst = fs.lstat_at(bdir, pname)
            if pst is not None:
                bks.check_payload_kind(sname, meta["prior_kind"], pst)
    except sc.SidecarInvalid as e:
        meta, bad = None, e
    st = target.lstat()
    swapped = fs.kind_of(st) == "symlink" and fs.readlink_at(target.parent_fd, target.name) == act["link_text"]
    if not swapped:
        # The swap never happened (or was undone): only the plan's backup may go.
        return False, partial(_drop_duplicate_backup, run, target, bdir, act["backup_ms"], sname, pname, meta, bad)
    if bad is not None:
        raise RestoreFailedError("%s was swapped but its backup is unusable: %s; left as is"
                                 % (act["target"], bad), path=act["target"])
    if meta is None:
        raise RestoreFailedError("%s was swapped but its backup %s has no complete sidecar; left as is"
                                 % (act["target"], pname), path=act["target"])
    return True, partial(_put_back, run, target, bks.Backup(bdir, act["backup_ms"], sname, meta))


def _put_back(run, target, backup):
    bk.verify_backup(backup, run.policy)
    bk.restore_backup(target, backup, run.policy, run.durability, run.run_id, consume=True)


def _drop_duplicate_backup(run, target, bdir, ms, sname, pname, meta, bad):
    """The plan's backup is dropped only while it merely duplicates the target: if something else replaced
    the target since, it is the last copy."""
    if meta is None:
        if fs.lstat_at(bdir, pname) is not None and _same_entry(target, bdir, pname):
            fs.unlink_at(bdir, pname)  # payload without sidecar (or with an unusable one): a duplicate
            if bad is not None:
                fs.unlink_at(bdir, sname)
    elif bk.target_matches_backup(target, bks.Backup(bdir, ms, sname, meta), run.policy.preservation_tier):
        bk.remove_backup(bks.Backup(bdir, ms, sname, meta), run.durability)


def recovery_changed(run):
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
        return isinstance(value, str) and jcheck.UUID_RE.match(value) is not None
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
