# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Policy knobs, their defaults and the presets: the one place each lives. Private to this collection."""

from __future__ import absolute_import, division, print_function

import copy

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError

# name -> (default, allowed values or type, one-line description).  Doc fragments, docs/presets.md
# and the argument spec are checked against this table by tests.
KNOBS = {
    "allow_roots": ([], list, "Targets must lie under one of these paths (inside root); empty allows all."),
    "forbid_paths": ([], list, "Targets under any of these paths STOP."),
    "require_rescue": (False, bool, "STOP unless a rescue toolset (busybox, or enough core tools) is available."),
    "rescue_exec_check": (False, bool, "The rescue tools must also execute (run with --help)."),
    "rescue_min_count": (6, int, "How many of cp mv rm ln stat readlink sha256sum sort date ls must be present."),
    "suid_sgid": ("stop", ("stop", "warn", "allow"), "Setuid/setgid or capability-bearing targets."),
    "hardlinks": ("stop", ("stop", "warn", "allow"), "Targets with more than one hard link."),
    "source_trust": ("warn", ("require_trusted", "warn", "allow"), "Sources that are not root-owned, are writable by others, or live under /home."),
    "ownership_strict": (False, bool, "STOP targets that no package (dpkg/rpm) owns."),
    "require_backup_durability": (True, bool, "Every fsync must succeed; when false fsyncs are best-effort."),
    "require_sidecar_integrity": (True, bool, "Restore only from a backup whose payload hash matches its sidecar."),
    "preservation_tier": ("basic", ("basic", "extended", "full"), "Which metadata backups keep and restore puts back."),
    "require_preservation": (False, bool, "STOP when the filesystem or privileges cannot preserve the chosen tier."),
    "allow_degraded_fs": (False, bool, "Allow a backup directory on another filesystem (copy instead of hard link) and best-effort EXDEV handling."),
    "override_preflight": (False, bool, "Proceed despite preflight STOPs (they become warnings)."),
    "best_effort_restore": (False, bool, "Restore even when the backup hash cannot be verified (missing sidecar hash)."),
    "extra_mount_checks": ([], list, "More paths that must be on rw, exec mounts."),
    "locking": ("optional", ("required", "optional"), "required: fail with E_LOCKING without the lock; optional: warn."),
    "smoke": ("off", ("required", "off"), "required: smoke checks must run after apply (the resolve suite when none are given)."),
    "smoke_host_fallback": (True, bool, "When a chroot of root cannot run a smoke check, run its file on the host by its open descriptor."),
    "auto_rollback": (True, bool, "Roll back every applied action when apply or its smoke checks fail."),
    "allow_unlocked_commit": (True, bool, "Allow committing changes without holding the lock (locking optional only)."),
    "allow_unreliable_immutable_check": (False, bool, "Treat an undeterminable immutable flag as a warning instead of a STOP."),
    "retention_count": (None, int, "Keep at most this many backups per target (the newest is always kept)."),
    "retention_age": (None, float, "Delete backups older than this many seconds (the newest is always kept)."),
    "prune_keep_original": (True, bool, "Prune always keeps the newest backup holding a regular file (the original's bytes), beyond retention."),
    "on_unfinished_plan": ("rollback", ("rollback", "stop"), "What any module does when it finds a plan a crash left unfinished."),
    "backup_dir": (None, str, "Keep backups in this directory (inside root) instead of next to each target."),
    "allow_side_paths_outside_root": (False, bool, "Allow lock_path, state_dir and audit_log outside root (their final component is still never a symlink)."),
}

DEFAULTS = dict((name, spec[0]) for name, spec in KNOBS.items())

_PRODUCTION = {
    "require_rescue": True,
    "rescue_exec_check": True,
    "locking": "required",
    "smoke": "required",
    "smoke_host_fallback": False,
    "auto_rollback": True,
    "allow_unlocked_commit": False,
}

_COREUTILS_SWITCH = dict(_PRODUCTION)
_COREUTILS_SWITCH.update({
    "ownership_strict": True,
    "require_preservation": True,
    "source_trust": "require_trusted",
    "extra_mount_checks": ["/usr", "/bin", "/sbin", "/usr/bin", "/usr/sbin"],
    "forbid_paths": ["/proc", "/sys", "/dev", "/run"],
})

# preset -> the knobs it changes from DEFAULTS.
PRESETS = {
    "default": {},
    "production": _PRODUCTION,
    "coreutils_switch": _COREUTILS_SWITCH,
}


class Policy(object):
    """Resolved policy: attribute access to every knob, plus where it came from."""

    def __init__(self, values, preset):
        self.__dict__["_values"] = values
        self.__dict__["preset"] = preset

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        raise AttributeError("Policy is immutable")

    def as_dict(self):
        return copy.deepcopy(self._values)


def _check_value(name, value):
    default, allowed, _desc = KNOBS[name]
    if value is None and default is None:
        return value
    if isinstance(allowed, tuple):
        if value not in allowed:
            raise PolicyError(
                "policy.%s=%r is not valid; use one of: %s" % (name, value, ", ".join(allowed)))
        return value
    if allowed is bool:
        if not isinstance(value, bool):
            raise PolicyError("policy.%s must be true or false, got %r" % (name, value))
        return value
    if allowed is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PolicyError("policy.%s must be a non-negative integer, got %r" % (name, value))
        return value
    if allowed is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise PolicyError("policy.%s must be a non-negative number of seconds, got %r" % (name, value))
        return float(value)
    if allowed is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise PolicyError("policy.%s must be a list of absolute paths, got %r" % (name, value))
        for v in value:
            if not v.startswith("/"):
                raise PolicyError("policy.%s entry %r is not absolute; write it as seen from inside root, e.g. /usr/bin" % (name, v))
        return list(value)
    if allowed is str:
        if not isinstance(value, str) or not value.startswith("/"):
            raise PolicyError("policy.%s must be an absolute path inside root, got %r" % (name, value))
        return value
    raise AssertionError("unhandled knob type for %s" % name)


def resolve_policy(preset="default", overrides=None):
    """DEFAULTS, then the preset, then explicit keys.  Unknown keys fail naming the key."""
    if preset not in PRESETS:
        raise PolicyError("preset=%r is unknown; use one of: %s" % (preset, ", ".join(sorted(PRESETS))))
    values = copy.deepcopy(DEFAULTS)
    values.update(copy.deepcopy(PRESETS[preset]))
    overrides = overrides or {}
    unknown = sorted(k for k in overrides if k not in KNOBS)
    if unknown:
        raise PolicyError("unknown policy key(s): %s; valid keys are: %s" % (", ".join(unknown), ", ".join(sorted(KNOBS))))
    for name, value in overrides.items():
        if value is None and KNOBS[name][0] is not None:
            continue  # an unset sub-option in the module spec means "keep the preset's value"
        values[name] = _check_value(name, value)
    if values["locking"] == "required" and values["allow_unlocked_commit"]:
        # "required" wins: an unlocked commit is impossible under it, so say so consistently.
        values["allow_unlocked_commit"] = False
    return Policy(values, preset)
