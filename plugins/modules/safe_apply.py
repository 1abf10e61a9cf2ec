#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switchyard.fs.safe_apply module: its documentation and its options; the engine does the swap."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: safe_apply
short_description: Atomically replace files with symlinks, with durable verified backups and automatic rollback
version_added: 0.1.0
description:
  - Replaces each O(links[].target) with a symlink to O(links[].source), resolving every path beneath O(root) with directory handles.
  - Runs the preflight gates under the lock, writes a write-ahead journal, backs up each target (hard link on the
    same filesystem, otherwise copy and fsync) with a C(backup_meta.v2) sidecar, renames a temp symlink over the
    target (never unlinking first) and fsyncs each directory.
  - On any failure, including failed smoke checks, every action already applied is rolled back in reverse order,
    the failing one included.
  - A target that already is a symlink to its source is left alone and gets no new backup.
  - Any module run on a root first rolls back plans a crash left unfinished (see the durability guide).
options:
  links:
    description:
      - The swaps to make. Targets must be unique; sources must exist inside O(root).
    required: true
  smoke:
    description:
      - Checks run after the swap. A suite name (V(resolve) - each target resolves to its executable source;
        V(coreutils) - runs each swapped tool harmlessly) or a list of checks.
      - A check is V({argv, rc, stdout_regex, timeout, name}). C(argv) is a non-empty list of strings without NUL bytes
        (at most 256 items, 64 KiB); C(argv[0]) is an absolute normalised path as seen inside O(root); C(rc) (default
        V(0)) is the expected exit status 0-255; C(timeout) (default V(10)) is seconds in (0, 3600]. Anything else is
        refused with E_POLICY before the lock is taken and before anything changes.
      - With O(root=/) the path C(argv[0]) itself (the swapped link) is executed; with another root it is executed inside
        a chroot of O(root), or, when the chroot cannot run it and O(policy.smoke_host_fallback) is true, the file it
        resolves to inside O(root) is executed on the host by its open descriptor (never by a path).
      - Each check runs in its own session; it is judged on its first process's exit, and then (or at its timeout)
        every process it started is killed. The first and last 32 KiB of each output stream are kept; the result says
        when output was cut (C(stdout_truncated), C(stderr_truncated)).
      - A failed check rolls everything back and fails with E_SMOKE (exit code 80).
      - Under O(policy.smoke=required) the V(resolve) suite runs when no checks are given.
    type: raw
seealso:
  - module: switchyard.fs.safe_preflight
    description: Check a plan without changing anything.
  - module: switchyard.fs.safe_restore
    description: Undo an apply by its plan id.
author:
  - switchyard.fs contributors (@switchyard)
extends_documentation_fragment:
  - switchyard.fs.common
  - switchyard.fs.common.links
  - switchyard.fs._attributes
  - switchyard.fs._attributes.diff
'''

EXAMPLES = r'''
- name: Swap three coreutils to uutils on a sandbox root
  switchyard.fs.safe_apply:
    root: /srv/sandbox
    links:
      - {source: /srv/sandbox/usr/lib/cargo/bin/coreutils/ls, target: /srv/sandbox/usr/bin/ls}
      - {source: /srv/sandbox/usr/lib/cargo/bin/coreutils/cat, target: /srv/sandbox/usr/bin/cat}
    smoke: resolve

- name: Production preset with lock and smoke configuration
  switchyard.fs.safe_apply:
    root: /srv/sandbox
    preset: production
    lock_path: /srv/sandbox/run/lock/switchyard.lock
    lock_timeout: 30
    policy:
      rescue_min_count: 2
    links:
      - {source: /srv/sandbox/opt/provider/bin/ls, target: /srv/sandbox/usr/bin/ls}
    smoke:
      - argv: [/usr/bin/ls, /]
        rc: 0
        stdout_regex: "usr"
        timeout: 10
  register: swap

- name: Show the plan id to keep for a rollback
  ansible.builtin.debug:
    msg: "{{ swap.plan_id }} {{ ansible_facts.switchyard_apply.summary }}"
'''

RETURN = r'''
changed: {description: 'Whether the filesystem changed (in check mode, whether it would).', returned: always, type: bool,
  sample: true}
plan_id: {description: 'UUIDv5 over the normalised plan; the same plan has the same id on every host and in check
    mode. Keep it for M(switchyard.fs.safe_restore) O(switchyard.fs.safe_restore#module:plan_id).', returned: 'success,
    or failure after planning', type: str, sample: 8c189532-e001-5739-b05f-0ca0f98baf92}
msg: {description: What happened., returned: always, type: str, sample: '1 link(s) swapped, 0 already in place;
    plan_id=8c189532-e001-5739-b05f-0ca0f98baf92'}
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
    switchyard_apply:
      description: The apply report, validated on the controller against the collection's JSON schema. The facts
        guide of this collection documents every field.
      returned: always
      type: dict
      contains:
        schema_version: {description: 'Version of the report schema (2: the compact report).', returned: always,
          type: int, sample: 2}
        collection_version: {description: Version of switchyard.fs that wrote the report., returned: always, type: str,
          sample: 0.2.0}
        stage: {description: The module's stage., returned: always, type: str, sample: apply}
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
            actions: {description: Planned links., returned: always, type: int, sample: 2}
            changed: {description: Links made., returned: always, type: int, sample: 2}
            unchanged: {description: Targets already linked., returned: always, type: int, sample: 0}
            rolled_back: {description: Actions rolled back., returned: always, type: int, sample: 0}
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
        actions:
          description: 'One entry per link, in the order applied: its decision and its result. Each entry also carries
            the preflight findings of its target (C(policy_ok), C(stops), C(warnings), C(notes), C(current_kind),
            C(planned_kind), C(mount), C(immutable_check), C(provenance), ...), documented by M(switchyard.fs.safe_preflight).
            Compact: what most entries share is said once in C(plan) and derived fields are left out; the C(switchyard.fs.report_entries)
            filter spells every entry out, and the facts guide of this collection documents every field.'
          returned: when the run got as far as applying
          type: list
          elements: dict
          contains:
            action_id: {description: UUIDv5 of the action., returned: always, type: str, sample: 2271eb51-67c7-5101-bec3-de90281d5b91}
            path: {description: 'The target, as seen from inside O(root).', returned: always, type: str, sample: /usr/bin/cat}
            source: {description: 'The link''s source, as seen from inside O(root).', returned: always, type: str,
              sample: /opt/provider/bin/cat}
            result: {description: 'V(changed), V(unchanged), V(failed), V(rolled_back), V(rollback_failed) or V(skipped).',
              returned: always, type: str, sample: changed}
            hash_alg: {description: Always V(sha256)., returned: unless it is the plan's value (in C(plan)) or derived,
              type: str, sample: sha256}
            before_hash: {description: sha256 of the target before the swap (null unless a regular file)., returned: always,
              type: str, sample: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3}
            after_hash: {description: sha256 of the target after the swap (null for a symlink)., returned: unless
                it is the plan's value (in C(plan)) or derived, type: str, sample: null}
            before:
              description: The target before the swap - C(kind), C(link_target), C(sha256), C(mode), C(owner), C(size).
              returned: always
              type: dict
              sample: {kind: file, sha256: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3, mode: '0755',
                owner: '0:0', size: 28}
            after:
              description: The target after the swap, the same fields as C(before).
              returned: unless it is the plan's value (in C(plan)) or derived
              type: dict
              sample: {kind: symlink, link_target: /opt/provider/bin/cat, mode: '0777', owner: '0:0'}
            backup:
              description: The backup made of the target - C(backup_name) and C(sidecar) (file names next to the
                target, or in O(policy.backup_dir)), C(payload_hash), C(backup_method) (V(hardlink), V(copy), V(symlink)
                or V(none)), C(prior_kind), C(created_ms) and C(backup_preservation).
              returned: when a backup was made
              type: dict
              sample: {backup_name: .cat.switchyard.1796136349399.bak, backup_method: hardlink, prior_kind: file,
                created_ms: 1796136349399}
            backup_durable: {description: Every fsync for this action's backup succeeded., returned: unless it is
                the plan's value (in C(plan)) or derived, type: bool, sample: true}
            swap_method: {description: 'How the link took the target''s place - V(exchange), V(noreplace) or V(rename)
                (the facts guide says what each guarantees).', returned: 'when the swap ran, unless it is the plan''s
                value (in C(plan))', type: str, sample: exchange}
        smoke:
          description: Results of the smoke checks (only when a swap is committed).
          returned: when smoke checks ran
          type: list
          elements: dict
          contains:
            name: {description: The check., returned: always, type: str, sample: resolve /usr/bin/cat}
            ok: {description: Whether it passed., returned: always, type: bool, sample: true}
            rc: {description: Exit code of a command check., returned: always, type: int, sample: 0}
            mode: {description: 'V(chroot), V(host) or V(resolve).', returned: always, type: str, sample: resolve}
            detail: {description: What was found., returned: always, type: str, sample: resolves to an executable
                file}
        rolled_back_paths:
          description: Targets put back by an automatic rollback.
          returned: always
          type: list
          elements: str
          sample: []
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
        stage: apply
        plan_id: 8c189532-e001-5739-b05f-0ca0f98baf92
        run_id: e5c5c6f0-82c6-4c6e-9028-659dc430874d
        dry_run: false
        ts: '2026-12-01T17:34:39.717415Z'
        summary: {actions: 1, changed: 1, unchanged: 0, rolled_back: 0, backup_durable: true, decision: success}
        actions:
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
            result: changed
            hash_alg: sha256
            before_hash: cfa5ea90790e159c4d2c9a6f652b8eda1557ef95a602dac291771a817c6842b3
            before: {kind: file, mode: '0755', owner: '0:0', size: 28}
            backup_durable: true
            swap_method: exchange
            backup: {backup_name: .cat.switchyard.1796146479697.bak, created_ms: 1796146479697, backup_method: hardlink,
              backup_preservation: null}
        rolled_back_paths: []
        root: /srv/sandbox
        preset: default
        recovery: []
        lock_backend: flock
        lock_wait_ms: 0.006
        lock_attempts: 1
        events:
          - {stage: plan, dt_us: -21464, actions: 1, preset: default}
          - {stage: preflight, a: 0, dt_us: -20139}
          - stage: preflight.summary
            dt_us: -20112
            rows: 1
            stops: 0
            warnings: 0
            stop_paths: []
            overridden: 0
          - {stage: apply.attempt, dt_us: -20079, actions: 1, lock_backend: flock, lock_wait_ms: 0.006, lock_attempts: 1}
          - {stage: apply.result, a: 0, dt_us: -2403}
          - stage: apply.result
            dt_us: -1985
            msg: smoke checks
            smoke:
              - {name: resolve /usr/bin/cat, ok: true, rc: null, mode: resolve, detail: resolves to an executable
                  file}
        plan:
          mounts:
            /: {fstype: ext4, rw: true, exec: true, method: statvfs}
        smoke:
          - {name: resolve /usr/bin/cat, ok: true, rc: null, mode: resolve, detail: resolves to an executable file}
'''

from ansible_collections.switchyard.fs.plugins.module_utils._module import LINKS_SPEC, ArgumentSpec, run_module
from ansible_collections.switchyard.fs.plugins.module_utils.engine import apply


def main():
    spec = ArgumentSpec({
        "links": dict(LINKS_SPEC, required=True),
        "smoke": {"type": "raw"},
    })
    run_module(spec, "apply", lambda module, settings: apply(settings, module.params["links"], module.params["smoke"]))


if __name__ == "__main__":
    main()
