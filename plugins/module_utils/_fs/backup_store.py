# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup store: where a target's backups live, their names, and the scan that finds the usable ones. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import os
import re
import stat

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import preservation as pres
from ansible_collections.switchyard.fs.plugins.module_utils._fs import sidecar as sc
from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import components
from ansible_collections.switchyard.fs.plugins.module_utils._fs.sidepath import SidePath, open_dirs_below, open_side_dir


def payload_name(name, tag, ms):
    return ".%s.%s.%d%s" % (name, tag, ms, sc.PAYLOAD_SUFFIX)


def sidecar_name(name, tag, ms):
    return payload_name(name, tag, ms) + ".meta.json"


def _sidecar_re(name, tag):
    return re.compile(r"^\.%s\.%s\.(\d{1,19})%s$" % (re.escape(name), re.escape(tag), re.escape(sc.SIDECAR_SUFFIX)))


def _payload_re(name, tag):
    return re.compile(r"^\.%s\.%s\.(\d{1,19})%s$" % (re.escape(name), re.escape(tag), re.escape(sc.PAYLOAD_SUFFIX)))


class Rejected(object):
    """A sidecar that failed parse_sidecar (or whose payload is not what it describes): never used."""

    def __init__(self, ms, sidecar, where, error):
        self.ms = ms
        self.sidecar = sidecar
        self.where = where
        self.field = error.field
        self.reason = error.reason

    def describe(self):
        return "backup sidecar %s is unusable: field %s %s" % (self.where, self.field, self.reason)


class Scan(object):
    """Everything of one target's backup set in one directory, newest first:
    usable (complete, checked), rejected (bad sidecars), incomplete (checked sidecar whose payload is
    missing: a prune or rollback killed between its two unlinks), orphan_payloads ([(ms, name)]
    payload names without a sidecar)."""

    def __init__(self):
        self.usable = []
        self.rejected = []
        self.incomplete = []
        self.orphan_payloads = []


class Backup(object):
    """A complete backup: a parsed sidecar plus (unless prior_kind is absent) its payload entry."""

    def __init__(self, dir_fd, ms, sidecar, meta):
        self.dir_fd = dir_fd
        self.ms = ms
        self.sidecar = sidecar
        self.meta = meta

    @property
    def payload(self):
        return self.meta.get("payload")

    @property
    def prior_kind(self):
        return self.meta.get("prior_kind", "file")

    def describe(self):
        return {"backup_name": self.payload or self.sidecar, "sidecar": self.sidecar, "created_ms": self.ms,
                "prior_kind": self.prior_kind, "payload_hash": self.meta.get("payload_hash"),
                "backup_method": self.meta.get("backup_method"),
                "backup_preservation": _statuses(self.meta.get("backup_preservation"))}


def _statuses(recorded):
    """Sidecars written by 0.1.0 spell skipped-unsupported as "unsupported": report the schema's word."""
    if not isinstance(recorded, dict):
        return None
    return dict((k, pres.UNSUPPORTED if v == "unsupported" else v) for k, v in recorded.items())


class BackupStore(object):
    """Where backups of one target live: next to it, or mirrored under policy.backup_dir."""

    def __init__(self, root_fd, backup_dir_rel, tag):
        if not isinstance(tag, str) or not sc.TAG_RE.match(tag):
            raise PolicyError("backup_tag=%r must be 1-64 characters of letters, digits, '_' or '-'" % (tag,))
        if backup_dir_rel is not None:
            check_dir_rel(backup_dir_rel, "backup_dir_rel")
        self.root_fd = root_fd
        self.backup_dir_rel = backup_dir_rel
        self.tag = tag

    def dir_for(self, target, create, durability=None):
        """An fd (caller closes) on the directory holding `target`'s backups, or None if absent.
        With create, missing directories are made (and their parents fsynced through durability)."""
        if self.backup_dir_rel is None:
            return os.dup(target.parent_fd)
        # backup_dir's parents by the one walk (0755), backup_dir and its mirror of target directories private
        # (0700), never through a symlink.
        side = SidePath("policy.backup_dir", self.backup_dir_rel, self.backup_dir_rel, False)
        bfd = open_side_dir(self.root_fd, side, create, 0o700, 0o755, durability)
        if bfd is None:
            return None
        try:
            return open_dirs_below(bfd, components(target.parent_rel), create, 0o700, side.option,
                                   self.backup_dir_rel, durability)
        finally:
            os.close(bfd)

    def where(self, target, name):
        """The in-root path of a file in target's backup directory, for messages."""
        parts = components(self.backup_dir_rel or "") \
            + components(target.parent_rel) + [name]
        return "/" + "/".join(parts)

    def scan(self, target, dir_fd):
        """Scan of target's backups in dir_fd (see Scan): only its usable ones are ever restored.  Only names of
        this target and tag are looked at; nothing read from a sidecar is used as a path."""
        rx, prx = _sidecar_re(target.name, self.tag), _payload_re(target.name, self.tag)
        out = Scan()
        entries = os.listdir(dir_fd)
        names = set(entries)
        for entry in entries:
            pm = prx.match(entry)
            if pm and entry + ".meta.json" not in names and int(pm.group(1)) <= sc.MAX_INT:
                out.orphan_payloads.append((int(pm.group(1)), entry))
            m = rx.match(entry)
            if not m or int(m.group(1)) > sc.MAX_INT:
                continue
            ms = int(m.group(1))
            try:
                parsed = load_sidecar(dir_fd, entry, self.tag)
                if parsed is None:
                    continue  # removed while we looked
                backup = Backup(dir_fd, ms, entry, parsed.meta)
                if backup.prior_kind != "absent":
                    pst = fs.lstat_at(dir_fd, backup.payload)
                    if pst is None:
                        out.incomplete.append(backup)
                        continue
                    check_payload_kind(entry, backup.prior_kind, pst)
            except sc.SidecarInvalid as e:
                out.rejected.append(Rejected(ms, entry, self.where(target, entry), e))
                continue
            out.usable.append(backup)
        for seq in (out.usable, out.rejected, out.incomplete, out.orphan_payloads):
            seq.sort(key=lambda b: b[0] if isinstance(b, tuple) else b.ms, reverse=True)
        return out

    def next_ms(self, target, dir_fd, now_ms, reserved=None):
        """A timestamp whose payload and sidecar names are both free (bumped past collisions) and not already
        reserved by another action of the same plan; the names are added to `reserved`, a set the plan keeps
        until it is done, so no two actions can ever choose the same backup names."""
        dst = os.fstat(dir_fd)
        ms = now_ms
        while True:
            names = (payload_name(target.name, self.tag, ms), sidecar_name(target.name, self.tag, ms))
            keys = [(dst.st_dev, dst.st_ino, n) for n in names]
            taken = (reserved is not None and any(k in reserved for k in keys)) or any(
                fs.lstat_at(dir_fd, n) is not None for n in names)
            if not taken:
                break
            ms += 1
        if reserved is not None:
            reserved.update(keys)
        return ms


def check_dir_rel(rel, what):
    """An in-root directory path read from a journal or given as a setting: '/a/b', no '.', '..', NUL, sane
    lengths.  PolicyError otherwise: such a value is never used to open anything."""
    if not isinstance(rel, str) or not rel.startswith("/") or "\x00" in rel or len(rel) > sc.MAX_PATH_BYTES:
        raise PolicyError("%s=%r must be an absolute in-root path of at most %d bytes without NUL"
                          % (what, rel if isinstance(rel, str) and len(rel) < 200 else type(rel).__name__,
                             sc.MAX_PATH_BYTES))
    for part in rel.split("/")[1:]:
        if part in (".", "..") or len(part.encode("utf-8", "surrogateescape")) > sc.MAX_NAME_BYTES:
            raise PolicyError("%s=%r must not contain '.' or '..' or a component longer than %d bytes"
                              % (what, rel[:200], sc.MAX_NAME_BYTES))
    return rel


def check_payload_kind(sidecar, prior_kind, pst):
    kind = fs.kind_of(pst)
    if kind != prior_kind:
        raise sc.SidecarInvalid(sidecar, "prior_kind", "says %s but the payload is a %s" % (prior_kind, kind))


def load_sidecar(dir_fd, name, tag=None):
    """The checked sidecar `name` in dir_fd (a BackupSidecar), None when it does not exist; SidecarInvalid when
    it is not a regular file, too large, unreadable or any field fails its check."""
    try:
        fd = fs.open_file_at(dir_fd, name)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise sc.SidecarInvalid(name, "(file)", "cannot be opened as a regular file (%s)"
                                % errno.errorcode.get(e.errno, e.errno))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise sc.SidecarInvalid(name, "(file)", "is not a regular file")
        if st.st_size > sc.MAX_SIDECAR_BYTES:
            raise sc.SidecarInvalid(name, "(file)", "larger than %d bytes" % sc.MAX_SIDECAR_BYTES)
        parts, total = [], 0
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError as e:
                raise sc.SidecarInvalid(name, "(file)", "cannot be read (%s)" % errno.errorcode.get(e.errno, e.errno))
            if not chunk:
                break
            total += len(chunk)
            if total > sc.MAX_SIDECAR_BYTES:
                raise sc.SidecarInvalid(name, "(file)", "larger than %d bytes" % sc.MAX_SIDECAR_BYTES)
            parts.append(chunk)
    finally:
        os.close(fd)
    return sc.parse_sidecar(b"".join(parts), name, tag)
