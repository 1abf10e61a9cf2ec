# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes the switchyard.fs modules share (async, check mode, diff mode, platform). Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Every module: synchronous only (the action plugin validates the report), full check mode, Linux.
    DOCUMENTATION = r'''
options: {}
attributes:
  async:
    support: none
    description: Runs synchronously only; the action plugin refuses C(async) because it validates the report the module returns.
  check_mode:
    support: full
    description: Runs every probe for real and changes nothing.
  platform:
    support: full
    platforms: posix
    description: Linux managed hosts (uses flock, ioctl FS_IOC_GETFLAGS and *at syscalls).
'''

    # The modules that change targets (safe_apply, safe_restore).
    DIFF = r'''
options: {}
attributes:
  diff_mode:
    support: full
    description: Shows kind, link target, sha256, mode and owner before and after; never file bytes.
'''
