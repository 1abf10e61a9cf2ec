# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Public engine facade of switchyard.fs: plan, preflight, apply, restore and prune over SafePath.

This is the only module_utils module other collections may import; everything with a leading
underscore is private and may change without notice.  See docs/api.md.

    from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply
    report, error, warnings = apply(Settings(root="/srv/image"), links=[{"source": ..., "target": ...}])
"""

from __future__ import absolute_import, division, print_function

from ansible_collections.switchyard.fs.plugins.module_utils._stages.inputs import Settings, plan  # noqa: F401
from ansible_collections.switchyard.fs.plugins.module_utils._stages.preflight import preflight  # noqa: F401
from ansible_collections.switchyard.fs.plugins.module_utils._stages.apply import apply  # noqa: F401
from ansible_collections.switchyard.fs.plugins.module_utils._stages.restore import restore  # noqa: F401
from ansible_collections.switchyard.fs.plugins.module_utils._stages.prune import prune  # noqa: F401
from ansible_collections.switchyard.fs.plugins.module_utils._errors import (  # noqa: F401
    ERROR_TABLE, SwitchyardError, PolicyError, OwnershipError, LockingError, AtomicSwapError, ExdevError,
    BackupMissingError, RestoreFailedError, SmokeError, InternalError)
from ansible_collections.switchyard.fs.plugins.module_utils._plan import Plan, Action  # noqa: F401
from ansible_collections.switchyard.fs.plugins.module_utils._policy import KNOBS, PRESETS, resolve_policy  # noqa: F401

__all__ = [
    "Settings", "plan", "preflight", "apply", "restore", "prune",
    "Plan", "Action", "KNOBS", "PRESETS", "resolve_policy", "ERROR_TABLE",
    "SwitchyardError", "PolicyError", "OwnershipError", "LockingError", "AtomicSwapError", "ExdevError",
    "BackupMissingError", "RestoreFailedError", "SmokeError", "InternalError",
]
