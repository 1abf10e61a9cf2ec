# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Entry operations on directory handles (*at calls only): lstat, open, readlink, hash, copy, temps. Private to this collection."""

from __future__ import absolute_import, division, print_function

import binascii
import ctypes
import errno
import fcntl
import hashlib
import os
import stat

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
HASH_ALG = "sha256"
_CHUNK = 1 << 20

# Every temp name the engine creates contains this marker, so recovery can find leftovers.
TEMP_MARKER = ".swy-tmp."


class EntryChanged(OSError):
    """The entry at a target was not the one backed up when it was swapped out."""


def lstat_at(dirfd, name):
    """lstat of an entry, or None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def kind_of(st):
    if st is None:
        return "absent"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    return "other"


def readlink_at(dirfd, name):
    return os.readlink(name, dir_fd=dirfd)


def open_dir_at(dirfd, name):
    return os.open(name, DIR_FLAGS, dir_fd=dirfd)


def open_file_at(dirfd, name):
    """Open for reading without following a final symlink and, where permitted, without touching atime:
    hashing a target must not change the atime that the extended tier records."""
    noatime = getattr(os, "O_NOATIME", 0)
    if noatime:
        try:
            return os.open(name, READ_FLAGS | noatime, dir_fd=dirfd)
        except OSError as e:
            if e.errno != errno.EPERM:  # O_NOATIME needs ownership or CAP_FOWNER
                raise
    return os.open(name, READ_FLAGS, dir_fd=dirfd)


def sha256_fd(fd):
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            break
        h.update(chunk)
    return h.hexdigest()


def sha256_at(dirfd, name):
    fd = open_file_at(dirfd, name)
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)


def temp_name(name, run_id):
    rand = binascii.hexlify(os.urandom(4)).decode("ascii")
    return ".%s%s%s.%s" % (name, TEMP_MARKER, run_id[:8], rand)


def remove_dead_temps(dirfd, name=None, entries=None, run_id=None, dry_run=False):
    """Remove the temps (temp_name) left in dirfd by writers that are gone; returns the names removed
    (with dry_run: the names that would be).

    name: only the temps of that name ('.<name>.swy-tmp.*'), else every temp in the directory.
    run_id None: a temp is removed only when it is a regular file whose flock is free (its writer died:
    create_exclusive_at flocks while writing); symlink temps cannot be locked and stay (they live for one
    syscall, and a journaled run removes its own on recovery).  A temp the directory will not let go of
    (read-only, immutable) stays too: sweeping is housekeeping, the caller's own write reports the problem.
    run_id given: the run is known to be over (its journal claimed, or this run cleaning up after itself):
    every temp of that run is removed, of any kind, and an unlink that fails raises.
    entries: the directory's entries listed earlier in this run (DurableBatch.temps_in), else listed now."""
    marker = TEMP_MARKER if run_id is None else "%s%s." % (TEMP_MARKER, run_id[:8])
    prefix = "" if name is None else "." + name + marker
    found = []
    for entry in (os.listdir(dirfd) if entries is None else entries):
        if not entry.startswith(prefix) or marker not in entry:
            continue
        held = None
        if run_id is None:
            held = _lock_if_writer_dead(dirfd, entry)
            if held is None:
                continue
        try:
            if not dry_run:
                try:
                    unlink_at(dirfd, entry)
                except OSError:
                    if held is None:
                        raise
                    continue  # e.g. a read-only filesystem: the temp is harmless where it is
            found.append(entry)
        finally:
            if held is not None:
                os.close(held)
    return found


def _lock_if_writer_dead(dirfd, entry):
    """An fd holding the flock of the regular file `entry` when its writer is gone (lock free), else None."""
    try:
        fd = os.open(entry, READ_FLAGS, dir_fd=dirfd)
    except OSError:
        return None  # a symlink (ELOOP), or already gone
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
    except OSError:
        pass  # its writer is alive
    os.close(fd)
    return None


def _data_extents(fd, size):
    """(offset, length) of the data regions of fd (SEEK_DATA/SEEK_HOLE), or one extent where unsupported."""
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or size == 0:
        return [(0, size)]
    extents, pos = [], 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, seek_data)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            end = min(os.lseek(fd, start, seek_hole), size)
            extents.append((start, end - start))
            pos = end
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            raise
        return [(0, size)]
    return extents


def copy_hashed(src_fd, dst_fd):
    """Copy src to dst from one open fd, hashing exactly the bytes copied; holes stay holes.
    Returns (sha256 of the source bytes, size).  A source that changes size while copied raises EntryChanged."""
    size = os.fstat(src_fd).st_size
    h = hashlib.sha256()
    zero = b"\0" * _CHUNK
    pos = 0
    for start, length in _data_extents(src_fd, size):
        gap = start - pos
        while gap > 0:  # a hole: hash its zeros, write nothing
            n = min(gap, _CHUNK)
            h.update(zero[:n])
            gap -= n
        end = start + length
        off = start
        while off < end:
            chunk = os.pread(src_fd, min(_CHUNK, end - off), off)
            if not chunk:
                raise EntryChanged(errno.EAGAIN, "file shrank while it was copied")
            h.update(chunk)
            view = memoryview(chunk)
            woff = off
            while view:
                n = os.pwrite(dst_fd, view, woff)
                view = view[n:]
                woff += n
            off += len(chunk)
        pos = end
    gap = size - pos
    while gap > 0:
        n = min(gap, _CHUNK)
        h.update(zero[:n])
        gap -= n
    os.ftruncate(dst_fd, size)
    if os.fstat(src_fd).st_size != size:
        raise EntryChanged(errno.EAGAIN, "file changed size while it was copied")
    return h.hexdigest(), size


def create_exclusive_at(dirfd, name, mode=0o600):
    """A new file, flocked while this fd is open: remove_dead_temps tells a live writer from a dead one."""
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dirfd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # a sweeper got it first (and unlinked it): the later rename fails cleanly with ENOENT
    return fd


def rename_at(src_dirfd, src, dst_dirfd, dst):
    os.rename(src, dst, src_dir_fd=src_dirfd, dst_dir_fd=dst_dirfd)


def unlink_at(dirfd, name, missing_ok=True):
    try:
        os.unlink(name, dir_fd=dirfd)
    except OSError as e:
        if not (missing_ok and e.errno == errno.ENOENT):
            raise
        return
    faults.kill_point("after_unlink")


AT_EMPTY_PATH = 0x1000
_LIBC = []


def libc():
    """The C library (ctypes, errno kept), or None where it cannot be loaded."""
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def link_fd_at(fd, dst_dirfd, dst):
    """Give the open file `fd` the name `dst`: the inode that was checked and hashed, whatever the name it was
    opened by points at now.  linkat(AT_EMPTY_PATH) where permitted, /proc/self/fd otherwise."""
    lc = libc()
    if lc is not None:
        rc = lc.linkat(ctypes.c_int(fd), b"", ctypes.c_int(dst_dirfd), os.fsencode(dst), ctypes.c_int(AT_EMPTY_PATH))
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOENT, errno.EPERM, errno.EINVAL, errno.ENOSYS):
            raise OSError(err, "linkat(fd %d -> %s): %s" % (fd, dst, os.strerror(err)))
    os.link("/proc/self/fd/%d" % fd, dst, dst_dir_fd=dst_dirfd, follow_symlinks=True)


def read_small_at(dirfd, name, limit=16 << 20):
    fd = open_file_at(dirfd, name)
    try:
        parts = []
        total = 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise ValueError("%s is larger than %d bytes" % (name, limit))
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def open_or_create_at(dirfd, name, flags, mode):
    """(fd, created) for a file `name` in dirfd: created exclusively when absent, else the existing entry opened.

    Never follows a final symlink (ELOOP) and never blocks on a FIFO (O_NONBLOCK); the caller checks what it got
    with regular_file_problem(os.fstat(fd))."""
    base = flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    for _attempt in range(8):
        try:
            return os.open(name, base | os.O_CREAT | os.O_EXCL, mode, dir_fd=dirfd), True
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        try:
            return os.open(name, base, dir_fd=dirfd), False
        except OSError as e:
            if e.errno != errno.ENOENT:  # removed between the two opens: create it again
                raise
    raise OSError(errno.EAGAIN, "%s keeps appearing and disappearing" % name)


def regular_file_problem(st):
    """Why an opened side file (lock, audit log) must not be used, or None: it must be a regular file, owned
    by this process's user, with one link (a hard link would let writes reach another file)."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (%s)" % kind_of(st)
    if st.st_uid != os.geteuid():
        return "is owned by uid %d, not by uid %d that runs this module" % (st.st_uid, os.geteuid())
    if st.st_nlink != 1:
        return "has %d hard links (it may be another file's name)" % st.st_nlink
    return None


def makedirs_at(dirfd, rel_parts, mode=0o755, durability=None):
    """Open (creating as needed) a chain of directories under dirfd, never following symlinks.
    Returns a new fd for the last one; the caller closes it.  With `durability`, every directory created is
    made durable (Durability.new_directory: by the next sync, before anything written inside it), so a journal
    or backup inside it survives power loss."""
    fd = os.dup(dirfd)
    try:
        for part in rel_parts:
            try:
                nfd = open_dir_at(fd, part)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except OSError as e2:
                    if e2.errno != errno.EEXIST:
                        raise
                nfd = open_dir_at(fd, part)
                if durability is not None:
                    try:
                        durability.new_directory(fd, part)
                    except BaseException:
                        os.close(nfd)
                        raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_dirs_at(dirfd, rel_parts):
    """Open an existing chain of directories under dirfd without following symlinks (ENOENT if missing)."""
    fd = os.dup(dirfd)
    try:
        for part in rel_parts:
            nfd = open_dir_at(fd, part)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise
