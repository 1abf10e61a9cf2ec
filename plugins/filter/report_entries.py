# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switchyard.fs.report_entries filter: a compact report's entries with every field spelled out."""

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r'''
name: report_entries
short_description: Spell out the entries of a compact switchyard report
version_added: 0.2.0
description:
  - A switchyard report states each fact once - what most of its entries share is in its C(plan), and fields an
    entry can derive from its own (for example an C(after) state equal to the plain link that was made) are left
    out.
  - This filter returns the report's entries (C(rows) of safe_preflight, C(actions) of safe_apply, C(results) of
    safe_restore and safe_prune) with every field written out, as a new list.
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
- name: Every target is now a link
  ansible.builtin.assert:
    that: item.after.kind == 'symlink'
  loop: "{{ applied.ansible_facts.switchyard_apply | switchyard.fs.report_entries }}"
'''

RETURN = r'''
_value:
  description: The entries, each with the plan-level and derived fields filled in.
  type: list
  elements: dict
'''

from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries


class FilterModule(object):
    def filters(self):
        return {"report_entries": entries}
