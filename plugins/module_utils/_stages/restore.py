# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore stage: targets from their latest/previous backup, or everything one plan did. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import uuid

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal_check as jcheck
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup_store as bks
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr
from ansible_collections.switchyard.fs.plugins.module_utils._gates import row as grow
from ansible_collections.switchyard.fs.plugins.module_utils._gates import target as gtarget
from ansible_collections.switchyard.fs.plugins.module_utils._errors import (
    BackupMissingError, PolicyError, RestoreFailedError, SwitchyardError)
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import resolve_beneath
from ansible_collections.switchyard.fs.plugins.module_utils._stages.inputs import (
    check_target_aliases, normalize_targets, restore_plan)
from ansible_collections.switchyard.fs.plugins.module_utils._stages.run import (
    Run, begin_side_journal, end_side_journal, file_state, merge_rows)
from ansible_collections.switchyard.fs.plugins.module_utils._stages.recovery import recover, recovery_changed
from ansible_collections.switchyard.fs.plugins.module_utils._stages.preflight import (
    finish_rows, restore_row, stop_error)


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
                    jcheck.check_begin(name, begin)
                except jcheck.JournalInvalid as e:
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
    """Restore targets from their latest/previous complete backup, or undo everything one apply did.

    With settings.check_mode it decides everything a restore would, takes no lock and changes nothing."""
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
        plan = restore_plan(normalize_targets(settings, targets), which)
    run = Run(settings, "restore", plan_id or plan.plan_id, settings.check_mode)
    prepared, results, rows = [], [], []
    try:
        try:
            return _restore_run(run, plan, which, prepared, results, rows)
        except SwitchyardError as err:
            # Every failure returns the stage's full report (facts and events), never just an exception:
            # e.g. safe_restore plan_id=... whose backup is missing or does not verify.
            run.events.failed(err.msg, err.path)
            return _restore_report(run, results, rows, err), err, run.rep.warnings
    finally:
        _close_prepared(prepared)
        run.rep.flush_audit_log()
        run.close()


def _restore_report(run, results, rows, err):
    results.sort(key=lambda r: r["path"])
    changed = any(r["result"] == "changed" for r in results) or recovery_changed(run)
    summary = {"targets": len(results), "changed": sum(1 for r in results if r["result"] == "changed"),
               "backup_durable": run.durability.durable, "decision": "failure" if err else "success",
               "sidecar_integrity_verified": all(r.get("sidecar_integrity_verified", True) for r in results)}
    if err is not None:
        summary["error_id"] = err.error_id
        summary["summary_error_ids"] = err.summary_error_ids
    rep = run.rep.report(summary, root=run.s.root, preset=run.policy.preset, results=merge_rows(rows, results, "path"),
                         recovery=run.recovery, **run.lock_facts)
    rep["changed"] = changed
    return rep


def _restore_run(run, plan, which, prepared, results, rows):
    settings = run.s
    plan_id = run.plan_id if plan is None else None
    if plan is not None:
        check_target_aliases(run, [a.target for a in plan.actions], "targets")
    run.take_lock()
    recover(run)
    if plan_id:
        items = _plan_backups(run, plan_id)
    else:
        items = [(a.target, None, settings.backup_tag) for a in plan.actions]
    run.events.plan(len(items), run.policy.preset)
    if not plan_id:
        # The same gates safe_preflight runs for restores, now under the lock: nothing is touched on a STOP.
        rows[:], stops = finish_rows(run, [restore_row(run, a, which) for a in plan.actions])
        if stops:
            err = stop_error(stops)
            return _restore_report(run, [], rows, err), err, run.rep.warnings
    # Verify everything first: a missing or tampered backup fails before any target is touched.
    for rel, ms, tag in items:
        target = resolve_beneath(settings.root, os.path.join(settings.root, rel.lstrip("/")), "targets", run.root_fd)
        bdir = run.store.dir_for(target, create=False)
        prepared.append((target, bdir))
        store = bks.BackupStore(run.root_fd, settings.backup_dir_rel, tag)
        scan = store.scan(target, bdir) if bdir is not None else bks.Scan()
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
    run.events.attempt(len(items), run.lock_facts)
    # Decide every target before the first mutation: unchanged, or restored from which backup.
    todo = []
    for target, _bdir, b in prepared:
        if b is None:
            continue
        try:
            todo.append(_decide(run, target, b, plan_id is not None))
        except OSError as e:  # e.g. EINVAL from readlink: the entry stopped being a symlink after its lstat
            raise RestoreFailedError("%s changed while restore inspected it (%s); nothing was restored: retry when it "
                                     "is quiet" % (target.rel, e.strerror or e), path=target.rel)
    err = None
    if run.check_mode:  # the one gate: check mode reports what the restore below would do
        for d in todo:
            _record(run, results, d, {}, _predicted_after(d["backup"]) if d["change"] else d["before"])
        return _restore_report(run, results, rows, err), err, run.rep.warnings
    journal, jdir = begin_side_journal(run, "restore", [d["target"].rel for d in todo])
    try:
        for d in todo:
            applied, after = {}, d["before"]
            if d["change"]:
                target = d["target"]
                applied = bk.restore_backup(target, d["backup"], run.policy, run.durability, run.run_id,
                                            consume=False)
                after = file_state(target.parent_fd, target.name)
            _record(run, results, d, applied, after)
    except (SwitchyardError, OSError) as e:
        err = e if isinstance(e, SwitchyardError) else RestoreFailedError(str(e))
        run.events.failed(err.msg)
    finally:
        end_side_journal(run, journal, jdir, err)
        _close_prepared(prepared)
    return _restore_report(run, results, rows, err), err, run.rep.warnings


def _decide(run, target, b, by_plan):
    """What restoring target from backup b does: nothing (it already matches), or a change restore may make.
    Raises, before anything is touched, when it may not: a differing regular file, an immutable target.

    The immutable gate: a restore by targets ran it in its preflight rows (a STOP there ended the run, unless
    policy.override_preflight); a restore of a plan has no rows, so it runs here, and its findings are reported."""
    rel = target.rel
    d = {"target": target, "backup": b, "before": file_state(target.parent_fd, target.name), "change": False,
         "findings": {}}
    if bk.target_matches_backup(target, b, run.policy.preservation_tier):
        return d
    if target.kind() == "file":
        raise RestoreFailedError("%s is a regular file that differs from its backup; restoring would destroy "
                                 "it. Move it away (or back it up with safe_apply) and restore again" % rel, path=rel)
    if by_plan:
        row = grow.Row(None, rel, "restore")
        gtarget.immutable_gate(row, run.policy, target.parent_fd, target.name)
        if row.data["stops"]:
            raise PolicyError("; ".join(s["msg"] for s in row.data["stops"]), path=rel)
        d["findings"] = dict((k, row.data[k]) for k in ("immutable_detection_method", "immutable_check"))
    d["change"] = True
    return d


def _predicted_after(b):
    """The target as the restore would leave it (check mode)."""
    return {"kind": b.prior_kind, "sha256": b.meta.get("payload_hash"), "link_target": b.meta.get("prior_link_target")}


def _record(run, results, d, applied, after):
    """The result of one decided target, and its event."""
    rel, b, before = d["target"].rel, d["backup"], d["before"]
    if not d["change"]:
        results.append({"path": rel, "result": "unchanged", "before": before, "after": before,
                        "backup": b.describe(), "sidecar_integrity_verified": True})
        run.events.result(rel, "unchanged")
        return
    res = {"path": rel, "result": "changed", "before": before, "after": after, "backup": b.describe(),
           "sidecar_integrity_verified": b.meta.get("payload_hash") is not None or b.prior_kind != "file",
           "preservation_applied": applied, "hash_alg": fs.HASH_ALG, "before_hash": before.get("sha256"),
           "after_hash": after.get("sha256")}
    res.update(d["findings"])
    results.append(res)
    run.events.result(rel, "changed", applied or None)


def _close_prepared(prepared):
    while prepared:
        entry = prepared.pop()
        entry[0].close()
        if entry[1] is not None:
            os.close(entry[1])
