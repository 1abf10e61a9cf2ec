# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by every switchyard.fs module (root, preset, policy, lock, state, audit)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The policy sub-options mirror plugins/module_utils/_policy.py KNOBS; tests/unit/test_docs.py checks them.
    DOCUMENTATION = r'''
options:
  root:
    description:
      - Every path must resolve inside this directory (SafePath); intermediate symlinks are followed only inside it.
      - Link contents are written as seen from inside O(root), so an image or chroot stays valid when booted.
      - Paths in all other options are host paths, absolute and inside O(root).
    type: path
    default: /
  preset:
    description:
      - A named policy. Explicit O(policy) keys override it. See docs/presets.md.
    type: str
    choices: [coreutils_switch, default, production]
    default: default
  policy:
    description:
      - Policy knobs; each overrides the value of the O(preset).
    type: dict
    default: {}
    suboptions:
      allow_degraded_fs:
        description:
          - Allow a backup directory on another filesystem (copy instead of hard link) and best-effort EXDEV handling.
          - Default V(false) unless the O(preset) sets it.
        type: bool
      allow_roots:
        description:
          - Targets must lie under one of these paths (inside root); empty allows all.
          - Default V([]) unless the O(preset) sets it.
        type: list
        elements: str
      allow_unlocked_commit:
        description:
          - Allow committing changes without holding the lock (locking optional only).
          - Default V(true) unless the O(preset) sets it.
        type: bool
      allow_unreliable_immutable_check:
        description:
          - Treat an undeterminable immutable flag as a warning instead of a STOP.
          - Default V(false) unless the O(preset) sets it.
        type: bool
      auto_rollback:
        description:
          - Roll back every applied action when apply or its smoke checks fail.
          - Default V(true) unless the O(preset) sets it.
        type: bool
      backup_dir:
        description:
          - Keep backups in this directory (inside root) instead of next to each target.
        type: str
      best_effort_restore:
        description:
          - Restore even when the backup hash cannot be verified (missing sidecar hash).
          - Default V(false) unless the O(preset) sets it.
        type: bool
      extra_mount_checks:
        description:
          - More paths that must be on rw, exec mounts.
          - Default V([]) unless the O(preset) sets it.
        type: list
        elements: str
      forbid_paths:
        description:
          - Targets under any of these paths STOP.
          - Default V([]) unless the O(preset) sets it.
        type: list
        elements: str
      hardlinks:
        description:
          - Targets with more than one hard link.
          - Default V(stop) unless the O(preset) sets it.
        type: str
        choices: [stop, warn, allow]
      locking:
        description:
          - required - fail with E_LOCKING without the lock; optional - warn.
          - Default V(optional) unless the O(preset) sets it.
        type: str
        choices: [required, optional]
      on_unfinished_plan:
        description:
          - What any module does when it finds a plan a crash left unfinished.
          - Default V(rollback) unless the O(preset) sets it.
        type: str
        choices: [rollback, stop]
      override_preflight:
        description:
          - Proceed despite preflight STOPs (they become warnings).
          - Default V(false) unless the O(preset) sets it.
        type: bool
      ownership_strict:
        description:
          - STOP targets that no package (dpkg/rpm) owns.
          - Default V(false) unless the O(preset) sets it.
        type: bool
      preservation_tier:
        description:
          - Which metadata backups keep and restore puts back.
          - Default V(basic) unless the O(preset) sets it.
        type: str
        choices: [basic, extended, full]
      prune_keep_original:
        description:
          - Prune always keeps the newest backup holding a regular file (the original's bytes), beyond retention.
          - Default V(true) unless the O(preset) sets it.
        type: bool
      require_backup_durability:
        description:
          - Every fsync must succeed; when false fsyncs are best-effort.
          - Default V(true) unless the O(preset) sets it.
        type: bool
      require_preservation:
        description:
          - STOP when the filesystem or privileges cannot preserve the chosen tier.
          - Default V(false) unless the O(preset) sets it.
        type: bool
      require_rescue:
        description:
          - STOP unless a rescue toolset (busybox, or enough core tools) is available.
          - Default V(false) unless the O(preset) sets it.
        type: bool
      require_sidecar_integrity:
        description:
          - Restore only from a backup whose payload hash matches its sidecar.
          - Default V(true) unless the O(preset) sets it.
        type: bool
      rescue_exec_check:
        description:
          - The rescue tools must also execute (run with --help).
          - Default V(false) unless the O(preset) sets it.
        type: bool
      rescue_min_count:
        description:
          - How many of cp mv rm ln stat readlink sha256sum sort date ls must be present.
          - Default V(6) unless the O(preset) sets it.
        type: int
      retention_age:
        description:
          - Delete backups older than this many seconds (the newest is always kept).
        type: float
      retention_count:
        description:
          - Keep at most this many backups per target (the newest is always kept).
        type: int
      smoke:
        description:
          - required - smoke checks must run after apply (the resolve suite when none are given).
          - Default V(off) unless the O(preset) sets it.
        type: str
        choices: [required, 'off']
      source_trust:
        description:
          - Sources that are not root-owned, are writable by others, or live under /home.
          - Default V(warn) unless the O(preset) sets it.
        type: str
        choices: [require_trusted, warn, allow]
      suid_sgid:
        description:
          - Setuid/setgid or capability-bearing targets.
          - Default V(stop) unless the O(preset) sets it.
        type: str
        choices: [stop, warn, allow]
  lock_path:
    description:
      - Process lock file (flock). Defaults to C(<root>/run/lock/switchyard.lock).
    type: path
  lock_timeout:
    description:
      - Bounded wait for the lock in seconds; V(0) makes exactly one attempt.
    type: float
    default: 5
  state_dir:
    description:
      - Directory inside O(root) for write-ahead journals. Defaults to C(<root>/var/lib/switchyard).
    type: path
  backup_tag:
    description:
      - Isolates the backup sets of different integrators; part of every backup name.
    type: str
    default: switchyard
  audit_log:
    description:
      - Also append every audit event as one JSON line to this file on the managed host (fsynced).
    type: path
notes:
  - Check mode runs every probe for real and changes nothing; the lock is not taken in check mode.
  - Facts are validated on the controller against the collection's JSON schema by the action plugin.
'''
