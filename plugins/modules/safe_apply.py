#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: safe_apply
short_description: Atomically replace files with symlinks, with durable verified backups and automatic rollback
version_added: 0.1.0
description:
  - Replaces each O(links[].target) with a symlink to O(links[].source), the way SPEC section 4 describes,
    resolving every path beneath O(root) with directory handles.
  - Runs the preflight gates under the lock, writes a write-ahead journal, backs up each target (hard link on the
    same filesystem, otherwise copy and fsync) with a C(backup_meta.v2) sidecar, renames a temp symlink over the
    target (never unlinking first) and fsyncs each directory.
  - On any failure, including failed smoke checks, every action already applied is rolled back in reverse order,
    the failing one included.
  - A target that already is a symlink to its source is left alone and gets no new backup.
  - Any module run on a root first rolls back plans a crash left unfinished (see docs/durability.md).
options:
  links:
    description:
      - The swaps to make. Targets must be unique; sources must exist inside O(root).
    type: list
    elements: dict
    required: true
    suboptions:
      source:
        description: Host path (inside O(root)) of the file the link will point to; the link text is its in-root path.
        type: path
        required: true
      target:
        description: Host path (inside O(root)) of the file, symlink or absent path to replace.
        type: path
        required: true
  smoke:
    description:
      - Checks run after the swap. A suite name (V(resolve) - each target resolves to its executable source;
        V(coreutils) - runs each swapped tool harmlessly) or a list of checks.
      - A failed check rolls everything back and fails with E_SMOKE (exit code 80).
      - Under O(policy.smoke=required) the V(resolve) suite runs when no checks are given.
    type: raw
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
author:
  - switchyard.fs contributors (@switchyard)
extends_documentation_fragment:
  - switchyard.fs.common
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
changed:
  description: Whether the filesystem changed (in check mode, whether it would).
  returned: always
  type: bool
plan_id:
  description: UUIDv5 over the normalised plan; the same plan has the same id on every host and in check mode.
  returned: success or failure after planning
  type: str
msg:
  description: What happened.
  returned: always
  type: str
error_id:
  description: Stable error id (E_POLICY, E_OWNERSHIP, E_LOCKING, E_ATOMIC_SWAP, E_EXDEV, E_BACKUP_MISSING, E_RESTORE_FAILED, E_SMOKE).
  returned: failure
  type: str
exit_code:
  description: Numeric code of RV(error_id) (10 to 80), see docs/errors.md.
  returned: failure
  type: int
summary_error_ids:
  description: The specific cause first, then the classification.
  returned: failure
  type: list
  elements: str
rolled_back:
  description: Whether actions already applied were rolled back.
  returned: failure
  type: bool
rolled_back_paths:
  description: Paths put back by the rollback.
  returned: failure
  type: list
  elements: str
ansible_facts:
  description: Facts.
  returned: always
  type: dict
  contains:
    switchyard_apply:
      description:
        - The apply report (schema in C(plugins/plugin_utils/report.schema.json)) - schema_version, plan_id, run_id,
          dry_run, summary, rows (preflight), actions (before/after, hashes, backup), lock facts, smoke, events.
      returned: always
      type: dict
'''

from ansible_collections.switchyard.fs.plugins.module_utils._module import ArgumentSpec, run_module
from ansible_collections.switchyard.fs.plugins.module_utils.engine import apply


def main():
    spec = ArgumentSpec({
        "links": {"type": "list", "elements": "dict", "required": True,
                  "options": {"source": {"type": "path", "required": True}, "target": {"type": "path", "required": True}}},
        "smoke": {"type": "raw"},
    })
    run_module(spec, "apply", lambda module, settings: apply(settings, module.params["links"], module.params["smoke"]))


if __name__ == "__main__":
    main()
