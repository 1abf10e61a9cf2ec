# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups and their sidecars (backup_meta.v2): create, verify, restore, remove. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import json
import os
import stat
import time

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import hazards as hz
from ansible_collections.switchyard.fs.plugins.module_utils._fs import preservation as pres
from ansible_collections.switchyard.fs.plugins.module_utils._fs import swap
from ansible_collections.switchyard.fs.plugins.module_utils._errors import (
    BackupMissingError, ExdevError, RestoreFailedError, PolicyError)
from ansible_collections.switchyard.fs.plugins.module_utils._fs.backup_store import Backup, payload_name, sidecar_name

SIDECAR_SCHEMA = "backup_meta.v2"


def content_key(st):
    """Changes whenever the bytes can have changed: any write updates mtime and ctime."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def create_backup(target, st, dir_fd, ms, tag, ids, policy, durability, run_id, same_fs, known_hash=None, batch=None):
    """Back up the current entry of target (st = its lstat) into dir_fd.

    file: the open, checked and hashed inode gets the backup name (linkat of the fd: same inode, all
    metadata) when same_fs, else its bytes are copied from that fd (hashed as copied) + metadata + fsync.
    symlink: a new symlink with the same text.  absent: sidecar only.
    The sidecar is written last (temp, fsync, rename, fsync dir): without it the backup is
    incomplete and never selected for restore.  Backup.expect is the lstat the swap must find.
    known_hash: (content_key, sha256) from an earlier read of the same entry, reused when the file is
    provably unchanged so a large binary is read once per apply.
    batch: a DurableBatch that makes this backup durable together with the rest of the plan's."""
    # e.g. from a restore that was killed; a batch lists each directory once per plan, not once per target
    fs.remove_dead_temps(target.parent_fd, target.name, batch.temps_in(target.parent_fd) if batch is not None else None)
    kind = fs.kind_of(st)
    pname = payload_name(target.name, tag, ms)
    meta = {"schema": SIDECAR_SCHEMA, "tag": tag, "target": target.rel, "created_ms": ms,
            "plan_id": ids["plan_id"], "action_id": ids["action_id"], "run_id": run_id,
            "prior_kind": kind, "hash_alg": fs.HASH_ALG, "payload": None, "payload_hash": None,
            "prior_link_target": None, "backup_method": "none", "tier": policy.preservation_tier}
    expect = None
    if kind == "file":
        fd = fs.open_file_at(target.parent_fd, target.name)
        try:
            inspected_ns = time.time_ns()
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                raise fs.EntryChanged(errno.EAGAIN, "%s changed while it was being backed up; nothing was swapped, "
                                                    "retry" % target.rel)
            _hazards_of_open_file(target.rel, fd, fst, policy)
            meta.update(pres.capture_metadata(fst, fd, policy.preservation_tier))
            meta["size"] = fst.st_size
            if same_fs:
                if (known_hash is not None and known_hash[1] and known_hash[0] == content_key(fst)
                        and not swap.recently_changed(fst, inspected_ns)):
                    meta["payload_hash"] = known_hash[1]
                else:
                    meta["payload_hash"] = fs.sha256_fd(fd)
                fs.link_fd_at(fd, dir_fd, pname)
                meta["backup_method"] = "hardlink"
            else:
                if not policy.allow_degraded_fs:
                    raise ExdevError("the backup directory for %s is on another filesystem; set policy.allow_degraded_fs: true "
                                     "to back up by copy, or use a backup directory on the same filesystem" % target.rel,
                                     path=target.rel)
                meta["payload_hash"] = _copy_payload(fd, dir_fd, pname, meta, policy, durability, run_id, batch)
                meta["backup_method"] = "copy"
            # Linking moves ctime, so the swap compares against the state after the backup was made; bytes
            # written while they were hashed or copied move mtime or size.
            expect = os.fstat(fd)
            if ((expect.st_size, expect.st_mtime_ns) != (fst.st_size, fst.st_mtime_ns)
                    or (swap.recently_changed(expect) and fs.sha256_fd(fd) != meta["payload_hash"])):
                fs.unlink_at(dir_fd, pname)
                raise fs.EntryChanged(errno.EAGAIN, "%s was written while it was being backed up; nothing was "
                                                    "swapped, retry" % target.rel)
        finally:
            os.close(fd)
        meta["payload"] = pname
    elif kind == "symlink":
        text = fs.readlink_at(target.parent_fd, target.name)
        expect = target.lstat()
        if expect is None or (expect.st_dev, expect.st_ino) != (st.st_dev, st.st_ino):
            raise fs.EntryChanged(errno.EAGAIN, "%s changed while it was being backed up; nothing was swapped, "
                                                "retry" % target.rel)
        os.symlink(text, pname, dir_fd=dir_fd)
        meta.update({"payload": pname, "prior_link_target": text, "backup_method": "symlink",
                     "mode": stat.S_IMODE(st.st_mode)})
    elif kind != "absent":
        raise PolicyError("%s is a %s; only files, symlinks and absent entries can be swapped" % (target.rel, kind),
                          path=target.rel)
    faults.kill_point("after_backup_payload")
    sname = sidecar_name(target.name, tag, ms)
    data = (json.dumps(meta, sort_keys=True, indent=1) + "\n").encode("utf-8")
    swap.write_file_replace_at(dir_fd, sname, data, run_id, durability, mode=0o600, batch=batch)
    faults.kill_point("after_sidecar")
    backup = Backup(dir_fd, ms, sname, meta)
    backup.expect = expect
    return backup


def _hazards_of_open_file(rel, fd, fst, policy):
    """The setuid/setgid/capability and hard-link check (hazards.file_hazards) again, on the very file being backed
    up: a mode toggled after preflight's lstat must not slip through into a sidecar (and later onto a restored file)."""
    if policy.override_preflight:
        return  # the operator chose to override these STOPs; preflight already turned them into warnings
    for hazard in hz.file_hazards(fst, fd):
        knob = hz.KNOB[hazard]
        if getattr(policy, knob) != "stop":
            continue
        if hazard == hz.SETID:
            raise PolicyError("%s became setuid/setgid (mode %04o) after preflight; nothing was swapped for it "
                              "(policy.suid_sgid is stop)" % (rel, stat.S_IMODE(fst.st_mode)), path=rel)
        if hazard == hz.CAPABILITY:
            raise PolicyError("%s gained file capabilities after preflight; nothing was swapped for it "
                              "(policy.suid_sgid is stop)" % rel, path=rel)
        raise PolicyError("%s gained %d hard links after preflight; nothing was swapped for it (policy.hardlinks is "
                          "stop)" % (rel, fst.st_nlink - 1), path=rel)


def _copy_payload(src_fd, dir_fd, pname, meta, policy, durability, run_id, batch=None):
    """Copy the open file's bytes into a new payload; returns the sha256 of exactly the bytes copied."""
    tmp = fs.temp_name(pname, run_id)
    out = fs.create_exclusive_at(dir_fd, tmp, 0o600)
    try:
        try:
            digest, _size = fs.copy_hashed(src_fd, out)
            # The sidecar records what the backup directory's filesystem kept of the tier, so a
            # degraded copy is visible instead of silent (restore still applies the captured values).
            meta["backup_preservation"], _reasons = pres.apply_metadata(out, meta, policy.preservation_tier)
            if batch is None:
                durability.fsync(out, "backup payload %s" % pname)
        finally:
            os.close(out)
        fs.rename_at(dir_fd, tmp, dir_fd, pname)
    except BaseException:
        fs.unlink_at(dir_fd, tmp)
        raise
    return digest


def verify_backup(backup, policy):
    """Hash the payload and compare with the sidecar; RestoreFailedError when they differ (or, unless
    best_effort_restore allows it, when the sidecar has no hash).  A mismatch never reports the payload's
    hash or bytes: only that it does not match."""
    if backup.prior_kind != "file":
        return
    expected = backup.meta.get("payload_hash")
    try:
        actual = fs.sha256_at(backup.dir_fd, backup.payload)
    except OSError as e:
        raise RestoreFailedError("backup %s cannot be read as a regular file (%s); the target was not touched"
                                 % (backup.payload, errno.errorcode.get(e.errno, e.errno)))
    if expected is None:
        if policy.require_sidecar_integrity and not policy.best_effort_restore:
            raise RestoreFailedError("backup %s has no payload_hash in its sidecar; set policy.best_effort_restore: true "
                                     "to restore it unverified" % backup.payload)
        return
    if actual != expected:
        raise RestoreFailedError("backup %s does not match its sidecar (field payload_hash); it was modified or is "
                                 "corrupt; the target was not touched" % (backup.payload,))


def target_matches_backup(target, backup, tier):
    """True when the target already is what restoring backup would produce (restore is a no-op)."""
    st = target.lstat()
    kind = fs.kind_of(st)
    if backup.prior_kind == "absent":
        return kind == "absent"
    if backup.prior_kind == "symlink":
        return kind == "symlink" and fs.readlink_at(target.parent_fd, target.name) == backup.meta.get("prior_link_target")
    if kind != "file":
        return False
    if "mode" in backup.meta and stat.S_IMODE(st.st_mode) != backup.meta["mode"]:
        return False
    if tier in ("extended", "full") and "uid" in backup.meta:
        if (st.st_uid, st.st_gid) != (backup.meta["uid"], backup.meta["gid"]):
            return False
    return fs.sha256_at(target.parent_fd, target.name) == backup.meta.get("payload_hash")


def restore_backup(target, backup, policy, durability, run_id, consume=False):
    """Put the backed-up entry back at target atomically (temp + rename, never unlink first).

    consume=True (rollback of this run's own hard-link backup): rename the backup inode itself
    back, so the original inode returns exactly, then drop its sidecar.
    Otherwise copy the payload, apply the tier's metadata, fsync, rename: the backup stays.
    Returns preservation_applied."""
    applied = {}
    kind = backup.prior_kind
    fs.remove_dead_temps(target.parent_fd, target.name)  # e.g. from an earlier restore that was killed
    st = target.lstat()
    cur = fs.kind_of(st)
    if cur == "directory":
        raise RestoreFailedError("%s is now a directory; refusing to replace it" % target.rel, path=target.rel)
    if cur == "file":
        # Callers restore over their own link or an absent name; a regular file there now was written by someone
        # else after they looked (a package upgrade): it is never destroyed.
        raise RestoreFailedError("%s is now a regular file that this restore did not expect (a concurrent writer?); "
                                 "it was left in place and the backup is kept" % target.rel, path=target.rel)
    try:
        if kind == "absent":
            if cur != "absent":
                swap.remove_checked(target.parent_fd, target.name, st, run_id)
                durability.fsync(target.parent_fd, "directory of %s" % target.rel)
        elif kind == "symlink":
            swap.symlink_replace_at(target.parent_fd, target.name, backup.meta["prior_link_target"], run_id, durability,
                                    expect=st)
            if consume:
                fs.unlink_at(backup.dir_fd, backup.payload)
        elif consume and backup.meta.get("backup_method") == "hardlink":
            # The backup inode itself goes back, exchanged against the entry the caller inspected.
            swap.replace_checked(target.parent_fd, backup.payload, target.name, st, src_dirfd=backup.dir_fd)
            faults.kill_point("after_rename")
            durability.fsync(target.parent_fd, "directory of %s" % target.rel)
            applied = dict((f, "applied") for f in pres.FIELDS_BY_TIER[policy.preservation_tier])
    except fs.EntryChanged:
        raise RestoreFailedError("%s changed while it was being restored (a concurrent writer?); the new content was "
                                 "left in place and the backup is kept" % target.rel, path=target.rel)
    if kind == "file" and not (consume and backup.meta.get("backup_method") == "hardlink"):
        tmp = fs.temp_name(target.name, run_id)
        src = fs.open_file_at(backup.dir_fd, backup.payload)
        try:
            out = fs.create_exclusive_at(target.parent_fd, tmp, 0o600)
            try:
                try:
                    _copy_verified(src, out, backup, target.rel)
                    applied, _reasons = pres.apply_metadata(out, backup.meta, policy.preservation_tier)
                    durability.fsync(out, "restored %s" % target.rel)
                finally:
                    os.close(out)
                faults.kill_point("before_rename")
            except BaseException:
                fs.unlink_at(target.parent_fd, tmp)
                raise
            try:
                # The target must still be what the restore inspected: a file written there meanwhile stays.
                swap.replace_checked(target.parent_fd, tmp, target.name, st)
            except fs.EntryChanged:
                raise RestoreFailedError("%s changed while it was being restored (a concurrent writer?); the new "
                                         "content was left in place and the backup is kept" % target.rel, path=target.rel)
        finally:
            os.close(src)
        faults.kill_point("after_rename")
        durability.fsync(target.parent_fd, "directory of %s" % target.rel)
        if consume:
            fs.unlink_at(backup.dir_fd, backup.payload)
    if consume:
        fs.unlink_at(backup.dir_fd, backup.sidecar)
        durability.fsync(backup.dir_fd, "backup directory of %s" % target.rel)
    return applied


def _copy_verified(src, out, backup, rel):
    """Copy the payload from one open fd, hashing exactly the bytes copied, then re-read what was written:
    both must be the sidecar's hash, so a payload rewritten after verify_backup is never restored."""
    expected = backup.meta.get("payload_hash")
    copied, _size = fs.copy_hashed(src, out)
    if expected is None:
        return  # best_effort_restore of a sidecar without a hash (verify_backup allowed it)
    if copied != expected:
        raise RestoreFailedError("backup %s changed after it was verified (its bytes no longer match the sidecar); "
                                 "the target was not touched" % backup.payload, path=rel)
    if fs.sha256_fd(out) != expected:
        raise RestoreFailedError("the restored copy of %s does not read back as the backup's bytes (a failing disk?); "
                                 "the target was not touched" % rel, path=rel)


def remove_backup(backup, durability):
    """Payload first, then sidecar: a kill in between leaves a checked sidecar without payload (incomplete,
    never selected, swept by the next prune), never a payload without sidecar (possibly the last copy)."""
    if backup.payload:
        faults.kill_point("before_unlink_backup")
        fs.unlink_at(backup.dir_fd, backup.payload)
    faults.kill_point("before_unlink_backup")
    fs.unlink_at(backup.dir_fd, backup.sidecar)
    durability.fsync(backup.dir_fd, "backup directory")


def select_backup(backups, which, rel):
    """The one backup selection: the `which` (latest | previous) backup of `rel` among its newest-first complete
    `backups`; BackupMissingError saying how many complete backups there are when there is no such one."""
    idx = 0 if which == "latest" else 1
    if len(backups) <= idx:
        raise BackupMissingError("no complete %s backup of %s (found %d complete backup%s)"
                                 % (which, rel, len(backups), "" if len(backups) == 1 else "s"), path=rel)
    return backups[idx]


def require_backup(backups, which, target, rejected=()):
    """select_backup for a restore: a missing backup's error also names every rejected sidecar."""
    try:
        return select_backup(backups, which, target.rel)
    except BackupMissingError as e:
        extra = "".join("; %s" % r.describe() for r in rejected)
        raise BackupMissingError("%s%s; nothing was changed" % (e.msg, extra), path=target.rel)
