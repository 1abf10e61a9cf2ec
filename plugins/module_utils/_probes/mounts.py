# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mount probe: read-only/noexec status (statvfs, then /proc/self/mounts), mount identity, extra_mount_checks paths. Private to this collection."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import components, follow_beneath, open_dir_beneath

MOUNTS_PATH = "/proc/self/mounts"

# os.ST_NOEXEC exists on Linux; the literal is <linux/statfs.h> ST_NOEXEC for other builds.
ST_RDONLY = getattr(os, "ST_RDONLY", 1)
ST_NOEXEC = getattr(os, "ST_NOEXEC", 8)

_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")
_DELETED_SUFFIX = " (deleted)"
_PATH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC


def _unescape(field):
    """Undo the kernel's octal escaping of space, tab, newline and backslash (bytes -> str)."""
    return os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes((int(m.group(1), 8),)), field))


def parse_mounts(data):
    """[{"mountpoint", "fstype", "options"}] from /proc/self/mounts text, in file order."""
    if isinstance(data, str):
        data = os.fsencode(data)
    entries = []
    for line in data.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        entries.append({
            "mountpoint": _unescape(fields[1]),
            "fstype": _unescape(fields[2]),
            "options": _unescape(fields[3]).split(","),
        })
    return entries


def find_mount(path, entries):
    """The entry mounted at the longest mount point containing absolute `path`, or None.

    A later entry for the same mount point wins: it is mounted over the earlier one.
    """
    best = None
    for entry in entries:
        mp = entry["mountpoint"]
        if not (mp == "/" or path == mp or path.startswith(mp.rstrip("/") + "/")):
            continue
        if best is None or len(mp) >= len(best["mountpoint"]):
            best = entry
    return best


_RUN_TABLE = []  # the mount table pinned for the current module run (see pin_mount_table)


def pin_mount_table():
    """Read /proc/self/mounts once for a whole run: every later read_mounts() without a path reuses it.
    rw/exec answers come from statvfs of the very inode anyway; the table only adds mount point and fstype."""
    _RUN_TABLE[:] = [read_mounts()]


def unpin_mount_table():
    del _RUN_TABLE[:]


def read_mounts(mounts_path=None):
    if mounts_path is None and _RUN_TABLE:
        return _RUN_TABLE[0]
    with open(mounts_path or MOUNTS_PATH, "rb") as handle:
        return parse_mounts(handle.read())


def _path_of(fd_or_path):
    """Absolute path to match against mount points, or None."""
    if isinstance(fd_or_path, int):
        try:
            path = os.readlink("/proc/self/fd/%d" % fd_or_path)
        except OSError:
            return None
        if path.endswith(_DELETED_SUFFIX):
            path = path[: -len(_DELETED_SUFFIX)]
        # Pipes, sockets and anonymous inodes read back as "pipe:[123]" and the like.
        return path if path.startswith("/") else None
    return os.path.realpath(os.fsdecode(fd_or_path))


def _statvfs_and_dev(fd_or_path):
    if isinstance(fd_or_path, int):
        return os.fstatvfs(fd_or_path), os.fstat(fd_or_path).st_dev
    return os.statvfs(fd_or_path), os.stat(fd_or_path).st_dev


def mount_status(fd_or_path, mounts_path=None):
    """{"path": str|None, "mountpoint": str|None, "fstype": str|None, "rw": bool|None, "exec": bool|None,
    "method": "statvfs"|"mounts"|"unknown", "known": bool, "dev": int|None}

    statvfs answers rw/exec for the very inode; the mount table adds mount point and fstype,
    and answers rw/exec only when statvfs fails. A path follows symlinks like the kernel does.
    """
    status = {
        "path": _path_of(fd_or_path),
        "mountpoint": None,
        "fstype": None,
        "rw": None,
        "exec": None,
        "method": "unknown",
        "known": False,
        "dev": None,
    }
    try:
        vfs, status["dev"] = _statvfs_and_dev(fd_or_path)
    except OSError:
        pass
    else:
        status["rw"] = not vfs.f_flag & ST_RDONLY
        status["exec"] = not vfs.f_flag & ST_NOEXEC
        status["method"] = "statvfs"

    entry = None
    if status["path"] is not None:
        try:
            entry = find_mount(status["path"], read_mounts(mounts_path))
        except (OSError, ValueError):
            entry = None
    if entry is not None:
        status["mountpoint"] = entry["mountpoint"]
        status["fstype"] = entry["fstype"]
        if status["method"] == "unknown":
            # /proc/self/mounts prints "ro" when either the mount or the superblock is ro.
            status["rw"] = "ro" not in entry["options"]
            status["exec"] = "noexec" not in entry["options"]
            status["method"] = "mounts"

    status["known"] = status["rw"] is not None and status["exec"] is not None
    return status


def mount_id(fd):
    """The kernel's mount id of an open fd (from /proc/self/fdinfo), or None if unavailable."""
    try:
        with open("/proc/self/fdinfo/%d" % fd, "rb") as handle:
            for line in handle:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def same_mount(fd_a, fd_b):
    """True/False when both fds are on the same mount (rename between them can work); None if unknown."""
    a, b = mount_id(fd_a), mount_id(fd_b)
    if a is None or b is None:
        return None
    return a == b


def probe_extra_mounts(root_fd, paths):
    """[{path, present, mount status}] for policy.extra_mount_checks, each resolved inside root."""
    out = []
    for rel in paths:
        entry = {"path": rel, "present": False, "status": None, "detail": None}
        try:
            fd = _open_path_beneath(root_fd, rel)
        except (PolicyError, OSError) as e:
            entry["detail"] = getattr(e, "msg", None) or str(e)
            out.append(entry)
            continue
        if fd is None:
            entry["detail"] = "not present inside root"
        else:
            try:
                entry["present"] = True
                entry["status"] = mount_status(fd)
            finally:
                os.close(fd)
        out.append(entry)
    return out


def _open_path_beneath(root_fd, rel):
    """An fd on in-root `rel` (symlinks followed inside root, by the one walk), or None when it does not exist.

    A directory (also one named by a symlink to "/", "." or "..") is opened by open_dir_beneath; anything else
    is the final entry of follow_beneath, opened with O_PATH and never followed."""
    option = "policy.extra_mount_checks"
    try:
        return open_dir_beneath(root_fd, components(rel), option, rel)[0]
    except (PolicyError, OSError):
        pass  # not a directory, absent, or unreadable: follow_beneath says which, or finds the entry
    dfd, _drel, name = follow_beneath(root_fd, rel, option)
    try:
        if fs.lstat_at(dfd, name) is None:
            return None
        return os.open(name, _PATH_FLAGS, dir_fd=dfd)
    finally:
        os.close(dfd)
