# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The prune stage: delete old complete backups, keep the newest and the original. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults
from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup_store as bks
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._errors import AtomicSwapError, PolicyError, SwitchyardError
from ansible_collections.switchyard.fs.plugins.module_utils._plan import Action, Plan
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import resolve_beneath
from ansible_collections.switchyard.fs.plugins.module_utils._stages.inputs import (
    check_target_aliases, normalize_targets)
from ansible_collections.switchyard.fs.plugins.module_utils._stages.run import (
    Run, begin_side_journal, end_side_journal, now_ms)
from ansible_collections.switchyard.fs.plugins.module_utils._stages.recovery import recover, recovery_changed


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
    rels = normalize_targets(settings, targets)
    count = retention_count if retention_count is not None else settings.policy.retention_count
    age = retention_age if retention_age is not None else settings.policy.retention_age
    if count is None and age is None:
        raise PolicyError("safe_prune needs retention_count and/or retention_age (or the policy knobs of the same name)")
    if count is not None and (isinstance(count, bool) or int(count) < 1):
        raise PolicyError("retention_count=%r must be >= 1 (the newest backup is always kept)" % (count,))
    plan = Plan("prune", [Action("prune", r) for r in rels], extra={"count": count, "age": age})
    run = Run(settings, "prune", plan.plan_id, settings.check_mode)
    chosen, results = [], []
    try:
        try:
            return _prune_run(run, rels, count, age, chosen, results)
        except SwitchyardError as err:
            # Every failure returns the stage's full report (facts and events).
            run.events.failed(err.msg, err.path)
            summary = {"targets": len(results), "pruned": sum(r["pruned"] for r in results), "decision": "failure",
                       "backup_durable": run.durability.durable, "error_id": err.error_id,
                       "summary_error_ids": err.summary_error_ids}
            rep = run.rep.report(summary, root=settings.root, results=results, recovery=run.recovery,
                                 **run.lock_facts)
            rep["changed"] = summary["pruned"] > 0 or recovery_changed(run)
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
    check_target_aliases(run, rels, "targets")
    run.take_lock()
    recover(run)
    now = now_ms()
    # Decide everything first, then journal the deletions, then delete: a kill at any point is
    # finished by the next run (docs/durability.md).
    for rel in rels:
        target = resolve_beneath(settings.root, os.path.join(settings.root, rel.lstrip("/")), "targets", run.root_fd)
        chosen.append((target, None, None, ()))
        bdir = run.store.dir_for(target, create=False)
        scan = run.store.scan(target, bdir) if bdir is not None else bks.Scan()
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
    if not run.check_mode:  # the one gate: check mode reports what the deletions below would do
        _delete(run, chosen, results)
    pruned = sum(r["pruned"] for r in results)
    run.events.result(pruned, len(results))
    summary = {"targets": len(results), "pruned": pruned, "decision": "success",
               "backup_durable": run.durability.durable}
    rep = run.rep.report(summary, root=settings.root, results=results, recovery=run.recovery, **run.lock_facts)
    rep["changed"] = any(r["result"] == "changed" for r in results) or recovery_changed(run)
    return rep, None, run.rep.warnings


def _delete(run, chosen, results):
    """Journal the decided deletions, then delete; results say what was deleted, also when a deletion fails
    halfway (a kill at any point is finished by the next run's recovery)."""
    journal, jdir = begin_side_journal(run, "prune", [(t.rel, b.ms) for t, _d, doomed, _i in chosen for b in doomed])
    err = None
    try:
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
        end_side_journal(run, journal, jdir, err)


def _prune_result(rel, total, doomed, notes=(), incomplete=()):
    res = {"path": rel, "kept": total - len(doomed), "pruned": len(doomed),
           "pruned_backups": [b.payload or b.sidecar for b in doomed],
           "result": "changed" if (doomed or incomplete) else "unchanged"}
    if notes:
        res["note"] = "; ".join(notes)
    return res
