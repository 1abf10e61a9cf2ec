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
  description: Stable error id (E_POLICY, E_OWNERSHIP, E_LOCKING, E_ATOMIC_SWAP, E_EXDEV, E_BACKUP_MISSING, E_RESTORE_FAILED,
    E_SMOKE, E_INTERNAL).
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
          description: Version of the report schema.
          returned: always
          type: int
          sample: 1
        collection_version:
          description: Version of switchyard.fs that wrote the report.
          returned: always
          type: str
          sample: 0.1.0
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
          description: One row per planned action, ordered by (path, action_id), with every gate's result.
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
              returned: always
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
              returned: always
              type: str
              sample: file
            planned_kind:
              description: What the target will be.
              returned: always
              type: str
              sample: symlink
            noop:
              description: The target already is what the plan wants.
              returned: always
              type: bool
              sample: false
            policy_ok:
              description: No STOP for this row.
              returned: always
              type: bool
              sample: true
            stops:
              description: Why the row stops; empty when the row's C(policy_ok) is true.
              returned: always
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
              returned: always
              type: list
              elements: str
              sample: []
            notes:
              description: Informational findings (package ownership, diversions, alternatives).
              returned: always
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
                backend: null
                gid: 0
                pkg: null
                uid: 0
            restore_ready:
              description: A complete backup exists and its hash verifies.
              returned: for restores
              type: bool
              sample: true
        events:
          description: The audit events of the run (also appended to O(audit_log) when set), in order.
          returned: always
          type: list
          elements: dict
          contains:
            stage:
              description: The step - V(plan), V(preflight), V(preflight.summary), V(apply.attempt), V(apply.result),
                V(rollback), V(rollback.summary), V(restore), V(prune.result) or V(recovery).
              returned: always
              type: str
              sample: apply.result
            decision:
              description: V(success), V(failure) or V(warn).
              returned: always
              type: str
              sample: success
            seq:
              description: Position of the event in the run.
              returned: always
              type: int
              sample: 5
            ts:
              description: UTC timestamp.
              returned: always
              type: str
              sample: '2026-12-01T14:45:49.394393Z'
            plan_id:
              description: The plan.
              returned: always
              type: str
              sample: 075a00b1-4f61-5fde-8bb8-2b70498e00c3
            run_id:
              description: The run.
              returned: always
              type: str
              sample: 5dac62f2-7ee8-4b91-959b-6b096c37dc08
            event_id:
              description: Unique id of the event.
              returned: always
              type: str
              sample: 7b2461d6-c792-4abc-ad26-e7b6292c5f3a
            path:
              description: The target the event is about.
              returned: for per-target events
              type: str
              sample: /usr/bin/cat
      sample:
        schema_version: 1
        collection_version: 0.1.0
        stage: preflight
        plan_id: 075a00b1-4f61-5fde-8bb8-2b70498e00c3
        run_id: 5dac62f2-7ee8-4b91-959b-6b096c37dc08
        dry_run: true
        ts: '2026-12-01T14:45:49.398201Z'
        root: /srv/sandbox
        preset: default
        recovery: []
        summary:
          dry_run: true
          policy_ok: true
          rows: 1
          stops: 0
          warnings: 0
        rows:
        - action_id: 2271eb51-67c7-5101-bec3-de90281d5b91
          path: /usr/bin/cat
          op: link
          source: /opt/provider/bin/cat
          link_text: /opt/provider/bin/cat
          current_kind: file
          planned_kind: symlink
          noop: false
          policy_ok: true
          stops: []
          warnings: []
          notes: []
          mount:
            exec: true
            fstype: ext4
            method: statvfs
            mountpoint: /
            rw: true
          immutable_detection_method: ioctl
          source_trusted: true
        events:
        - schema_version: 1
          collection_version: 0.1.0
          stage: preflight.summary
          decision: success
          seq: 3
          plan_id: 075a00b1-4f61-5fde-8bb8-2b70498e00c3
          run_id: 5dac62f2-7ee8-4b91-959b-6b096c37dc08
          event_id: 47d00da6-b4fe-490c-98e9-1d8ec22deebe
          ts: '2026-12-01T14:45:48.195778Z'
          dry_run: true
          rows: 1
          stops: 0
          warnings: 0
          overridden: 0
          stop_paths: []
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
