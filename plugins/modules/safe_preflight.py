#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switchyard.fs.safe_preflight module: its documentation and its options; the engine runs the gates."""

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
    description:
      - Planned swaps, as for M(switchyard.fs.safe_apply).
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
  diff_mode:
    support: none
    description: Changes nothing, so it has no diff; the planned states are in the rows (C(current_kind), C(planned_kind)).
seealso:
  - module: switchyard.fs.safe_apply
    description: Make the swaps this module checks.
  - module: switchyard.fs.safe_restore
    description: Restore targets whose readiness this module checks.
author:
  - switchyard.fs contributors (@switchyard)
extends_documentation_fragment:
  - switchyard.fs.common
  - switchyard.fs.common.links
  - switchyard.fs._attributes
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
changed: {description: 'Whether the filesystem changed (in check mode, whether it would).', returned: always, type: bool,
  sample: false}
plan_id:
  description: [UUIDv5 over the normalised plan; the same plan has the same id on every host and in check mode.,
    'With O(links), the id M(switchyard.fs.safe_apply) gives the same links (rows carry its action ids); with only
      O(restores), the id of M(switchyard.fs.safe_restore) with the same targets and O(which).']
  returned: success, or failure after planning
  type: str
  sample: 075a00b1-4f61-5fde-8bb8-2b70498e00c3
msg: {description: What happened., returned: always, type: str, sample: 'preflight: 1 row(s), 0 STOP(s), 0 warning(s)'}
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
    switchyard_preflight:
      description: The preflight report, validated on the controller against the collection's JSON schema. The facts
        guide of this collection documents every field.
      returned: always
      type: dict
      contains:
        schema_version: {description: 'Version of the report schema (2: the compact report).', returned: always,
          type: int, sample: 2}
        collection_version: {description: Version of switchyard.fs that wrote the report., returned: always, type: str,
          sample: 0.2.0}
        stage: {description: The module's stage., returned: always, type: str, sample: preflight}
        plan_id: {description: 'UUIDv5 over the normalised plan (root-relative), the same on every host and in check
            mode.', returned: always, type: str, sample: 075a00b1-4f61-5fde-8bb8-2b70498e00c3}
        run_id: {description: Random id of this run; names the journal of an apply., returned: always, type: str,
          sample: 5dac62f2-7ee8-4b91-959b-6b096c37dc08}
        dry_run: {description: 'Check mode, or a stage that never changes anything (preflight).', returned: always,
          type: bool, sample: true}
        ts: {description: UTC time the report was written., returned: always, type: str, sample: '2026-12-01T14:45:49.398201Z'}
        root: {description: The O(root) every path is resolved beneath., returned: always, type: str, sample: /srv/sandbox}
        summary:
          description: Counts and the run's decision.
          returned: always
          type: dict
          contains:
            policy_ok: {description: No row stops., returned: always, type: bool, sample: true}
            rows: {description: Rows., returned: always, type: int, sample: 2}
            stops: {description: Rows that stop., returned: always, type: int, sample: 0}
            warnings: {description: Warnings., returned: always, type: int, sample: 0}
            dry_run: {description: Always true for preflight., returned: always, type: bool, sample: true}
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
            op: {description: The operation most entries have., returned: when shared, type: str, sample: link}
        recovery:
          description: Plans a crash left unfinished that this run rolled back first (empty normally).
          returned: always
          type: list
          elements: dict
          sample: []
        preset: {description: The O(preset)., returned: always, type: str, sample: default}
        policy:
          description: The resolved policy (preset and overrides).
          returned: always
          type: dict
          sample: {}
        rows:
          description: 'One row per planned link or restore, sorted by (C(path), C(action_id)): the findings of
            every gate. Compact: what most entries share is said once in C(plan) and derived fields are left out;
            the C(switchyard.fs.report_entries) filter spells every entry out, and the facts guide of this collection
            documents every field.'
          returned: always
          type: list
          elements: dict
          contains:
            action_id: {description: UUIDv5 of the action; the same on every host and in check mode., returned: always,
              type: str, sample: 2271eb51-67c7-5101-bec3-de90281d5b91}
            path: {description: 'The target, as seen from inside O(root).', returned: always, type: str, sample: /usr/bin/cat}
            op: {description: 'V(link) for a swap, V(restore) for a restore.', returned: unless it is the plan's
                value (in C(plan)) or derived, type: str, sample: link}
            source: {description: 'The link''s source, as seen from inside O(root).', returned: for links, type: str,
              sample: /opt/provider/bin/cat}
            link_text: {description: The text the link will hold., returned: for links, type: str, sample: /opt/provider/bin/cat}
            current_kind: {description: What the target is now., returned: unless it is the plan's value (in C(plan))
                or derived, type: str, sample: file}
            planned_kind: {description: What the target will be., returned: unless it is the plan's value (in C(plan))
                or derived, type: str, sample: symlink}
            noop: {description: The target already is what the plan wants., returned: unless it is the plan's value
                (in C(plan)) or derived, type: bool, sample: false}
            policy_ok: {description: No STOP for this row., returned: unless it is the plan's value (in C(plan))
                or derived, type: bool, sample: true}
            stops:
              description: Why the row stops; empty when the row's C(policy_ok) is true.
              returned: unless it is the plan's value (in C(plan)) or derived
              type: list
              elements: dict
              contains:
                msg: {description: What stops and how to change it., returned: always, type: str, sample: /usr/bin/ls
                    is under forbidden path /usr/bin (remove it from policy.forbid_paths to proceed)}
                knob: {description: The policy knob (or option) that changes the decision., returned: always, type: str,
                  sample: forbid_paths}
                error_id: {description: The error id the STOP fails with., returned: always, type: str, sample: E_POLICY}
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
              sample: {exec: true, fstype: ext4, method: statvfs, mountpoint: /, rw: true}
            immutable_detection_method: {description: 'V(ioctl), V(lsattr), V(unknown) or V(not_applicable).', returned: when
                probed, type: str, sample: ioctl}
            provenance:
              description: Owner uid/gid and owning package (C(pkg), C(backend)) when a package database knows it.
              returned: for links
              type: dict
              sample: {backend: null, gid: 0, pkg: null, uid: 0}
            restore_ready: {description: A complete backup exists and its hash verifies., returned: for restores,
              type: bool, sample: true}
            overridden: {description: The row's STOPs were made warnings by O(policy.override_preflight)., returned: when
                true, type: bool, sample: true}
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
        stage: preflight
        plan_id: 8c189532-e001-5739-b05f-0ca0f98baf92
        run_id: b22cd6cb-48f3-4ed2-aff0-368c20959383
        dry_run: true
        ts: '2026-12-01T17:34:39.695280Z'
        summary: {rows: 1, stops: 0, warnings: 0, policy_ok: true, dry_run: true}
        root: /srv/sandbox
        preset: default
        rows:
          - action_id: 76d0e7f5-7307-56f8-b24d-987715a4c5e4
            path: /usr/bin/cat
            op: link
            policy_ok: true
            source: /opt/provider/bin/cat
            current_kind: file
            planned_kind: symlink
            noop: false
            mount: /
            source_mount: /
            source_trusted: true
            extra_mounts: []
            immutable_detection_method: ioctl
            immutable_check:
              immutable: false
              append_only: false
              reliable: true
              target: {method: ioctl, immutable: false, append_only: false, reliable: true, detail: FS_IOC_GETFLAGS}
              directory: {method: ioctl, immutable: false, append_only: false, reliable: true, detail: FS_IOC_GETFLAGS}
            provenance: {uid: 0, gid: 0, pkg: null, backend: null}
            backup_same_fs: true
            preservation:
              tier: basic
              fields: [mode]
              probed: [the target directory]
            preservation_supported: {mode: true}
        recovery: []
        events:
          - {stage: plan, dt_us: -1188, actions: 1, preset: default}
          - {stage: preflight, a: 0, dt_us: -88}
          - stage: preflight.summary
            dt_us: -40
            rows: 1
            stops: 0
            warnings: 0
            stop_paths: []
            overridden: 0
        plan:
          mounts:
            /: {fstype: ext4, rw: true, exec: true, method: statvfs}
'''

from ansible_collections.switchyard.fs.plugins.module_utils._module import LINKS_SPEC, ArgumentSpec, run_module
from ansible_collections.switchyard.fs.plugins.module_utils.engine import preflight


def main():
    spec = ArgumentSpec({
        "links": LINKS_SPEC,
        "restores": {"type": "list", "elements": "path"},
        "which": {"type": "str", "default": "latest", "choices": ["latest", "previous"]},
        "fail_on_stop": {"type": "bool", "default": True},
    }, required_one_of=[["links", "restores"]])
    run_module(spec, "preflight", lambda module, settings: preflight(
        settings, module.params["links"], module.params["restores"], module.params["which"],
        module.params["fail_on_stop"]))


if __name__ == "__main__":
    main()
