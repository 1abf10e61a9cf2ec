#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switchyard.fs.safe_restore module: its documentation and its options; the engine does the restore."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: safe_restore
short_description: Restore targets exactly from verified switchyard backups
version_added: 0.1.0
description:
  - Puts back what a target was before a swap (a file with its bytes and the tier's metadata, a symlink, or nothing),
    from its V(latest) or V(previous) complete backup, or undoes every action of one apply by O(plan_id).
  - The backup's sha256 is verified against its sidecar before the target is touched; a tampered backup fails with
    E_RESTORE_FAILED and changes nothing. A target that already matches its backup is left alone (C(changed=false)).
  - The restore never destroys data - a target that is now a regular file differing from the backup is refused.
options:
  targets:
    description: Host paths inside O(root) to restore. Mutually exclusive with O(plan_id).
    type: list
    elements: path
  plan_id:
    description: Undo everything one M(switchyard.fs.safe_apply) run with this plan id did, using that run's backups.
    type: str
  which:
    description: Which backup of each target to restore (with O(targets)).
    type: str
    choices: [latest, previous]
    default: latest
seealso:
  - module: switchyard.fs.safe_apply
    description: Makes the backups this module restores.
  - module: switchyard.fs.safe_prune
    description: Delete old backups.
author:
  - switchyard.fs contributors (@switchyard)
extends_documentation_fragment:
  - switchyard.fs.common
  - switchyard.fs._attributes
  - switchyard.fs._attributes.diff
'''

EXAMPLES = r'''
- name: Restore ls from its latest backup
  switchyard.fs.safe_restore:
    root: /srv/sandbox
    targets: [/srv/sandbox/usr/bin/ls]

- name: Undo a whole apply by plan id, under the production preset
  switchyard.fs.safe_restore:
    root: /srv/sandbox
    preset: production
    plan_id: "{{ swap.plan_id }}"
'''

RETURN = r'''
changed: {description: 'Whether the filesystem changed (in check mode, whether it would).', returned: always, type: bool,
  sample: true}
plan_id: {description: UUIDv5 over the normalised plan; the same plan has the same id on every host and in check
    mode., returned: 'success, or failure after planning', type: str, sample: 075a00b1-4f61-5fde-8bb8-2b70498e00c3}
msg: {description: What happened., returned: always, type: str, sample: 1 target(s) restored}
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
    switchyard_restore:
      description: The restore report, validated on the controller against the collection's JSON schema. The facts
        guide of this collection documents every field.
      returned: always
      type: dict
      contains:
        schema_version: {description: 'Version of the report schema (2: the compact report).', returned: always,
          type: int, sample: 2}
        collection_version: {description: Version of switchyard.fs that wrote the report., returned: always, type: str,
          sample: 0.2.0}
        stage: {description: The module's stage., returned: always, type: str, sample: restore}
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
            changed: {description: Targets restored., returned: always, type: int, sample: 2}
            sidecar_integrity_verified: {description: Every backup's hash matched its sidecar., returned: always,
              type: bool, sample: true}
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
                /: {fstype: ext4, rw: true, exec: true, method: statvfs}
            op: {description: The operation most entries have., returned: when shared, type: str, sample: restore}
        recovery:
          description: Plans a crash left unfinished that this run rolled back first (empty normally).
          returned: always
          type: list
          elements: dict
          sample: []
        preset: {description: The O(preset)., returned: always, type: str, sample: default}
        results:
          description: 'One entry per restored target: its decision and its result. With O(targets), each entry
            also carries the restore preflight findings of its target (C(policy_ok), C(stops), C(warnings), C(restore_ready),
            C(current_kind), C(planned_kind), C(mount), C(immutable_check), ...), documented by M(switchyard.fs.safe_preflight).
            Compact: what most entries share is said once in C(plan) and derived fields are left out; the C(switchyard.fs.report_entries)
            filter spells every entry out, and the facts guide of this collection documents every field.'
          returned: always
          type: list
          elements: dict
          contains:
            action_id: {description: UUIDv5 of the action; the same on every host and in check mode., returned: always,
              type: str, sample: 2271eb51-67c7-5101-bec3-de90281d5b91}
            path: {description: 'The target, as seen from inside O(root).', returned: always, type: str, sample: /usr/bin/cat}
            result: {description: V(changed) or V(unchanged) (the target already matches its backup)., returned: always,
              type: str, sample: changed}
            hash_alg: {description: Always V(sha256)., returned: unless it is the plan's value (in C(plan)) or derived,
              type: str, sample: sha256}
            before_hash: {description: sha256 of the target before the restore (null unless a regular file)., returned: always,
              type: str, sample: null}
            after_hash: {description: sha256 of the restored target., returned: unless it is the plan's value (in
                C(plan)) or derived, type: str, sample: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3}
            before:
              description: The target before the restore - C(kind), C(link_target), C(sha256), C(mode), C(owner),
                C(size).
              returned: always
              type: dict
              sample: {kind: symlink, link_target: /opt/provider/bin/cat, mode: '0777', owner: '0:0'}
            after:
              description: The target after the restore, the same fields as C(before).
              returned: unless it is the plan's value (in C(plan)) or derived
              type: dict
              sample: {kind: file, sha256: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3, mode: '0755',
                owner: '0:0', size: 28}
            backup:
              description: The backup restored from - C(backup_name), C(sidecar), C(payload_hash), C(backup_method),
                C(prior_kind), C(created_ms), C(backup_preservation).
              returned: always
              type: dict
              sample: {backup_name: .cat.switchyard.1796136349399.bak, backup_method: hardlink, prior_kind: file,
                created_ms: 1796136349399}
            sidecar_integrity_verified: {description: The backup's hash matched its sidecar before the target was
                touched., returned: unless it is the plan's value (in C(plan)) or derived, type: bool, sample: true}
            preservation_applied:
              description: Per metadata field of the tier - V(applied), V(skipped-unsupported) or V(failed).
              returned: unless it is the plan's value (in C(plan)) or derived
              type: dict
              sample: {mode: applied}
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
        stage: restore
        plan_id: 559c0a68-13f0-59ac-8cba-21de077c5070
        run_id: e4a680f5-61c8-4b58-9634-9e5eb81c9d32
        dry_run: false
        ts: '2026-12-01T17:34:39.762818Z'
        summary: {targets: 1, changed: 1, backup_durable: true, decision: success, sidecar_integrity_verified: true}
        root: /srv/sandbox
        preset: default
        results:
          - action_id: b443a1d3-a9f4-5f58-8345-9a4fbe821919
            path: /usr/bin/cat
            op: restore
            policy_ok: true
            current_kind: symlink
            restore_ready: true
            planned_kind: file
            noop: false
            mount: /
            immutable_detection_method: ioctl
            immutable_check:
              immutable: false
              append_only: false
              reliable: true
              target: {method: not_applicable, immutable: false, append_only: false, reliable: true, detail: 'symlink:
                  inode flags cannot be set on a symlink (chattr follows it)'}
              directory: {method: ioctl, immutable: false, append_only: false, reliable: true, detail: FS_IOC_GETFLAGS}
            preservation:
              tier: basic
              fields: [mode]
              probed: [the target directory]
            preservation_supported: {mode: true}
            result: changed
            before: {kind: symlink, mode: '0777', owner: '0:0', link_target: /opt/provider/bin/cat}
            after: {kind: file, mode: '0755', owner: '0:0', sha256: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3,
              size: 28}
            backup: {backup_name: .cat.switchyard.1796146479697.bak, created_ms: 1796146479697, prior_kind: file,
              payload_hash: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3, backup_method: hardlink,
              backup_preservation: null}
            sidecar_integrity_verified: true
            preservation_applied: {mode: applied}
            hash_alg: sha256
            before_hash: null
        recovery: []
        lock_backend: flock
        lock_wait_ms: 0.007
        lock_attempts: 1
        events:
          - {stage: plan, dt_us: -29408, actions: 1, preset: default}
          - {stage: preflight, a: 0, dt_us: -28599}
          - stage: preflight.summary
            dt_us: -28566
            rows: 1
            stops: 0
            warnings: 0
            stop_paths: []
            overridden: 0
          - {stage: restore, dt_us: -28405, actions: 1, lock_backend: flock, lock_wait_ms: 0.007, lock_attempts: 1}
          - {stage: restore, a: 0, dt_us: -7969}
        plan:
          mounts:
            /: {fstype: ext4, rw: true, exec: true, method: statvfs}
'''

from ansible_collections.switchyard.fs.plugins.module_utils._module import ArgumentSpec, run_module
from ansible_collections.switchyard.fs.plugins.module_utils.engine import restore


def main():
    spec = ArgumentSpec({
        "targets": {"type": "list", "elements": "path"},
        "plan_id": {"type": "str"},
        "which": {"type": "str", "default": "latest", "choices": ["latest", "previous"]},
    }, mutually_exclusive=[["targets", "plan_id"]], required_one_of=[["targets", "plan_id"]])
    run_module(spec, "restore", lambda module, settings: restore(
        settings, module.params["targets"], module.params["plan_id"], module.params["which"]))


if __name__ == "__main__":
    main()
