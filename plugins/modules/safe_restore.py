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
    switchyard_restore:
      description: The restore report - summary, results per path (before, after, backup, sidecar_integrity_verified,
        preservation_applied) and events.
      returned: always
      type: dict
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
