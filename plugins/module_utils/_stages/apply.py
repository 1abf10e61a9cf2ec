# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The apply stage: preflight under the lock, the write-ahead journal, the group commit, the report. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import traceback

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults
from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr
from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts
from ansible_collections.switchyard.fs.plugins.module_utils._probes import smoke as _smoke
from ansible_collections.switchyard.fs.plugins.module_utils._errors import (
    AtomicSwapError, InternalError, LockingError, PolicyError, RestoreFailedError, SmokeError, SwitchyardError)
from ansible_collections.switchyard.fs.plugins.module_utils._stages.inputs import normalize_links
from ansible_collections.switchyard.fs.plugins.module_utils._stages.run import Run, file_state, merge_rows, now_ms
from ansible_collections.switchyard.fs.plugins.module_utils._stages.recovery import recover, recovery_changed
from ansible_collections.switchyard.fs.plugins.module_utils._stages.links import resolve_links
from ansible_collections.switchyard.fs.plugins.module_utils._stages.preflight import finish_rows, link_rows, stop_error
from ansible_collections.switchyard.fs.plugins.module_utils._stages.rollback import rollback


def apply(settings, links, smoke=None):
    """Preflight under the lock, journal, back up, swap, fsync, smoke; roll back on any failure."""
    norm = normalize_links(settings, links)
    checks = _smoke.validate_checks(smoke)
    run = Run(settings, "apply", None)
    acts = []
    try:
        plan, acts = resolve_links(run, norm)
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
        recover(run)
        # Resolved above only to reject bad input before touching anything (the lock file included);
        # what another run or the recovery changed while we waited is seen only from under the lock.
        stale, acts = acts, []
        for la in stale:
            la.target.close()
        del stale  # not kept alive beside the fresh resolution: a second copy of every action until the end
        plan, acts = resolve_links(run, norm)
        rows, _rescue = link_rows(run, acts)
        rows, stops = finish_rows(run, rows)
        todo = [la for la in acts if not la.noop]
        base = {"root": settings.root, "preset": run.policy.preset, "policy": run.policy.as_dict(), "rows": rows,
                "recovery": run.recovery}
        base.update(run.lock_facts)
        if stops:
            err = stop_error(stops)
            run.rep.event("apply.attempt", "failure", msg=err.msg, **run.lock_facts)
            return _apply_report(run, acts, base, err, [], False), err, run.rep.warnings
        run.rep.event("apply.attempt", "success", actions=len(todo), **run.lock_facts)
        for la in acts:
            la.before = file_state(la.target.parent_fd, la.target.name, la.st)
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
        now = now_ms()
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
            rolled, rb_err = rollback(run, done, bdirs)
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



def _apply_report(run, acts, base, err, rolled, committed, smoke_results=()):
    actions = []
    for la in acts:
        after = None
        if la.noop:
            result = "unchanged"
        else:
            result = la.result or ("skipped" if err is not None else "changed")
        if committed:
            after = file_state(la.target.parent_fd, la.target.name)
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
    changed = changed or recovery_changed(run)
    summary = {"actions": len(actions), "changed": sum(1 for a in actions if a["result"] == "changed"),
               "unchanged": sum(1 for a in actions if a["result"] == "unchanged"),
               "rolled_back": len(rolled), "backup_durable": run.durability.durable,
               "decision": "failure" if err is not None else "success"}
    if err is not None:
        summary["error_id"] = err.error_id
        summary["summary_error_ids"] = err.summary_error_ids
    base = dict(base)
    actions = merge_rows(base.pop("rows", []), actions, "action_id")
    report = run.rep.report(summary, actions=actions, rolled_back_paths=rolled, **base)
    report["smoke"] = list(smoke_results)
    report["changed"] = bool(changed)
    return report
