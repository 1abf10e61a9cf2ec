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
    policy knob that changes it. See docs/preflight.md for the gates.
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
plan_id:
  description:
    - UUIDv5 over the normalised plan; the same plan has the same id on every host and in check mode.
    - With O(links), the id M(switchyard.fs.safe_apply) gives the same links (rows carry its action ids); with only
      O(restores), the id of M(switchyard.fs.safe_restore) with the same targets and O(which).
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
    switchyard_preflight:
      description: The preflight report - summary and rows (action_id, path, current_kind, planned_kind, policy_ok,
        notes, stops, warnings, preservation, provenance, immutable_check, restore_ready...) and events.
      returned: always
      type: dict
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
