# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Capability probe: which preservation fields this process can keep here, asked of the kernel on a probe file. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import os
import stat
import struct

from ansible_collections.switchyard.fs.plugins.module_utils._fs.preservation import describe_oserror, fields_of_tier
from ansible_collections.switchyard.fs.plugins.module_utils._fs.xattr import get_backend

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


def probe_capabilities(dirfd, tier, backend=None):
    """Can this process on this filesystem preserve each field of ``tier``? Ask the kernel.

    Creates a uniquely named probe file in ``dirfd``, exercises each field on it and removes
    it (also on error). Returns ``{key: {"supported": bool, "reason": str}}`` with a key per
    field of the tier; the full tier adds one key per xattr namespace (XATTR_PROBE_KEYS),
    and "xattrs" is supported only when all of them are.
    """
    fields = fields_of_tier(tier)
    xb = get_backend(backend) if "xattrs" in fields else None
    name = "%s%d.%s" % (_PROBE_NAME_PREFIX, os.getpid(), binascii.hexlify(os.urandom(8)).decode("ascii"))
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dirfd)
    except OSError as exc:
        reason = "cannot create a probe file: %s" % describe_oserror(exc)
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
        return _no("fchmod: %s" % describe_oserror(exc))
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
            results.append(_no("fchown to %s %d: %s" % (field, other, describe_oserror(exc))))
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
        reason = "utime: %s" % describe_oserror(exc)
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
            results[key] = _no("setting %s: %s" % (name, describe_oserror(exc)))
        else:
            results[key] = _yes("%s can be set (%s backend)" % (name, xb.name))
    return results
