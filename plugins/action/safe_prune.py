# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for switchyard.fs.safe_prune: runs the module and validates its report on the controller."""

from __future__ import absolute_import, division, print_function

from ansible_collections.switchyard.fs.plugins.plugin_utils._action import SwitchyardAction


class ActionModule(SwitchyardAction):
    stage = "prune"
