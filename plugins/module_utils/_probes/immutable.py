# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Immutable/append-only inode flag probe (FS_IOC_GETFLAGS, then lsattr). Private to this collection."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import errno
import fcntl
import os
import platform
import re
import shutil
import stat
import struct
import subprocess

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults

FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20

LSATTR_TIMEOUT = 10

# errnos meaning "this filesystem or kernel does not answer FS_IOC_GETFLAGS"; anything else
# is a real failure on this inode and lsattr (the same ioctl) would not do better.
_UNSUPPORTED_ERRNOS = frozenset((errno.ENOTTY, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS))

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC

# lsattr prints one letter per flag, '-' when clear; 'i' (immutable, column 5) and 'a'
# (append only, column 6) each occur once in its alphabet, so looking for the letters is
# right whichever columns a given e2fsprogs version prints.
_LSATTR_FLAGS_RE = re.compile(r"^[-A-Za-z]+$")


def _ior(type_char, nr, size):
    """The kernel's _IOR() for this architecture."""
    machine = platform.machine().lower()
    if machine.startswith(("ppc", "powerpc", "mips", "sparc", "alpha")):
        # These use 3 direction bits at 29 and 13 size bits, with _IOC_READ == 2.
        return (2 << 29) | ((size & 0x1FFF) << 16) | (ord(type_char) << 8) | nr
    # asm-generic (x86, x86_64, arm, aarch64, riscv, s390, ...): 2 direction bits at 30.
    return (2 << 30) | ((size & 0x3FFF) << 16) | (ord(type_char) << 8) | nr


# FS_IOC_GETFLAGS is _IOR('f', 1, long): 0x80086601 on x86_64 and aarch64. The kernel only
# ever copies an int through the pointer (ioctl_getflags: put_user(flags, (int __user *)arg));
# "long" in the macro is a historical mistake frozen into the request number. So the number
# encodes sizeof(long) while the buffer must be a 4-byte int -- an 8-byte buffer would read
# the wrong half on big-endian machines.
FS_IOC_GETFLAGS = _ior("f", 1, struct.calcsize("l"))


def _result(method, immutable, append_only, reliable, detail):
    return {
        "method": method,
        "immutable": immutable,
        "append_only": append_only,
        "reliable": reliable,
        "detail": detail,
    }


def _unknown(detail):
    return _result("unknown", None, None, False, detail)


def _not_applicable(detail):
    return _result("not_applicable", False, False, True, detail)


def _errno_name(err):
    return errno.errorcode.get(err, str(err))


def _check_name(name):
    name = os.fsdecode(name)
    if not name or "/" in name or name in (".", ".."):
        raise ValueError("name must be a single directory entry, got %r" % (name,))
    return name


def _ioctl_flags(fd):
    """Inode flags of an open fd; raises OSError."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
    return buf[0]


def _from_flags(method, flags, detail):
    return _result(method, bool(flags & FS_IMMUTABLE_FL), bool(flags & FS_APPEND_FL), True, detail)


def parse_lsattr_line(text):
    """(immutable, append_only) from `lsattr -d` output, or None if it is not recognisable."""
    fields = text.split(None, 1)
    if not fields:
        return None
    flags = fields[0]
    if not _LSATTR_FLAGS_RE.match(flags):
        return None
    return ("i" in flags, "a" in flags)


def _lsattr(dirfd, proc_path, why_fallback):
    """Run lsattr on a /proc/self/fd/N/... path so the child sees the same directory."""
    exe = shutil.which("lsattr", path=os.environ.get("PATH", os.defpath))
    if exe is None:
        return _unknown("%s; lsattr not found on PATH" % why_fallback)
    env = dict(os.environ, LC_ALL="C")
    try:
        proc = subprocess.run(
            [exe, "-d", "--", proc_path],
            pass_fds=(dirfd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            timeout=LSATTR_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return _unknown("%s; lsattr could not run: %s" % (why_fallback, exc))
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        return _unknown("%s; lsattr exited %d: %s" % (why_fallback, proc.returncode, stderr))
    parsed = parse_lsattr_line(proc.stdout.decode("utf-8", "replace"))
    if parsed is None:
        return _unknown("%s; lsattr output not understood: %r" % (why_fallback, proc.stdout[:200]))
    return _result("lsattr", parsed[0], parsed[1], True, "%s; read by %s" % (why_fallback, exe))


def _probe(dirfd, open_name, proc_path, expected):
    """ioctl on a fresh fd for `open_name` (relative to dirfd), else lsattr on `proc_path`."""
    try:
        fd = os.open(open_name, _OPEN_FLAGS, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return _not_applicable("absent")
        if exc.errno == errno.ELOOP:
            return _not_applicable("symlink: inode flags cannot be set on a symlink (chattr follows it)")
        return _unknown("open failed: %s" % exc)
    try:
        st = os.fstat(fd)
        if expected is not None and (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
            return _unknown("entry changed while being probed")
        if faults.ioctl_disabled():
            why = "FS_IOC_GETFLAGS disabled by %s=1" % faults.DISABLE_IOCTL_ENV
        else:
            try:
                flags = _ioctl_flags(fd)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED_ERRNOS:
                    return _unknown("FS_IOC_GETFLAGS failed: %s" % exc)
                why = "FS_IOC_GETFLAGS unsupported (%s)" % _errno_name(exc.errno)
            else:
                return _from_flags("ioctl", flags, "FS_IOC_GETFLAGS")
    finally:
        os.close(fd)
    return _lsattr(dirfd, proc_path, why)


def detect_flags(dirfd, name):
    """Immutable/append-only flags of the entry `name` in the directory handle `dirfd` (never follows a final symlink).

    Returns {"method": "ioctl"|"lsattr"|"unknown"|"not_applicable", "immutable": bool|None,
    "append_only": bool|None, "reliable": bool, "detail": str}.
    """
    name = _check_name(name)
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return _not_applicable("absent")
        return _unknown("lstat failed: %s" % exc)
    if stat.S_ISLNK(st.st_mode):
        return _not_applicable("symlink: inode flags cannot be set on a symlink (chattr follows it)")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        # Opening a device or FIFO can have side effects (tape rewind, waking a writer), and
        # lsattr refuses anything but files and directories.
        return _unknown("special file (mode %o): not opened to read flags" % stat.S_IFMT(st.st_mode))
    return _probe(dirfd, name, "/proc/self/fd/%d/%s" % (dirfd, name), st)


def detect_dir_flags(dirfd):
    """The same as detect_flags for the directory `dirfd` itself (a +i directory blocks the temp link and the rename)."""
    # "." reopens the directory itself, so an O_PATH dirfd works too. lsattr needs the
    # trailing "/.": on the bare /proc/self/fd/N magic link it lstat()s a symlink and refuses.
    return _probe(dirfd, ".", "/proc/self/fd/%d/." % dirfd, None)
