# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options the switchyard.fs modules share: every module's (root, preset, policy, lock, state, audit), and links.

C(switchyard.fs.common) documents the options of every module; C(switchyard.fs.common.links) the O(links) of
safe_apply and safe_preflight (the argument spec both use is _module.LINKS_SPEC).
"""

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
      - A named policy. Explicit O(policy) keys override it. The presets guide lists the values of each preset.
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
      allow_side_paths_outside_root:
        description:
          - Allow lock_path, state_dir and audit_log outside root (their final component is still never a symlink).
          - Without it a side path outside O(root) fails with E_POLICY before anything is touched. Inside O(root)
            side paths are opened through the root directory handle and an intermediate symlink is followed only
            while it stays inside O(root) (see the Security guide of this collection).
          - Default V(false) unless the O(preset) sets it.
        type: bool
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
      smoke_host_fallback:
        description:
          - When a chroot of root cannot run a smoke check, run its file on the host by its open descriptor.
          - Only for a root other than V(/) whose chroot lacks what the program needs (its loader, a shared library, a C(#!) interpreter); the
            host then supplies those. The file is opened beneath O(root) without following any symlink out of it and executed by that
            descriptor (fexecve), never by a path. When false, such a check fails (and the apply is rolled back).
          - Default V(true) unless the O(preset) sets it; V(false) under the V(production) and V(coreutils_switch) presets.
        type: bool
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
      - Must lie inside O(root) unless O(policy.allow_side_paths_outside_root). Opened through the root directory
        handle, never through a final symlink; an existing file must be a regular file owned by the module's user
        with a single link (E_LOCKING otherwise).
    type: path
  lock_timeout:
    description:
      - Bounded wait for the lock in seconds; V(0) makes exactly one attempt.
    type: float
    default: 5
  state_dir:
    description:
      - Directory inside O(root) for write-ahead journals. Defaults to C(<root>/var/lib/switchyard).
      - Created C(0700); missing parents are created C(0755). A symlink or a file at O(state_dir) is refused
        with E_POLICY. Outside O(root) only with O(policy.allow_side_paths_outside_root).
    type: path
  backup_tag:
    description:
      - Isolates the backup sets of different integrators; part of every backup name.
    type: str
    default: switchyard
  audit_log:
    description:
      - Also append every audit event as one JSON line to this file on the managed host (fsynced).
      - Must lie inside O(root) unless O(policy.allow_side_paths_outside_root). Opened with C(O_APPEND) and
        never through a final symlink; an existing file must be a regular file owned by the module's user with a
        single link. A log that cannot be written (refused, EISDIR, ENOSPC, EACCES) is a warning, never a failed task.
    type: path
requirements:
  - python >= 3.8 on the managed host (standard library only)
  - jsonschema >= 4.18 on the controller (the action plugin validates each report)
seealso:
  - ref: ansible_collections.switchyard.fs.docsite.guides
    description: The switchyard.fs guides - durability, preflight gates, presets, preservation, locking, facts, errors, AWX.
  - name: Durability guide
    description: The swap sequence, every fsync and what it protects, and crash recovery.
    link: https://github.com/switchyard/switchyard.fs/blob/main/docs/durability.md
  - name: Facts reference
    description: Every field of the reports the modules return.
    link: https://github.com/switchyard/switchyard.fs/blob/main/docs/facts.md
  - name: Error reference
    description: Every error id, its exit code, and what to do about it.
    link: https://github.com/switchyard/switchyard.fs/blob/main/docs/errors.md
notes:
  - Check mode runs every probe for real and changes nothing; the lock is not taken in check mode.
  - Facts are validated on the controller against the collection's JSON schema by the action plugin.
'''

    # The swaps of safe_apply (required there) and safe_preflight; each module adds its own description.
    LINKS = r'''
options:
  links:
    description:
      - The swaps. Targets must be unique; sources must exist inside O(root).
    type: list
    elements: dict
    suboptions:
      source:
        description: Host path (inside O(root)) of the file the link points to; the link text is its in-root path.
        type: path
        required: true
      target:
        description: Host path (inside O(root)) of the file, symlink or absent path to replace.
        type: path
        required: true
'''
