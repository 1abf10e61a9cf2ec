#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switchyard.fs.safe_prune module: its documentation and its options; the engine does the pruning."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: safe_prune
short_description: Delete old switchyard backups, never the newest
version_added: 0.1.0
description:
  - Removes complete backups (payload and sidecar) of each target beyond O(retention_count) or older than
    O(retention_age); the newest backup of a target is always kept, and so is the newest backup holding a
    regular file (the original's bytes) unless O(policy.prune_keep_original=false).
  - A backup whose sidecar fails its field checks, and a payload without sidecar, are never deleted; they are
    reported as warnings. A sidecar whose payload is already gone (a prune killed between its two unlinks) is
    removed.
options:
  targets:
    description: Host paths inside O(root) whose backups to prune.
    type: list
    elements: path
    required: true
  retention_count:
    description: Keep at most this many backups per target (at least 1). Defaults to O(policy.retention_count).
    type: int
  retention_age:
    description: Delete backups older than this many seconds. Defaults to O(policy.retention_age).
    type: float
attributes:
  diff_mode:
    support: none
    description: Returns no diff; the deleted backups are listed in C(results[].pruned_backups).
seealso:
  - module: switchyard.fs.safe_apply
    description: Makes the backups this module deletes.
  - module: switchyard.fs.safe_restore
    description: Restore from the backups kept.
author:
  - switchyard.fs contributors (@switchyard)
extends_documentation_fragment:
  - switchyard.fs.common
  - switchyard.fs._attributes
'''

EXAMPLES = r'''
- name: Keep the two newest backups of ls
  switchyard.fs.safe_prune:
    root: /srv/sandbox
    targets: [/srv/sandbox/usr/bin/ls]
    retention_count: 2

- name: Prune under the production preset, keeping three backups and none older than 30 days
  switchyard.fs.safe_prune:
    root: /srv/sandbox
    preset: production
    targets: [/srv/sandbox/usr/bin/ls]
    retention_count: 3
    retention_age: 2592000
'''

RETURN = r'''
changed: {description: 'Whether the filesystem changed (in check mode, whether it would).', returned: always, type: bool,
  sample: true}
plan_id: {description: UUIDv5 over the normalised plan; the same plan has the same id on every host and in check
    mode., returned: 'success, or failure after planning', type: str, sample: 075a00b1-4f61-5fde-8bb8-2b70498e00c3}
msg: {description: What happened., returned: always, type: str, sample: 1 backup(s) pruned}
error_id: {description: 'Stable error id (E_POLICY, E_OWNERSHIP, E_LOCKING, E_ATOMIC_SWAP, E_EXDEV, E_BACKUP_MISSING,
    E_RESTORE_FAILED, E_SMOKE, E_INTERNAL).', returned: failure, type: str, sample: E_POLICY}
exit_code: {description: 'Numeric code of RV(error_id), from 10 (V(E_POLICY)) to 90 (V(E_INTERNAL)).', returned: failure,
  type: int, sample: 10}
summary_error_ids:
  description: The specific cause first, then the classification.
  returned: failure
  type: list
  elements: str
  sample: [E_POLICY]
rolled_back: {description: Whether actions already applied were rolled back., returned: failure, type: bool, sample: false}
rolled_back_paths:
  description: Paths put back by the rollback.
  returned: failure
  type: list
  elements: str
  sample: []
ansible_facts:
  description: Facts; the report has a key of its own per stage, so stages never overwrite each other.
  returned: always
  type: dict
  contains:
    switchyard_prune:
      description: The prune report, validated on the controller against the collection's JSON schema. The facts
        guide of this collection documents every field.
      returned: always
      type: dict
      contains:
        schema_version: {description: 'Version of the report schema (2: the compact report).', returned: always,
          type: int, sample: 2}
        collection_version: {description: Version of switchyard.fs that wrote the report., returned: always, type: str,
          sample: 0.2.0}
        stage: {description: The module's stage., returned: always, type: str, sample: prune}
        plan_id: {description: 'UUIDv5 over the normalised plan (root-relative), the same on every host and in check
            mode.', returned: always, type: str, sample: 075a00b1-4f61-5fde-8bb8-2b70498e00c3}
        run_id: {description: Random id of this run; names the journal of an apply., returned: always, type: str,
          sample: 5dac62f2-7ee8-4b91-959b-6b096c37dc08}
        dry_run: {description: 'Check mode, or a stage that never changes anything (preflight).', returned: always,
          type: bool, sample: false}
        ts: {description: UTC time the report was written., returned: always, type: str, sample: '2026-12-01T14:45:49.398201Z'}
        root: {description: The O(root) every path is resolved beneath., returned: always, type: str, sample: /srv/sandbox}
        summary:
          description: Counts and the run's decision.
          returned: always
          type: dict
          contains:
            decision: {description: V(success) or V(failure)., returned: always, type: str, sample: success}
            error_id: {description: Error id of a failed run., returned: on failure, type: str, sample: E_SMOKE}
            backup_durable: {description: 'Every fsync of backups, sidecars, directories and the journal succeeded.',
              returned: always, type: bool, sample: true}
            targets: {description: Targets., returned: always, type: int, sample: 2}
            pruned: {description: Backups deleted., returned: always, type: int, sample: 2}
        plan:
          description: 'Facts shared by the plan''s entries, said once: a key an entry lacks takes the value here;
            C(mounts) maps a mountpoint to the mount facts an entry''s C(mount) names.'
          returned: when the report has entries that share facts
          type: dict
          contains:
            mounts:
              description: Mount facts by mountpoint.
              returned: when an entry has a mount
              type: dict
              sample:
                /: {fstype: ext4}
            op: {description: The operation most entries have., returned: when shared, type: str, sample: link}
        recovery:
          description: Plans a crash left unfinished that this run rolled back first (empty normally).
          returned: always
          type: list
          elements: dict
          sample: []
        results:
          description: 'One entry per target. Compact: what most entries share is said once in C(plan) and derived
            fields are left out; the C(switchyard.fs.report_entries) filter spells every entry out, and the facts
            guide of this collection documents every field.'
          returned: always
          type: list
          elements: dict
          contains:
            path: {description: 'The target, as seen from inside O(root).', returned: always, type: str, sample: /usr/bin/ls}
            result: {description: V(changed) when backups were (or in check mode would be) deleted., returned: always,
              type: str, sample: changed}
            kept: {description: Backups kept; the newest is always kept., returned: always, type: int, sample: 1}
            pruned: {description: Backups deleted., returned: always, type: int, sample: 2}
            pruned_backups:
              description: File names of the deleted backups.
              returned: always
              type: list
              elements: str
              sample: [.ls.switchyard.1796136349399.bak]
        lock_backend: {description: 'V(flock), or V(none) when the run went on without the lock (O(policy.locking=optional)).',
          returned: always, type: str, sample: flock}
        lock_wait_ms: {description: How long the run waited for the lock., returned: always, type: float, sample: 0.01}
        lock_attempts: {description: How many times the lock was tried., returned: always, type: int, sample: 1}
        events:
          description: 'The audit events of the run, in order, compact: envelope, C(event_id), C(seq) and C(ts)
            are derived and per-action events reference their entry (C(a)). O(audit_log) and the C(switchyard.fs.audit_jsonl)
            callback get every event in full.'
          returned: always
          type: list
          elements: dict
          contains:
            stage: {description: 'The step - V(plan), V(preflight), V(preflight.summary), V(apply.attempt), V(apply.result),
                V(rollback), V(rollback.summary), V(restore), V(prune.result) or V(recovery).', returned: always,
              type: str, sample: apply.result}
            decision: {description: 'V(success), V(failure) or V(warn).', returned: always, type: str, sample: success}
            seq: {description: Position of the event in the run; given only when not its position in the list.,
              returned: when not its position, type: int, sample: 5}
            path: {description: The target the event is about., returned: for per-target events without an entry
                (C(a)), type: str, sample: /usr/bin/cat}
            a: {description: Index of the entry the event is about; the event does not repeat the entry's fields.,
              returned: for per-action events, type: int, sample: 0}
            dt_us: {description: 'When: microseconds from the report''s C(ts).', returned: always, type: int, sample: -5429}
            n: {description: How many consecutive events of consecutive entries this record stands for., returned: for
                a group, type: int, sample: 2}
            gaps_us:
              description: Microseconds from each event of a group to the next.
              returned: for a group
              type: list
              sample: [39]
              elements: int
      sample:
        schema_version: 2
        collection_version: 0.2.0
        stage: prune
        plan_id: f87728c7-c480-5f28-91c4-f51109f51a73
        run_id: 50171315-0776-4556-85c1-fd386aa9a59a
        dry_run: false
        ts: '2026-12-01T17:34:39.834821Z'
        summary: {targets: 1, pruned: 1, decision: success, backup_durable: true}
        root: /srv/sandbox
        results:
          - path: /usr/bin/cat
            kept: 1
            pruned: 1
            pruned_backups: [.cat.switchyard.1796146479697.bak]
            result: changed
        recovery: []
        lock_backend: flock
        lock_wait_ms: 0.005
        lock_attempts: 1
        events:
          - {stage: prune.result, dt_us: -81, pruned: 1, targets: 1}
'''

from ansible_collections.switchyard.fs.plugins.module_utils._module import ArgumentSpec, run_module
from ansible_collections.switchyard.fs.plugins.module_utils.engine import prune


def main():
    spec = ArgumentSpec({
        "targets": {"type": "list", "elements": "path", "required": True},
        "retention_count": {"type": "int"},
        "retention_age": {"type": "float"},
    })
    run_module(spec, "prune", lambda module, settings: prune(
        settings, module.params["targets"], module.params["retention_count"], module.params["retention_age"]))


if __name__ == "__main__":
    main()
