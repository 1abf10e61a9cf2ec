# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The typed audit events of each stage: one method per event a stage emits, its fields as parameters. Private to this collection.

The stages never name an event stage or a field as free text: they call these methods, so every event a run
can emit is listed here, with the fields schemas/report.schema.json and docs/facts.md describe.
"""

from __future__ import absolute_import, division, print_function


class StageEvents(object):
    """The events every stage may emit: its plan, crash recovery, running without a lock, preflight rows."""

    # The stage of the event that says a stage runs without a lock (its "attempt").
    attempt_stage = None

    def __init__(self, rep):
        self._rep = rep

    def plan(self, actions, preset):
        self._rep.event("plan", "success", actions=actions, preset=preset)

    def unlocked(self, reason):
        """locking: optional and the lock could not be taken: the run goes on, and says so."""
        self._rep.event(self.attempt_stage, "warn", msg="running without a lock: %s" % reason, lock_backend="none")

    def recovery_left_alone(self, plan_id, run_id):
        self._rep.event("recovery", "warn", recovered_plan_id=plan_id, recovered_run_id=run_id,
                        msg="plan %s is still running in another process; left alone" % plan_id)

    def recovered(self, plan_id, run_id, ok, paths, msg):
        self._rep.event("recovery", "success" if ok else "failure", recovered_plan_id=plan_id,
                        recovered_run_id=run_id, paths=paths, msg=msg)

    def preflight_row(self, action_id, path, policy_ok, current_kind, planned_kind, stops, warnings, overridden):
        """One preflight row: failure with STOPs not overridden, warn with warnings, else success."""
        decision = "failure" if (stops and not overridden) else ("warn" if warnings else "success")
        self._rep.event("preflight", decision, action_id=action_id, path=path, policy_ok=policy_ok,
                        current_kind=current_kind, planned_kind=planned_kind,
                        stops=[s["msg"] for s in stops] or None,
                        knobs=sorted(set(s["knob"] for s in stops)) or None, warnings=warnings or None)

    def preflight_summary(self, rows, stops, warnings, stop_paths, overridden):
        self._rep.event("preflight.summary", "failure" if stops else ("warn" if warnings else "success"), rows=rows,
                        stops=stops, warnings=warnings, stop_paths=stop_paths, overridden=overridden)


class PreflightEvents(StageEvents):
    """safe_preflight: plan, recovery (check mode), one event per row and a summary."""


class ApplyEvents(StageEvents):
    """safe_apply: the attempt (under the lock, after preflight), one result per action, smoke, rollback."""

    attempt_stage = "apply.attempt"

    def attempt(self, actions, lock_facts):
        self._rep.event("apply.attempt", "success", actions=actions, **lock_facts)

    def attempt_refused(self, msg, lock_facts):
        """The lock was not taken, or preflight found a STOP: nothing was touched."""
        self._rep.event("apply.attempt", "failure", msg=msg, **lock_facts)

    def action_changed(self, action_id, path, source, hash_alg, before_hash, backup_durable):
        self._rep.event("apply.result", "success", action_id=action_id, path=path, source=source, result="changed",
                        hash_alg=hash_alg, before_hash=before_hash, backup_durable=backup_durable)

    def journal_failed(self, msg, backup_durable):
        self._rep.event("apply.result", "failure", msg=msg, backup_durable=backup_durable)

    def smoke(self, results):
        bad = [r for r in results if not r["ok"]]
        self._rep.event("apply.result", "failure" if bad else "success", msg="smoke checks",
                        smoke=[dict(r) for r in results])

    def rolled_back(self, action_id, path):
        self._rep.event("rollback", "success", action_id=action_id, path=path)

    def rollback_failed(self, action_id, path, msg):
        self._rep.event("rollback", "failure", action_id=action_id, path=path, msg=msg)

    def rollback_summary(self, paths, failed):
        self._rep.event("rollback.summary", "failure" if failed else "success", paths=paths, failed=failed)


class RestoreEvents(StageEvents):
    """safe_restore: its attempt (under the lock, every backup verified) and one event per target, all of
    stage `restore`."""

    attempt_stage = "restore"

    def attempt(self, actions, lock_facts):
        self._rep.event("restore", "success", actions=actions, **lock_facts)

    def result(self, path, result, preservation_applied=None):
        self._rep.event("restore", "success", path=path, result=result, preservation_applied=preservation_applied)

    def failed(self, msg, path=None):
        self._rep.event("restore", "failure", msg=msg, path=path)


class PruneEvents(StageEvents):
    """safe_prune: one `prune.result` event, success or failure."""

    attempt_stage = "prune.result"

    def result(self, pruned, targets):
        self._rep.event("prune.result", "success", pruned=pruned, targets=targets)

    def failed(self, msg, path=None):
        self._rep.event("prune.result", "failure", msg=msg, path=path)


BY_STAGE = {"preflight": PreflightEvents, "apply": ApplyEvents, "restore": RestoreEvents, "prune": PruneEvents}
