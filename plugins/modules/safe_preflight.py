#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: safe_preflight
short_description: Run every switchyard preflight gate for real and change nothing
version_added: 0.1.0
description:
  - Returns one row per planned link or restore, sorted by (path, action_id), with every STOP naming the path and the
    policy knob that changes it. The preflight guide describes every gate.
  - Never changes anything, in check mode or not; fails with E_POLICY when any STOP exists unless O(fail_on_stop=false).
options:
  links:
    description: Planned swaps, as for M(switchyard.fs.safe_apply).
    type: list
    elements: dict
    suboptions:
      source:
        description: Host path inside O(root) the link would point to.
        type: path
        required: true
      target:
        description: Host path inside O(root) that would be replaced.
        type: path
        required: true
  restores:
    description: Targets whose restore readiness (a complete backup whose hash verifies) to check.
    type: list
    elements: path
  which:
    description: Which backup O(restores) would use.
    type: str
    choices: [latest, previous]
    default: latest
  fail_on_stop:
    description: Fail the task when any STOP exists.
    type: bool
    default: true
attributes:
  async:
    support: none
    description: Runs synchronously only; the action plugin refuses C(async) because it validates the report the module returns.
  check_mode:
    support: full
    description: Runs every probe for real and changes nothing.
  diff_mode:
    support: none
    description: Changes nothing, so it has no diff; the planned states are in the rows (C(current_kind), C(planned_kind)).
  platform:
    support: full
    platforms: posix
    description: Linux managed hosts (uses flock, ioctl FS_IOC_GETFLAGS and *at syscalls).
seealso:
  - module: switchyard.fs.safe_apply
    description: Make the swaps this module checks.
  - module: switchyard.fs.safe_restore
    description: Restore targets whose readiness this module checks.
author:
  - switchyard.fs contributors (@switchyard)
extends_documentation_fragment:
  - switchyard.fs.common
'''

EXAMPLES = r'''
- name: Preflight a swap under the production preset
  switchyard.fs.safe_preflight:
    root: /srv/sandbox
    preset: production
    links:
      - {source: /srv/sandbox/opt/provider/bin/ls, target: /srv/sandbox/usr/bin/ls}
    fail_on_stop: false
  register: pre

- name: Report the rows that would STOP
  ansible.builtin.debug:
    msg: "{{ ansible_facts.switchyard_preflight.rows | rejectattr('policy_ok') | list }}"
'''

RETURN = r'''
changed:
  description: Whether the filesystem changed (in check mode, whether it would).
  returned: always
  type: bool
  sample: false
plan_id:
  description:
  - UUIDv5 over the normalised plan; the same plan has the same id on every host and in check mode.
  - With O(links), the id M(switchyard.fs.safe_apply) gives the same links (rows carry its action ids); with only
    O(restores), the id of M(switchyard.fs.safe_restore) with the same targets and O(which).
  returned: success, or failure after planning
  type: str
  sample: 075a00b1-4f61-5fde-8bb8-2b70498e00c3
msg:
  description: What happened.
  returned: always
  type: str
  sample: 'preflight: 2 row(s), 0 STOP(s), 0 warning(s)'
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
    switchyard_preflight:
      description: The preflight report, validated on the controller against the collection's JSON schema.
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
          sample: preflight
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
          sample: true
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
            policy_ok:
              description: No row stops.
              returned: always
              type: bool
              sample: true
            rows:
              description: Rows.
              returned: always
              type: int
              sample: 2
            stops:
              description: Rows that stop.
              returned: always
              type: int
              sample: 0
            warnings:
              description: Warnings.
              returned: always
              type: int
              sample: 0
            dry_run:
              description: Always true for preflight.
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
              sample: link
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
        policy:
          description: The resolved policy (preset and overrides).
          returned: always
          type: dict
          sample: {}
        rows:
          description: >-
            One row per planned action, ordered by (path, action_id), with every gate's result. Compact: what most entries share is in C(plan), derived
            fields are left out (the collection's facts documentation says how; C(switchyard.fs) plugin_utils C(entries()) spells them out).
          returned: always
          type: list
          elements: dict
          contains:
            action_id:
              description: UUIDv5 of the action; the same on every host and in check mode.
              returned: always
              type: str
              sample: 2271eb51-67c7-5101-bec3-de90281d5b91
            path:
              description: The target, as seen from inside O(root).
              returned: always
              type: str
              sample: /usr/bin/cat
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
        stage: preflight
        plan_id: 7f57ce8a-6863-55e9-8968-113758b2aa0a
        run_id: f31d3351-1c90-4ab3-8eb7-af96a5b24ac7
        dry_run: true
        ts: '2026-12-01T15:42:26.982473Z'
        summary:
          rows: 2
          stops: 0
          warnings: 0
          policy_ok: true
          dry_run: true
        root: /srv/sandbox
        preset: default
        rows:
        - action_id: beaaa3c3-a1eb-59ee-8d79-d8598ff95fbf
          path: /usr/bin/cat
          source: /opt/prov/bin/cat
        - action_id: e7e949a0-44d2-528c-a219-3ac21224e6c5
          path: /usr/bin/ls
          source: /opt/prov/bin/ls
        recovery: []
        events:
        - stage: plan
          dt_us: -2978
          actions: 2
          preset: default
        - stage: preflight
          a: 0
          dt_us: -100
          n: 2
          gaps_us:
          - 43
        - stage: preflight.summary
          dt_us: -37
          rows: 2
          stops: 0
          warnings: 0
          stop_paths: []
          overridden: 0
        plan:
          mounts:
            /:
              fstype: ext4
              rw: true
              exec: true
              method: statvfs
          op: link
          policy_ok: true
          current_kind: file
          planned_kind: symlink
          noop: false
          mount: /
          source_mount: /
          extra_mounts: []
          source_trusted: true
          immutable_detection_method: ioctl
          immutable_check:
            immutable: false
            append_only: false
            reliable: true
            target:
              method: ioctl
              immutable: false
              append_only: false
              reliable: true
              detail: FS_IOC_GETFLAGS
            directory:
              method: ioctl
              immutable: false
              append_only: false
              reliable: true
              detail: FS_IOC_GETFLAGS
          provenance:
            uid: 0
            gid: 0
            pkg:
            backend:
          backup_same_fs: true
          preservation:
            tier: basic
            fields:
            - mode
            probed:
            - the target directory
          preservation_supported:
            mode: true
'''

from ansible_collections.switchyard.fs.plugins.module_utils._module import ArgumentSpec, run_module
from ansible_collections.switchyard.fs.plugins.module_utils.engine import preflight


def main():
    spec = ArgumentSpec({
        "links": {"type": "list", "elements": "dict",
                  "options": {"source": {"type": "path", "required": True}, "target": {"type": "path", "required": True}}},
        "restores": {"type": "list", "elements": "path"},
        "which": {"type": "str", "default": "latest", "choices": ["latest", "previous"]},
        "fail_on_stop": {"type": "bool", "default": True},
    }, required_one_of=[["links", "restores"]])
    run_module(spec, "preflight", lambda module, settings: preflight(
        settings, module.params["links"], module.params["restores"], module.params["which"],
        module.params["fail_on_stop"]))


if __name__ == "__main__":
    main()
