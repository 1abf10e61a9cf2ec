# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switchyard.fs.redact filter: a report with what differs between check mode and commit removed."""

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r'''
name: redact
short_description: Redact a switchyard report for dry-run/commit parity comparisons
version_added: 0.1.0
description:
  - Zeroes timestamps and removes run and event ids, durations, hashes, lock measurements, backup names,
    the after-state and the smoke results (smoke checks run only on commit), so that the report of a
    check-mode run equals the report of the commit that follows it.
positional: _input
options:
  _input:
    description: A switchyard report (for example C(ansible_facts.switchyard_apply)) or any part of one.
    type: raw
    required: true
author:
  - switchyard.fs contributors
'''

EXAMPLES = r'''
- name: Check mode and commit agree
  ansible.builtin.assert:
    that:
      - (dry.ansible_facts.switchyard_apply | switchyard.fs.redact) == (real.ansible_facts.switchyard_apply | switchyard.fs.redact)
'''

RETURN = r'''
_value:
  description: The redacted copy.
  type: raw
'''

from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import redact


class FilterModule(object):
    def filters(self):
        return {"redact": redact}
