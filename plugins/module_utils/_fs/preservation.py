# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metadata preservation tiers: capture, apply in a safe order, probe support. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import errno
import os
import stat
import struct

TIERS = ("basic", "extended", "full")

# Field names as they appear in ``preservation_applied`` and in the probe result.
FIELDS_BY_TIER = {
    "basic": ("mode",),
    "extended": ("mode", "uid", "gid", "atime", "mtime"),
    "full": ("mode", "uid", "gid", "atime", "mtime", "xattrs"),
}

APPLIED = "applied"
# SPEC section 7 spells it so; the report schema accepts nothing else.
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
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID

# Probe keys for the full tier besides the "xattrs" summary, one per namespace that is
# checked on its own (each needs a different privilege).
XATTR_PROBE_KEYS = (
    "xattrs.user",
    "xattrs.trusted",
    "xattrs.security.capability",
    "xattrs.security.selinux",
    "xattrs.system.posix_acl_access",
)

_PROBE_NAME_PREFIX = ".switchyard-probe."
_PROBE_TIMES_NS = (1234567890123456789, 1234567891987654321)  # (atime, mtime): odd nanoseconds on purpose
_CAP_NET_RAW = 13
# struct vfs_cap_data, revision 2, effective flag set, permitted = cap_net_raw.
_PROBE_CAPABILITY = struct.pack("<IIIII", 0x02000000 | 0x1, 1 << _CAP_NET_RAW, 0, 0, 0)
_ACL_XATTR_VERSION = 2
_ACL_UNDEFINED_ID = 0xFFFFFFFF
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


# --------------------------------------------------------------------------- xattr backends

class XattrBackend:
    """One interface over the fd-based xattr calls; names are always ``str``, values ``bytes``.

    Errors are ``OSError`` with the kernel's errno, whichever implementation runs.
    """

    name = None

    def list(self, fd):
        raise NotImplementedError

    def get(self, fd, name):
        raise NotImplementedError

    def set(self, fd, name, value):
        raise NotImplementedError

    def remove(self, fd, name):
        raise NotImplementedError


class OsXattrBackend(XattrBackend):
    """The standard library calls (Linux): os.listxattr and friends accept an fd."""

    name = "os"

    def list(self, fd):
        return sorted(os.listxattr(fd))

    def get(self, fd, name):
        return os.getxattr(fd, name)

    def set(self, fd, name, value):
        os.setxattr(fd, name, value)

    def remove(self, fd, name):
        os.removexattr(fd, name)


def _import_pyxattr():
    """The pyxattr module, or None; a different package also installs as ``xattr``."""
    try:
        import xattr
    except ImportError:
        return None
    if all(callable(getattr(xattr, attr, None)) for attr in ("list", "get", "set", "remove")):
        return xattr
    return None


class PyxattrBackend(XattrBackend):
    """pyxattr (``import xattr``); it returns names as bytes, normalised here to str."""

    name = "pyxattr"

    def __init__(self):
        self._mod = _import_pyxattr()
        if self._mod is None:
            raise ValueError("xattr backend 'pyxattr' requested but the pyxattr module is not importable")

    def list(self, fd):
        return sorted(os.fsdecode(n) for n in self._mod.list(fd))

    def get(self, fd, name):
        return self._mod.get(fd, os.fsencode(name))

    def set(self, fd, name, value):
        self._mod.set(fd, os.fsencode(name), value)

    def remove(self, fd, name):
        self._mod.remove(fd, os.fsencode(name))


def default_backend():
    """pyxattr when importable, else the standard library."""
    if _import_pyxattr() is not None:
        return PyxattrBackend()
    return OsXattrBackend()


def get_backend(backend=None):
    """None -> default_backend(); "os" / "pyxattr" force one; an XattrBackend is used as is."""
    if backend is None:
        return default_backend()
    if isinstance(backend, XattrBackend):
        return backend
    if backend == "os":
        return OsXattrBackend()
    if backend == "pyxattr":
        return PyxattrBackend()
    raise ValueError("unknown xattr backend %r (expected 'os' or 'pyxattr')" % (backend,))


# --------------------------------------------------------------------------- helpers

def _check_tier(tier):
    if tier not in FIELDS_BY_TIER:
        raise ValueError("unknown preservation tier %r (expected one of %s)" % (tier, ", ".join(TIERS)))
    return FIELDS_BY_TIER[tier]


def _errno_name(exc):
    return errno.errorcode.get(exc.errno, str(exc.errno))


def _describe(exc):
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
    fields = _check_tier(tier)
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
    fields = _check_tier(tier)
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
            out.set(field, _classify(exc, UNSUPPORTED_OWNER_ERRNOS), "fchown to %s %d: %s" % (field, value, _describe(exc)))
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
        out.set("mode", _classify(exc), "fchmod %04o: %s" % (mode, _describe(exc)))
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
            per_name["(list)"] = (FAILED, "listing xattrs: %s" % _describe(exc))
    for name in present:
        if name not in wanted and _is_owned_xattr(name):
            try:
                xb.remove(fd, name)
            except OSError as exc:
                if exc.errno != errno.ENODATA:
                    per_name[name] = (_classify(exc), "removing stray %s: %s" % (name, _describe(exc)))
    for name in sorted(wanted):
        try:
            xb.set(fd, name, wanted[name])
        except OSError as exc:
            per_name[name] = (_classify(exc), "%s: %s" % (name, _describe(exc)))
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
            out.set(which, _classify(exc), "utime: %s" % _describe(exc))
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


# --------------------------------------------------------------------------- probe

def probe_capabilities(dirfd, tier, backend=None):
    """Can this process on this filesystem preserve each field of ``tier``? Ask the kernel.

    Creates a uniquely named probe file in ``dirfd``, exercises each field on it and removes
    it (also on error). Returns ``{key: {"supported": bool, "reason": str}}`` with a key per
    field of the tier; the full tier adds one key per xattr namespace (XATTR_PROBE_KEYS),
    and "xattrs" is supported only when all of them are.
    """
    fields = _check_tier(tier)
    xb = get_backend(backend) if "xattrs" in fields else None
    name = "%s%d.%s" % (_PROBE_NAME_PREFIX, os.getpid(), binascii.hexlify(os.urandom(8)).decode("ascii"))
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dirfd)
    except OSError as exc:
        reason = "cannot create a probe file: %s" % _describe(exc)
        keys = list(fields) + (list(XATTR_PROBE_KEYS) if xb else [])
        return {k: {"supported": False, "reason": reason} for k in keys}
    try:
        result = {}
        result["mode"] = _probe_mode(fd, dirfd)
        if "uid" in fields:
            result["uid"], result["gid"] = _probe_owner(fd)
            result["atime"], result["mtime"] = _probe_times(fd)
        if xb is not None:
            result.update(_probe_xattrs(fd, xb))
            missing = [k for k in XATTR_PROBE_KEYS if not result[k]["supported"]]
            result["xattrs"] = {
                "supported": not missing,
                "reason": ("not supported: " + ", ".join(missing)) if missing else "every namespace can be set",
            }
        return result
    finally:
        os.close(fd)
        os.unlink(name, dir_fd=dirfd)


def _yes(reason):
    return {"supported": True, "reason": reason}


def _no(reason):
    return {"supported": False, "reason": reason}


def _probe_mode(fd, dirfd):
    wanted = 0o6750 | stat.S_ISVTX
    try:
        os.fchmod(fd, wanted)
    except OSError as exc:
        return _no("fchmod: %s" % _describe(exc))
    got = stat.S_IMODE(os.fstat(fd).st_mode)
    if got != wanted:
        return _no("fchmod %04o kept %04o (setgid is dropped when the caller is not in the file's group)" % (wanted, got))
    reason = "setuid/setgid/sticky bits are stored"
    if os.fstatvfs(dirfd).f_flag & getattr(os, "ST_NOSUID", 2):
        reason += "; the mount is nosuid, so setuid/setgid have no effect at exec"
    return _yes(reason)


def _other_id(current):
    return 1 if current != 1 else 2


def _probe_owner(fd):
    results = []
    for index, field in enumerate(("uid", "gid")):
        st = os.fstat(fd)
        other = _other_id((st.st_uid, st.st_gid)[index])
        ids = [-1, -1]
        ids[index] = other
        try:
            os.fchown(fd, ids[0], ids[1])
        except OSError as exc:
            results.append(_no("fchown to %s %d: %s" % (field, other, _describe(exc))))
            continue
        got = (os.fstat(fd).st_uid, os.fstat(fd).st_gid)[index]
        if got != other:
            results.append(_no("fchown to %s %d kept %d" % (field, other, got)))
        else:
            results.append(_yes("fchown to another %s works" % field))
    return results[0], results[1]


def _probe_times(fd):
    try:
        os.utime(fd, ns=_PROBE_TIMES_NS)
    except OSError as exc:
        reason = "utime: %s" % _describe(exc)
        return _no(reason), _no(reason)
    st = os.fstat(fd)
    results = []
    for wanted, got in zip(_PROBE_TIMES_NS, (st.st_atime_ns, st.st_mtime_ns)):
        if got == wanted:
            results.append(_yes("nanosecond timestamps are stored"))
        else:
            results.append(_no("utime %d ns stored as %d ns (coarser timestamp granularity)" % (wanted, got)))
    return results[0], results[1]


def _probe_acl():
    """A valid system.posix_acl_access value with one named-user entry (this uid, always mapped)."""
    entries = (
        (_ACL_USER_OBJ, 6, _ACL_UNDEFINED_ID),
        (_ACL_USER, 4, os.geteuid()),
        (_ACL_GROUP_OBJ, 4, _ACL_UNDEFINED_ID),
        (_ACL_MASK, 4, _ACL_UNDEFINED_ID),
        (_ACL_OTHER, 0, _ACL_UNDEFINED_ID),
    )
    return struct.pack("<I", _ACL_XATTR_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _probe_xattrs(fd, xb):
    try:
        label = xb.get(fd, "security.selinux")
    except OSError:
        label = None
    attempts = (
        ("xattrs.user", "user.switchyard_probe", b"1"),
        ("xattrs.trusted", "trusted.switchyard_probe", b"1"),
        ("xattrs.security.capability", "security.capability", _PROBE_CAPABILITY),
        # The label the kernel gave the file is valid under any loaded policy; without an
        # LSM the attribute is stored as plain bytes.
        ("xattrs.security.selinux", "security.selinux", label or b"system_u:object_r:bin_t:s0"),
        ("xattrs.system.posix_acl_access", "system.posix_acl_access", _probe_acl()),
    )
    results = {}
    for key, name, value in attempts:
        try:
            xb.set(fd, name, value)
        except OSError as exc:
            results[key] = _no("setting %s: %s" % (name, _describe(exc)))
        else:
            results[key] = _yes("%s can be set (%s backend)" % (name, xb.name))
    return results
