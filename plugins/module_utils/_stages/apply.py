# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The apply stage: preflight under the lock, the write-ahead journal, the group commit, the report. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import traceback

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults
from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import swap
from ansible_collections.switchyard.fs.plugins.module_utils._fs import durable
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr
from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts
from ansible_collections.switchyard.fs.plugins.module_utils._probes import smoke as _smoke
from ansible_collections.switchyard.fs.plugins.module_utils._errors import (
    AtomicSwapError, InternalError, LockingError, PolicyError, RestoreFailedError, SmokeError, SwitchyardError)
from ansible_collections.switchyard.fs.plugins.module_utils._stages.inputs import normalize_links, plan_of
from ansible_collections.switchyard.fs.plugins.module_utils._stages.run import Run, file_state, merge_rows, now_ms
from ansible_collections.switchyard.fs.plugins.module_utils._stages.recovery import recover, recovery_changed
from ansible_collections.switchyard.fs.plugins.module_utils._stages.links import resolve_links
from ansible_collections.switchyard.fs.plugins.module_utils._stages.preflight import finish_rows, link_rows, stop_error
from ansible_collections.switchyard.fs.plugins.module_utils._stages.rollback import rollback


class Outcome(object):
    """What apply decided for one LinkAction and what became of it.  The LinkAction (resolved facts) is only
    read; the commit, the rollback and check mode write here, and the report is built from here."""

    def __init__(self, la, before):
        self.la = la
        self.before = before  # file_state of the target as preflight saw it (None when apply stopped earlier)
        self.backup_ms = None  # decided before the first mutation, journaled
        self.backup = None
        self.backup_durable = None
        self.swap_method = None
        self.result = None

    # The facts, read through: an outcome never changes them.
    action = property(lambda self: self.la.action)
    link = property(lambda self: self.la.link)
    target = property(lambda self: self.la.target)
    st = property(lambda self: self.la.st)
    kind = property(lambda self: self.la.kind)
    noop = property(lambda self: self.la.noop)


def apply(settings, links, smoke=None):
    """Preflight under the lock, journal, back up, swap, fsync, smoke; roll back on any failure.

    With settings.check_mode it decides everything a commit would, takes no lock and changes nothing."""
    norm = normalize_links(settings, links)
    checks = _smoke.validate_checks(smoke)
    plan = plan_of(norm)
    run = Run(settings, "apply", plan.plan_id, settings.check_mode)
    acts = []
    try:
        acts = resolve_links(run, plan, norm)
        if run.policy.smoke == "required" and checks is None:
            checks = "resolve"
        run.events.plan(len(acts), run.policy.preset)
        try:
            run.take_lock()
        except LockingError as e:
            # Report the real wait and attempt count: nothing was touched.
            run.events.attempt_refused(e.msg, run.lock_facts)
            base = {"root": settings.root, "preset": run.policy.preset, "policy": run.policy.as_dict(), "rows": [],
                    "recovery": []}
            base.update(run.lock_facts)
            return _apply_report(run, [Outcome(la, None) for la in acts], base, e, [], False), e, run.rep.warnings
        recover(run)
        # Resolved above only to reject bad input before touching anything (the lock file included);
        # what another run or the recovery changed while we waited is seen only from under the lock.
        stale, acts = acts, []
        for la in stale:
            la.target.close()
        del stale  # not kept alive beside the fresh resolution: a second copy of every action until the end
        acts = resolve_links(run, plan, norm)
        rows, stops = finish_rows(run, link_rows(run, acts))
        base = {"root": settings.root, "preset": run.policy.preset, "policy": run.policy.as_dict(), "rows": rows,
                "recovery": run.recovery}
        base.update(run.lock_facts)
        if stops:
            err = stop_error(stops)
            run.events.attempt_refused(err.msg, run.lock_facts)
            return _apply_report(run, [Outcome(la, None) for la in acts], base, err, [], False), err, run.rep.warnings
        # Decide: every action's starting state, and which of them change.
        outs = [Outcome(la, file_state(la.target.parent_fd, la.target.name, la.st)) for la in acts]
        todo = [o for o in outs if not o.noop]
        run.events.attempt(len(todo), run.lock_facts)
        if not todo:
            return _apply_report(run, outs, base, None, [], False), None, run.rep.warnings
        if run.check_mode:  # the one gate: check mode reports what the commit below would do
            for o in todo:
                o.result = "changed"
                o.swap_method = "noreplace" if o.st is None else "exchange"  # what a commit would try first
                _changed_event(run, o)
            return _apply_report(run, outs, base, None, [], False), None, run.rep.warnings
        return _commit(run, plan, outs, todo, checks, base)
    finally:
        for la in acts:
            la.target.close()
        run.rep.flush_audit_log()
        run.close()


def _changed_event(run, o):
    run.events.action_changed(o.action.action_id, o.link["target"], o.link["source"], fs.HASH_ALG,
                              (o.before or {}).get("sha256"),
                              o.backup_durable if o.backup_durable is not None else run.durability.durable)


def _commit(run, plan, outs, todo, checks, base):
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
            for o in todo:
                bdir = run.store.dir_for(o.target, create=True, durability=run.durability)
                bst = os.fstat(bdir)
                if (bst.st_dev, bst.st_ino) in by_inode:
                    os.close(bdir)
                    bdir = by_inode[(bst.st_dev, bst.st_ino)]
                else:
                    by_inode[(bst.st_dev, bst.st_ino)] = bdir
                bdirs[o.action.action_id] = bdir
                o.backup_ms = run.store.next_ms(o.target, bdir, now, reserved)
                jactions.append({"action_id": o.action.action_id, "target": o.link["target"],
                                 "link_text": o.link["source"], "backup_ms": o.backup_ms, "prior_kind": o.kind})
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
            run.events.journal_failed(err.msg, run.durability.durable)
            return _apply_report(run, outs, base, err, [], False), err, run.rep.warnings
        faults.kill_point("after_journal")
        done, err, failed = [], None, None
        batch = durable.DurableBatch(run.durability)
        try:
            # Group commit, phase 1: every backup and sidecar, then all of them durable together (one syncfs
            # per filesystem, one fsync per backup directory) and a journal record saying so.
            for o in todo:
                try:
                    _back_up(run, o, bdirs[o.action.action_id], batch)
                    done.append(o)
                except Exception as e:  # noqa: broad-except -- after the first mutation every failure rolls back
                    failed = o
                    done.append(o)
                    err = _classify(e, o)
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
                for o in todo:
                    try:
                        _swap(run, o, batch)
                    except Exception as e:  # noqa: broad-except
                        failed = o
                        err = _classify(e, o)
                        break
                    try:
                        journal.progress(o.action.action_id, "swapped")
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
                smoke_results = _smoke.run_checks(s.root, run.root_fd, checks, [l.link for l in outs],
                                                  host_fallback=run.policy.smoke_host_fallback)
            except Exception as e:  # noqa: broad-except -- the swap is done: roll it back and say why
                err = _classify(e, None)
            else:
                bad = [r for r in smoke_results if not r["ok"]]
                run.events.smoke(smoke_results)
                if bad:
                    detail = "; ".join("%s: %s" % (r["name"], r["detail"]) for r in bad)
                    err = SmokeError("smoke check failed: %s" % detail)
        if err is None:
            try:
                journal.finish("committed")
                jr.retire(jdir, journal.name, begin)
                return _apply_report(run, outs, base, None, [], True, smoke_results), None, run.rep.warnings
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
        report = _apply_report(run, outs, base, err, rolled, True, smoke_results)
        return report, err, run.rep.warnings
    finally:
        if journal is not None:
            journal.close()
        for fd in set(bdirs.values()):
            os.close(fd)
        if jdir is not None:
            os.close(jdir)


def _classify(e, o):
    """The typed error for an exception raised after the first mutation (o: the action it came from, if any)."""
    if isinstance(e, SwitchyardError):
        return e
    where = o.link["target"] if o is not None else None
    prefix = ("%s: " % where) if where else ""
    if isinstance(e, durable.FsyncFailed):
        return AtomicSwapError("%s%s (policy.require_backup_durability is true)" % (prefix, e.strerror), path=where)
    if isinstance(e, fs.EntryChanged):
        return AtomicSwapError("%s%s" % (prefix, e.strerror), path=where)
    if isinstance(e, OSError):
        return AtomicSwapError("%s%s" % (prefix, e), path=where)
    err = InternalError("%sinternal error %s: %s" % (prefix, e.__class__.__name__, e), path=where)
    err.trace = traceback.format_exc()
    return err


def _back_up(run, o, bdir, batch):
    """Phase 1 for one action: its backup (made durable later by batch).  On failure o.backup stays None
    and the rollback removes whatever half-made backup is left."""
    same = _mounts.same_mount(bdir, o.target.parent_fd)
    st = o.target.lstat()
    if (st is None) != (o.st is None) or (st is not None and (st.st_ino, st.st_dev) != (o.st.st_ino, o.st.st_dev)):
        raise AtomicSwapError("%s changed between preflight and apply; nothing was swapped for it" % o.link["target"],
                              path=o.link["target"])
    o.backup = bk.create_backup(o.target, st, bdir, o.backup_ms, run.s.backup_tag,
                                {"plan_id": run.plan_id, "action_id": o.action.action_id}, run.policy,
                                run.durability, run.run_id, same,
                                known_hash=(bk.content_key(o.st), (o.before or {}).get("sha256")) if o.st else None,
                                batch=batch)


def _swap(run, o, batch):
    """Phase 2 for one action: exchange the new link with the backed-up entry (its directory synced by batch)."""
    swapped = swap.symlink_replace_at(o.target.parent_fd, o.target.name, o.link["source"], run.run_id,
                                      run.durability, expect=o.backup.expect, batch=batch,
                                      expect_hash=o.backup.meta.get("payload_hash"))
    o.swap_method = swapped.method
    # Its backup was made durable with the plan's (phase 1); skipped fsyncs (policy) make nothing durable.
    o.backup_durable = run.durability.durable
    o.result = "changed"
    _changed_event(run, o)


def _apply_report(run, outs, base, err, rolled, committed, smoke_results=()):
    actions = []
    for o in outs:
        after = None
        if o.noop:
            result = "unchanged"
        else:
            result = o.result or ("skipped" if err is not None else "changed")
        if committed:
            after = file_state(o.target.parent_fd, o.target.name)
        elif result == "changed":
            after = {"kind": "symlink", "link_target": o.link["source"], "mode": "0777", "owner": "0:0"}
        else:
            after = o.before
        a = {"action_id": o.action.action_id, "path": o.link["target"], "source": o.link["source"], "result": result,
             "hash_alg": fs.HASH_ALG, "before_hash": (o.before or {}).get("sha256"),
             "after_hash": (after or {}).get("sha256"), "before": o.before, "after": after,
             "backup_durable": o.backup_durable if o.backup is not None else None, "swap_method": o.swap_method}
        if o.backup is not None and result == "changed":
            a["backup"] = o.backup.describe()
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
