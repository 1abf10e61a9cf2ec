#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

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
attributes:
  async:
    support: none
    description: Runs synchronously only; the action plugin refuses C(async) because it validates the report the module returns.
  check_mode:
    support: full
    description: Runs every probe for real and changes nothing.
  diff_mode:
    support: full
    description: Shows kind, link target, sha256, mode and owner before and after; never file bytes.
  platform:
    support: full
    platforms: posix
    description: Linux managed hosts (uses flock, ioctl FS_IOC_GETFLAGS and *at syscalls).
seealso:
  - module: switchyard.fs.safe_apply
    description: Makes the backups this module restores.
  - module: switchyard.fs.safe_prune
    description: Delete old backups.
author:
  - switchyard.fs contributors (@switchyard)
extends_documentation_fragment:
  - switchyard.fs.common
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
changed:
  description: Whether the filesystem changed (in check mode, whether it would).
  returned: always
  type: bool
  sample: true
plan_id:
  description: >-
    UUIDv5 over the normalised plan; the same plan has the same id on every host and in check mode. Keep it for M(switchyard.fs.safe_restore)
    O(switchyard.fs.safe_restore#module:plan_id).
  returned: success, or failure after planning
  type: str
  sample: 075a00b1-4f61-5fde-8bb8-2b70498e00c3
msg:
  description: What happened.
  returned: always
  type: str
  sample: 2 target(s) restored
error_id:
  description: Stable error id (E_POLICY, E_OWNERSHIP, E_LOCKING, E_ATOMIC_SWAP, E_EXDEV, E_BACKUP_MISSING, E_RESTORE_FAILED, E_SMOKE, E_INTERNAL).
  returned: failure
  type: str
  sample: E_POLICY
exit_code:
  description: Numeric code of RV(error_id), from 10 (V(E_POLICY)) to 90 (V(E_INTERNAL)).
  returned: failure
  type: int
  sample: 10
summary_error_ids:
  description: The specific cause first, then the classification.
  returned: failure
  type: list
  elements: str
  sample:
  - E_POLICY
rolled_back:
  description: Whether actions already applied were rolled back.
  returned: failure
  type: bool
  sample: false
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
      description: The restore report, validated on the controller against the collection's JSON schema.
      returned: always
      type: dict
      contains:
        schema_version:
          description: 'Version of the report schema (2: the compact report).'
          returned: always
          type: int
          sample: 2
        collection_version:
          description: Version of switchyard.fs that wrote the report.
          returned: always
          type: str
          sample: 0.2.0
        stage:
          description: The module's stage.
          returned: always
          type: str
          sample: restore
        plan_id:
          description: UUIDv5 over the normalised plan (root-relative), the same on every host and in check mode.
          returned: always
          type: str
          sample: 075a00b1-4f61-5fde-8bb8-2b70498e00c3
        run_id:
          description: Random id of this run; names the journal of an apply.
          returned: always
          type: str
          sample: 5dac62f2-7ee8-4b91-959b-6b096c37dc08
        dry_run:
          description: Check mode, or a stage that never changes anything (preflight).
          returned: always
          type: bool
          sample: false
        ts:
          description: UTC time the report was written.
          returned: always
          type: str
          sample: '2026-12-01T14:45:49.398201Z'
        root:
          description: The O(root) every path is resolved beneath.
          returned: always
          type: str
          sample: /srv/sandbox
        summary:
          description: Counts and the run's decision.
          returned: always
          type: dict
          contains:
            decision:
              description: V(success) or V(failure).
              returned: always
              type: str
              sample: success
            error_id:
              description: Error id of a failed run.
              returned: on failure
              type: str
              sample: E_SMOKE
            backup_durable:
              description: Every fsync of backups, sidecars, directories and the journal succeeded.
              returned: always
              type: bool
              sample: true
            targets:
              description: Targets.
              returned: always
              type: int
              sample: 2
            changed:
              description: Targets restored.
              returned: always
              type: int
              sample: 2
            sidecar_integrity_verified:
              description: Every backup's hash matched its sidecar.
              returned: always
              type: bool
              sample: true
        plan:
          description: >-
            Facts shared by the plan's entries, said once: a key an entry lacks takes the value here; C(mounts) maps a mountpoint to the mount facts an
            entry's C(mount) names.
          returned: when the report has entries that share facts
          type: dict
          contains:
            mounts:
              description: Mount facts by mountpoint.
              returned: when an entry has a mount
              type: dict
              sample:
                /:
                  fstype: ext4
                  rw: true
                  exec: true
                  method: statvfs
            op:
              description: The operation most entries have.
              returned: when shared
              type: str
              sample: restore
        recovery:
          description: Plans a crash left unfinished that this run rolled back first (empty normally).
          returned: always
          type: list
          elements: dict
          sample: []
        preset:
          description: The O(preset).
          returned: always
          type: str
          sample: default
        results:
          description: >-
            One entry per restored target. One entry per action: its preflight findings (the former rows), its decision and its result. Compact: what
            most entries share is in C(plan), derived fields are left out (the collection's facts documentation says how; C(switchyard.fs) plugin_utils
            C(entries()) spells them out).
          returned: always
          type: list
          elements: dict
          contains:
            path:
              description: The target, as seen from inside O(root).
              returned: always
              type: str
              sample: /usr/bin/cat
            result:
              description: V(changed) or V(unchanged) (the target already matches its backup).
              returned: always
              type: str
              sample: changed
            before:
              description: The target before the restore.
              returned: always
              type: dict
              contains: &id001
                kind:
                  description: V(file), V(symlink), V(absent), V(directory) or V(other).
                  returned: always
                  type: str
                  sample: file
                link_target:
                  description: The link text, for a symlink.
                  returned: when kind is symlink
                  type: str
                  sample: /opt/provider/bin/cat
                sha256:
                  description: sha256 of the bytes, for a regular file.
                  returned: when kind is file
                  type: str
                  sample: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3
                mode:
                  description: Permission bits in octal.
                  returned: when the path exists
                  type: str
                  sample: '0755'
                owner:
                  description: C(uid:gid).
                  returned: when the path exists
                  type: str
                  sample: 0:0
                size:
                  description: Size in bytes, for a regular file.
                  returned: when kind is file
                  type: int
                  sample: 28
            after:
              description: The target after the restore.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: dict
              contains: *id001
            backup:
              description: The backup restored from.
              returned: always
              type: dict
              contains:
                backup_name:
                  description: File name of the backup payload, next to the target (or in O(policy.backup_dir)).
                  returned: always
                  type: str
                  sample: .cat.switchyard.1796136349399.bak
                sidecar:
                  description: File name of the backup's C(backup_meta.v2) sidecar.
                  returned: always
                  type: str
                  sample: .cat.switchyard.1796136349399.bak.meta.json
                payload_hash:
                  description: sha256 of the backed-up bytes, checked before any restore.
                  returned: when the prior kind is file
                  type: str
                  sample: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3
                backup_method:
                  description: V(hardlink), V(copy), V(symlink) or V(none) (the target was absent).
                  returned: always
                  type: str
                  sample: hardlink
                prior_kind:
                  description: What the target was - V(file), V(symlink) or V(absent).
                  returned: always
                  type: str
                  sample: file
                created_ms:
                  description: Creation time in milliseconds since the epoch; part of the backup name.
                  returned: always
                  type: int
                  sample: 1796136349399
            sidecar_integrity_verified:
              description: The backup's hash matched its sidecar before the target was touched.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: bool
              sample: true
            preservation_applied:
              description: Per metadata field - V(applied), V(unsupported) or V(failed).
              returned: unless it is the plan's value (in C(plan)) or derived
              type: dict
              sample:
                mode: applied
            hash_alg:
              description: Always V(sha256).
              returned: unless it is the plan's value (in C(plan)) or derived
              type: str
              sample: sha256
            before_hash:
              description: sha256 of the target before the restore (null unless a regular file).
              returned: always
              type: str
              sample:
            after_hash:
              description: sha256 of the restored target.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: str
              sample: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3
            action_id:
              description: UUIDv5 of the action; the same on every host and in check mode.
              returned: always
              type: str
              sample: 2271eb51-67c7-5101-bec3-de90281d5b91
            op:
              description: V(link) for a swap, V(restore) for a restore.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: str
              sample: link
            source:
              description: The link's source, as seen from inside O(root).
              returned: for links
              type: str
              sample: /opt/provider/bin/cat
            link_text:
              description: The text the link will hold.
              returned: for links
              type: str
              sample: /opt/provider/bin/cat
            current_kind:
              description: What the target is now.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: str
              sample: file
            planned_kind:
              description: What the target will be.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: str
              sample: symlink
            noop:
              description: The target already is what the plan wants.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: bool
              sample: false
            policy_ok:
              description: No STOP for this row.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: bool
              sample: true
            stops:
              description: Why the row stops; empty when the row's C(policy_ok) is true.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: list
              elements: dict
              contains:
                msg:
                  description: What stops and how to change it.
                  returned: always
                  type: str
                  sample: /usr/bin/ls is under forbidden path /usr/bin (remove it from policy.forbid_paths to proceed)
                knob:
                  description: The policy knob (or option) that changes the decision.
                  returned: always
                  type: str
                  sample: forbid_paths
                error_id:
                  description: The error id the STOP fails with.
                  returned: always
                  type: str
                  sample: E_POLICY
              sample: []
            warnings:
              description: Findings that do not stop the row.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: list
              elements: str
              sample: []
            notes:
              description: Informational findings (package ownership, diversions, alternatives).
              returned: unless it is the plan's value (in C(plan)) or derived
              type: list
              elements: str
              sample: []
            mount:
              description: Mount of the target's directory - mountpoint, fstype, rw, exec, method.
              returned: for links and restores
              type: dict
              sample:
                exec: true
                fstype: ext4
                method: statvfs
                mountpoint: /
                rw: true
            immutable_detection_method:
              description: V(ioctl), V(lsattr), V(unknown) or V(not_applicable).
              returned: when probed
              type: str
              sample: ioctl
            provenance:
              description: Owner uid/gid and owning package (C(pkg), C(backend)) when a package database knows it.
              returned: for links
              type: dict
              sample:
                backend:
                gid: 0
                pkg:
                uid: 0
            restore_ready:
              description: A complete backup exists and its hash verifies.
              returned: for restores
              type: bool
              sample: true
        lock_backend:
          description: V(flock), or V(none) when the run went on without the lock (O(policy.locking=optional)).
          returned: always
          type: str
          sample: flock
        lock_wait_ms:
          description: How long the run waited for the lock.
          returned: always
          type: float
          sample: 0.01
        lock_attempts:
          description: How many times the lock was tried.
          returned: always
          type: int
          sample: 1
        events:
          description: >-
            The audit events of the run, in order, compact: envelope, C(event_id), C(seq) and C(ts) are derived and per-action events reference their
            entry (C(a)). O(audit_log) and the C(switchyard.fs.audit_jsonl) callback get every event in full.
          returned: always
          type: list
          elements: dict
          contains:
            stage:
              description: >-
                The step - V(plan), V(preflight), V(preflight.summary), V(apply.attempt), V(apply.result), V(rollback), V(rollback.summary), V(restore),
                V(prune.result) or V(recovery).
              returned: always
              type: str
              sample: apply.result
            decision:
              description: V(success), V(failure) or V(warn).
              returned: always
              type: str
              sample: success
            seq:
              description: Position of the event in the run; given only when not its position in the list.
              returned: when not its position
              type: int
              sample: 5
            path:
              description: The target the event is about.
              returned: for per-target events without an entry (C(a))
              type: str
              sample: /usr/bin/cat
            a:
              description: Index of the entry the event is about; the event does not repeat the entry's fields.
              returned: for per-action events
              type: int
              sample: 0
            dt_us:
              description: "When: microseconds from the report's C(ts)."
              returned: always
              type: int
              sample: -5429
            n:
              description: How many consecutive events of consecutive entries this record stands for.
              returned: for a group
              type: int
              sample: 2
            gaps_us:
              description: Microseconds from each event of a group to the next.
              returned: for a group
              type: list
              sample:
              - 39
              elements: int
      sample:
        schema_version: 2
        collection_version: 0.2.0
        stage: restore
        plan_id: dd2da82f-dd4e-56ae-bcf8-51b8877c0bf5
        run_id: beb6c9a5-8ef7-4e3e-ab9a-141dc0f6231f
        dry_run: false
        ts: '2026-12-01T15:42:27.056749Z'
        summary:
          targets: 2
          changed: 2
          backup_durable: true
          decision: success
          sidecar_integrity_verified: true
        root: /srv/sandbox
        preset: default
        results:
        - action_id: d443d85a-d573-5a57-87ed-eb6af1a9a0cd
          path: /usr/bin/cat
          result: changed
          before:
            link_target: /opt/prov/bin/cat
          after:
            sha256: 008f819498fe591f3cc920d543709347d8d14a139bb3482bc2cd8635c1b3162e
            size: 44016
          backup:
            backup_name: .cat.switchyard.1796139747034.bak
            created_ms: 1796139747034
            payload_hash: 008f819498fe591f3cc920d543709347d8d14a139bb3482bc2cd8635c1b3162e
          before_hash:
        - action_id: b5aab08f-6356-55fc-b333-7e050aae3115
          path: /usr/bin/ls
          result: changed
          before:
            link_target: /opt/prov/bin/ls
          after:
            sha256: cb30d69b24245bf2ecdc9e7f53bbad19159999970b6d82c0c00c7d32d9e37aa4
            size: 151344
          backup:
            backup_name: .ls.switchyard.1796139746989.bak
            created_ms: 1796139746989
            payload_hash: cb30d69b24245bf2ecdc9e7f53bbad19159999970b6d82c0c00c7d32d9e37aa4
          before_hash:
        recovery: []
        lock_backend: flock
        lock_wait_ms: 0.002
        lock_attempts: 1
        events:
        - stage: plan
          dt_us: -11080
          actions: 2
          preset: default
        - stage: preflight
          a: 0
          dt_us: -8356
          n: 2
          gaps_us:
          - 29
        - stage: preflight.summary
          dt_us: -8312
          rows: 2
          stops: 0
          warnings: 0
          stop_paths: []
          overridden: 0
        - stage: apply.attempt
          dt_us: -8059
          actions: 2
          lock_backend: flock
          lock_wait_ms: 0.002
          lock_attempts: 1
        - stage: restore
          a: 0
          dt_us: -1399
          n: 2
          gaps_us:
          - 1079
        plan:
          mounts:
            /:
              fstype: ext4
              rw: true
              exec: true
              method: statvfs
          before:
            kind: symlink
            mode: '0777'
            owner: 0:0
          after:
            kind: file
            mode: '0755'
            owner: 0:0
          backup:
            backup_method: hardlink
            backup_preservation:
            prior_kind: file
          op: restore
          policy_ok: true
          current_kind: symlink
          planned_kind: file
          noop: false
          mount: /
          immutable_detection_method: ioctl
          immutable_check:
            immutable: false
            append_only: false
            reliable: true
            target:
              method: not_applicable
              immutable: false
              append_only: false
              reliable: true
              detail: 'symlink: inode flags cannot be set on a symlink (chattr follows it)'
            directory:
              method: ioctl
              immutable: false
              append_only: false
              reliable: true
              detail: FS_IOC_GETFLAGS
          preservation:
            tier: basic
            fields:
            - mode
            probed:
            - the target directory
          preservation_supported:
            mode: true
          restore_ready: true
          hash_alg: sha256
          sidecar_integrity_verified: true
          preservation_applied:
            mode: applied
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
