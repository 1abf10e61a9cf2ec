#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

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
    switchyard_prune:
      description: The prune report - summary and results per path (kept, pruned, pruned_backups) and events.
      returned: always
      type: dict
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
