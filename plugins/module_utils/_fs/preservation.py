# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metadata preservation tiers: capture from a file, apply in a safe order and verify on a restored one. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import errno
import os
import stat

from ansible_collections.switchyard.fs.plugins.module_utils._fs.xattr import get_backend

TIERS = ("basic", "extended", "full")

# Field names as they appear in ``preservation_applied`` and in the capability probe's result.
FIELDS_BY_TIER = {
    "basic": ("mode",),
    "extended": ("mode", "uid", "gid", "atime", "mtime"),
    "full": ("mode", "uid", "gid", "atime", "mtime", "xattrs"),
}

APPLIED = "applied"
# The report schema spells it so and accepts nothing else.
UNSUPPORTED = "skipped-unsupported"
FAILED = "failed"

# Lack of privilege or of filesystem support: the field cannot be preserved here, by design.
# EACCES: permission checks of some filesystems; E2BIG: value larger than this filesystem allows.
UNSUPPORTED_ERRNOS = frozenset((errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.ENOTSUP, errno.E2BIG))
# chown to an id that is not mapped in this user namespace (or on an idmapped mount).
UNSUPPORTED_OWNER_ERRNOS = UNSUPPORTED_ERRNOS | frozenset((errno.EINVAL,))

# Extended attributes that the full tier owns on the restored file: present on the file but
# absent from the sidecar means the file picked them up on creation (inherited default ACL,
# stray attributes) and they are removed. LSM labels (security.selinux, security.ima, ...)
# are assigned by the kernel and left alone.
_OWNED_XATTR_PREFIXES = ("user.", "trusted.")
_OWNED_XATTR_NAMES = ("security.capability", "system.posix_acl_access", "system.posix_acl_default")

_NS = 10 ** 9


# --------------------------------------------------------------------------- helpers

def fields_of_tier(tier):
    """The fields a tier preserves; ValueError naming the tiers for an unknown one."""
    if tier not in FIELDS_BY_TIER:
        raise ValueError("unknown preservation tier %r (expected one of %s)" % (tier, ", ".join(TIERS)))
    return FIELDS_BY_TIER[tier]


def _errno_name(exc):
    return errno.errorcode.get(exc.errno, str(exc.errno))


def describe_oserror(exc):
    return "%s: %s" % (_errno_name(exc), exc.strerror or exc)


def _classify(exc, unsupported=UNSUPPORTED_ERRNOS):
    return UNSUPPORTED if exc.errno in unsupported else FAILED


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_owned_xattr(name):
    return name in _OWNED_XATTR_NAMES or name.startswith(_OWNED_XATTR_PREFIXES)


class _Outcome:
    """Collects per-field status and the reason for every field that is not "applied"."""

    def __init__(self):
        self.status = {}
        self.reasons = {}

    def ok(self, field):
        self.status[field] = APPLIED
        self.reasons.pop(field, None)

    def set(self, field, status, reason):
        self.status[field] = status
        self.reasons[field] = reason

    def missing(self, field, key):
        self.set(field, UNSUPPORTED, "sidecar has no %r (older sidecar format or lower tier)" % key)


# --------------------------------------------------------------------------- capture

def capture_metadata(st, fd, tier, backend=None):
    """Sidecar fields of ``tier`` for a regular file: ``st`` its stat, ``fd`` open on it.

    basic: {"tier", "mode", "uid", "gid"}; extended adds "atime_sec", "atime_nsec",
    "mtime_sec", "mtime_nsec"; full adds "xattrs": {name: base64 value} in name order.
    Raises ValueError when ``fd`` is not the file ``st`` describes, OSError when an
    attribute the file has cannot be read (a backup that silently lost it would be worse).
    """
    fields = fields_of_tier(tier)
    if fd is not None:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise ValueError("capture_metadata: fd and stat result describe different files")
    # Every tier records the owner (the tier decides what restore applies): restore never sets setuid or
    # setgid on a file whose owner or group differs from the recorded one.
    meta = {"tier": tier, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if "atime" in fields:
        meta["atime_sec"], meta["atime_nsec"] = divmod(st.st_atime_ns, _NS)
        meta["mtime_sec"], meta["mtime_nsec"] = divmod(st.st_mtime_ns, _NS)
    if "xattrs" in fields:
        if fd is None:
            raise ValueError("capture_metadata: tier 'full' needs an open fd")
        meta["xattrs"] = _capture_xattrs(fd, get_backend(backend))
    return meta


def _capture_xattrs(fd, xb):
    try:
        names = xb.list(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}  # the filesystem stores no xattrs, so the file has none to lose
        raise
    values = {}
    for name in sorted(names):
        try:
            value = xb.get(fd, name)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue  # removed between list and get
            raise
        values[name] = base64.b64encode(value).decode("ascii")
    return values


# --------------------------------------------------------------------------- apply

def apply_metadata(fd, meta, tier, backend=None):
    """Put captured metadata back on ``fd`` (the restored temp file, before its rename).

    Order: owner (fchown clears setuid/setgid and file capabilities), mode (fchmod), xattrs
    (security.capability after the chown; ACLs after the chmod, which rewrites the ACL mask),
    timestamps last (every earlier step may touch them). A setuid/setgid bit is put back only
    on the owner/group it was captured with when the sidecar names it. Every step is checked
    against fstat afterwards, so a bit the kernel dropped silently is reported.

    Returns ``(preservation_applied, reasons)``: ``{field: "applied"|"skipped-unsupported"|"failed"}``
    for every field of ``tier``, and ``{field: reason}`` for each field that is not "applied".
    "skipped-unsupported" = no privilege or no filesystem support (or the sidecar lacks the field);
    "failed" = an unexpected error or a malformed sidecar value. Never raises for either.
    """
    fields = fields_of_tier(tier)
    out = _Outcome()
    if not isinstance(meta, dict):
        for field in fields:
            out.set(field, FAILED, "sidecar metadata is not a mapping")
        return out.status, out.reasons

    if "uid" in fields:
        _apply_owner(fd, meta, out)
    _apply_mode(fd, meta, out)
    if "xattrs" in fields:
        _apply_xattrs(fd, meta, get_backend(backend), out)
    if "atime" in fields:
        _apply_times(fd, meta, out)
    _verify(fd, meta, fields, out)
    return {f: out.status[f] for f in fields}, {f: out.reasons[f] for f in fields if f in out.reasons}


def _apply_owner(fd, meta, out):
    for field, index in (("uid", 0), ("gid", 1)):
        if field not in meta:
            out.missing(field, field)
            continue
        value = meta[field]
        if not _is_int(value) or value < 0:
            out.set(field, FAILED, "sidecar %s is not a non-negative integer: %r" % (field, value))
            continue
        ids = [-1, -1]
        ids[index] = value
        try:
            os.fchown(fd, ids[0], ids[1])
        except OSError as exc:
            out.set(field, _classify(exc, UNSUPPORTED_OWNER_ERRNOS), "fchown to %s %d: %s" % (field, value, describe_oserror(exc)))
        else:
            out.ok(field)


def _wanted_mode(fd, meta):
    """(mode to set, reason a special bit was withheld or None)."""
    mode = meta["mode"] & 0o7777
    st = os.fstat(fd)
    withheld = []
    # Never hand out setuid/setgid: a bit is set only on the owner (group) it was captured with, and a
    # sidecar that does not name the owner gets neither bit.
    for bit, field, what, current in ((stat.S_ISUID, "uid", "setuid", st.st_uid), (stat.S_ISGID, "gid", "setgid", st.st_gid)):
        if not mode & bit:
            continue
        recorded = meta.get(field)
        if not _is_int(recorded):
            mode &= ~bit
            withheld.append("%s withheld: the sidecar does not record the file's %s" % (what, field))
        elif current != recorded:
            mode &= ~bit
            withheld.append("%s withheld: restored file has %s %d, captured %s is %d" % (what, field, current, field, recorded))
    return mode, ("; ".join(withheld) or None)


def _apply_mode(fd, meta, out):
    if "mode" not in meta:
        out.missing("mode", "mode")
        return
    if not _is_int(meta["mode"]) or meta["mode"] < 0:
        out.set("mode", FAILED, "sidecar mode is not a non-negative integer: %r" % (meta["mode"],))
        return
    mode, withheld = _wanted_mode(fd, meta)
    try:
        os.fchmod(fd, mode)
    except OSError as exc:
        out.set("mode", _classify(exc), "fchmod %04o: %s" % (mode, describe_oserror(exc)))
        return
    if withheld:
        out.set("mode", UNSUPPORTED, withheld)
    else:
        out.ok("mode")


def _decode_xattrs(raw):
    """{name: bytes} from the sidecar's {name: base64}; ValueError when malformed."""
    if not isinstance(raw, dict):
        raise ValueError("sidecar xattrs is not a mapping")
    decoded = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError("sidecar xattr entry %r is not a name -> base64 string" % (name,))
        try:
            decoded[name] = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ValueError("sidecar xattr %r is not valid base64" % (name,))
    return decoded


def _apply_xattrs(fd, meta, xb, out):
    if "xattrs" not in meta:
        out.missing("xattrs", "xattrs")
        return
    try:
        wanted = _decode_xattrs(meta["xattrs"])
    except ValueError as exc:
        out.set("xattrs", FAILED, str(exc))
        return
    per_name = {}  # name -> (status, reason)
    try:
        present = xb.list(fd)
    except OSError as exc:
        present = []
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            per_name["(list)"] = (FAILED, "listing xattrs: %s" % describe_oserror(exc))
    for name in present:
        if name not in wanted and _is_owned_xattr(name):
            try:
                xb.remove(fd, name)
            except OSError as exc:
                if exc.errno != errno.ENODATA:
                    per_name[name] = (_classify(exc), "removing stray %s: %s" % (name, describe_oserror(exc)))
    for name in sorted(wanted):
        try:
            xb.set(fd, name, wanted[name])
        except OSError as exc:
            per_name[name] = (_classify(exc), "%s: %s" % (name, describe_oserror(exc)))
    statuses = set(s for s, _unused in per_name.values())
    if not statuses:
        out.ok("xattrs")
        return
    reason = "; ".join(per_name[n][1] for n in sorted(per_name))
    out.set("xattrs", FAILED if FAILED in statuses else UNSUPPORTED, reason)


def _time_ns(meta, which):
    """Captured ``atime``/``mtime`` in ns; None when absent; ValueError when malformed."""
    sec_key, nsec_key = which + "_sec", which + "_nsec"
    if sec_key not in meta or nsec_key not in meta:
        return None
    sec, nsec = meta[sec_key], meta[nsec_key]
    if not (_is_int(sec) and _is_int(nsec) and 0 <= nsec < _NS):
        raise ValueError("sidecar %s is malformed: %r, %r" % (which, sec, nsec))
    return sec * _NS + nsec


def _apply_times(fd, meta, out):
    wanted = {}
    for which in ("atime", "mtime"):
        try:
            value = _time_ns(meta, which)
        except ValueError as exc:
            out.set(which, FAILED, str(exc))
            continue
        if value is None:
            out.missing(which, which + "_sec/" + which + "_nsec")
        else:
            wanted[which] = value
    if not wanted:
        return
    st = os.fstat(fd)
    times = (wanted.get("atime", st.st_atime_ns), wanted.get("mtime", st.st_mtime_ns))
    try:
        os.utime(fd, ns=times)
    except OSError as exc:
        for which in wanted:
            out.set(which, _classify(exc), "utime: %s" % describe_oserror(exc))
        return
    for which in wanted:
        out.ok(which)


def _verify(fd, meta, fields, out):
    """Turn an "applied" into "skipped-unsupported" when fstat shows the kernel kept something else."""
    st = os.fstat(fd)
    checks = []
    if out.status.get("mode") == APPLIED:
        checks.append(("mode", stat.S_IMODE(st.st_mode), meta["mode"] & 0o7777, "%04o"))
    for field, actual in (("uid", st.st_uid), ("gid", st.st_gid)):
        if field in fields and out.status.get(field) == APPLIED:
            checks.append((field, actual, meta[field], "%d"))
    for which, actual in (("atime", st.st_atime_ns), ("mtime", st.st_mtime_ns)):
        if which in fields and out.status.get(which) == APPLIED:
            checks.append((which, actual, _time_ns(meta, which), "%d ns"))
    for field, actual, wanted, fmt in checks:
        if actual != wanted:
            out.set(field, UNSUPPORTED, ("the kernel kept " + fmt + ", wanted " + fmt) % (actual, wanted))
