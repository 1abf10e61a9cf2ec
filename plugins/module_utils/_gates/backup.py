# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup gates: backup directory placement, preservation support, restore readiness and restore target. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os

from ansible_collections.switchyard.fs.plugins.module_utils._fs import preservation as pres
from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts
from ansible_collections.switchyard.fs.plugins.module_utils._fs.backup import select_backup, verify_backup
from ansible_collections.switchyard.fs.plugins.module_utils._errors import BackupMissingError, PolicyError, SwitchyardError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import components, open_dir_beneath


# -- restore readiness -------------------------------------------------------------------------

def restore_ready_gate(row, policy, backups, which):
    """A complete backup (sidecar present, chosen by backup.select_backup) whose payload hash verifies, or a STOP."""
    path = row.data["path"]
    try:
        b = select_backup(backups, which, path)
    except BackupMissingError as e:
        row.data["restore_ready"] = False
        row.stop("%s; nothing to restore from. A backup without its sidecar never counts; only "
                 "policy.override_preflight: true skips this gate" % e.msg, "override_preflight", e.error_id)
        return None
    try:
        verify_backup(b, policy)
    except SwitchyardError as e:
        row.data["restore_ready"] = False
        if b.meta.get("payload_hash") is None:
            row.stop("%s: %s" % (path, e.msg), "best_effort_restore", e.error_id)
        else:
            row.stop("%s: %s (only policy.override_preflight: true skips this gate; the restore itself still refuses)"
                     % (path, e.msg), "override_preflight", e.error_id)
        return None
    row.data["restore_ready"] = True
    return b


def restore_target_gate(row, current_kind):
    """Restore never destroys what is there now: a differing regular file or a directory STOPs."""
    if current_kind in ("file", "directory"):
        row.stop("%s is now a %s that differs from its backup; restore refuses to replace it. Move it away first "
                 "(only policy.override_preflight: true skips this gate; the restore itself still refuses)"
                 % (row.data["path"], "regular file" if current_kind == "file" else "directory"),
                 "override_preflight", "E_RESTORE_FAILED")

# -- preservation ------------------------------------------------------------------------------


def preservation_gate(row, ctx, dirs):
    """Probe each directory a backup or restore writes in: [(what, dir fd)], e.g. the backup directory and the
    target's directory (the restored temp file is created there and renamed over the target)."""
    tier = ctx.policy.preservation_tier
    fields = pres.FIELDS_BY_TIER[tier]
    supported = dict((f, True) for f in fields)
    reasons = {}
    seen = set()
    probed = []
    for what, fd in dirs:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        probed.append(what)
        probe = ctx.preservation_probe(fd)
        for f in fields:
            entry = probe.get(f)
            if entry is None and f == "xattrs":
                keys = [k for k in probe if k.startswith("xattrs.")]
                entry = {"supported": bool(keys) and all(probe[k].get("supported") for k in keys),
                         "reason": "per-namespace"}
            if not (entry and entry.get("supported")):
                supported[f] = False
                reasons.setdefault(f, "%s: %s" % (what, (entry or {}).get("reason", "not probed")))
    row.data["preservation"] = {"tier": tier, "fields": list(fields), "probed": probed}
    row.data["preservation_supported"] = supported
    missing = sorted(f for f, ok in supported.items() if not ok)
    if missing:
        msg = "preservation tier %s cannot keep %s for %s (%s)" % (
            tier, ", ".join(missing), row.data["path"], "; ".join("%s in %s" % (f, reasons[f]) for f in missing))
        if ctx.policy.require_preservation:
            row.stop(msg + " (lower policy.preservation_tier or set policy.require_preservation: false)",
                     "require_preservation")
        else:
            row.note(msg + "; restore will report them skipped-unsupported")

# -- backup directory --------------------------------------------------------------------------


def _backup_dir_probe(store, root_fd, backup_dir_rel, target):
    """(fd on the target's backup directory or, when it does not exist yet, its deepest existing ancestor, exists?)."""
    bdir = store.dir_for(target, create=False)
    if bdir is not None:
        return bdir, True
    parts = components(backup_dir_rel) + components(target.parent_rel)
    for i in range(len(parts) - 1, 0, -1):
        try:
            return open_dir_beneath(root_fd, parts[:i], "policy.backup_dir", backup_dir_rel)[0], False
        except (PolicyError, OSError):
            continue
    return os.dup(root_fd), False


def backup_gates(row, ctx, store, backup_dir_rel, target, kind):
    """The backup directory must be on the target's mount (hard-link backup) unless allow_degraded_fs, and every
    directory a backup or a restore writes in (backup directory, target directory) is probed for preservation."""
    if backup_dir_rel is None:
        row.data["backup_same_fs"] = True
        if kind == "file":
            preservation_gate(row, ctx, [("the target directory", target.parent_fd)])
        return
    bfd, exists = _backup_dir_probe(store, ctx.root_fd, backup_dir_rel, target)
    try:
        same = _mounts.same_mount(bfd, target.parent_fd)
        row.data["backup_same_fs"] = bool(same)
        if not same and not ctx.policy.allow_degraded_fs and kind == "file":
            row.stop("backup directory %s%s is on another mount than %s, so the backup cannot be a hard link "
                     "(set policy.allow_degraded_fs: true to back up by copy)"
                     % (backup_dir_rel, "" if exists else " (to be created)", row.data["path"]),
                     "allow_degraded_fs", "E_EXDEV")
        if kind == "file":
            preservation_gate(row, ctx, [("the backup directory", bfd), ("the target directory", target.parent_fd)])
    finally:
        os.close(bfd)
