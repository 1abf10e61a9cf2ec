# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switchyard.fs.report_events filter: a compact report's events as the host wrote them to its audit_log."""

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r'''
name: report_events
short_description: The audit events of a compact switchyard report, in full
version_added: 0.2.0
description:
  - A switchyard report carries its events compact - the envelope, event ids, sequence numbers and times are derived
    and a per-action event references its entry instead of repeating it.
  - This filter returns the events exactly as the host wrote them to O(switchyard.fs.safe_apply#module:audit_log),
    as a new list.
positional: _input
options:
  _input:
    description: A switchyard report, for example C(ansible_facts.switchyard_apply).
    type: dict
    required: true
author:
  - switchyard.fs contributors
'''

EXAMPLES = r'''
- name: Every event belongs to the plan
  ansible.builtin.assert:
    that: applied.ansible_facts.switchyard_apply | switchyard.fs.report_events | map(attribute='plan_id') | unique == [applied.plan_id]
'''

RETURN = r'''
_value:
  description: The full audit events.
  type: list
  elements: dict
'''

from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events


class FilterModule(object):
    def filters(self):
        return {"report_events": expand_events}
