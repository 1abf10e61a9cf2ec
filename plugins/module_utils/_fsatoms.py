# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Low-level filesystem atoms on directory handles (*at calls only). Private to this collection."""

from __future__ import absolute_import, division, print_function

import binascii
import errno
import fcntl
import hashlib
import os
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
HASH_ALG = "sha256"
_CHUNK = 1 << 20

# Every temp name the engine creates contains this marker, so recovery can find leftovers.
TEMP_MARKER = ".swy-tmp."


class FsyncFailed(OSError):
    """An fsync that policy requires did not succeed."""


class Durability(object):
    """Applies require_backup_durability to every fsync and remembers whether all succeeded."""

    def __init__(self, required=True):
        self.required = required
        self.durable = True
        self.failures = []
        # Test-only fault injection: SWITCHYARD_TEST_FAIL_FSYNC=<n> makes the n-th fsync fail (1-based).
        fail_at = os.environ.get("SWITCHYARD_TEST_FAIL_FSYNC")
        self._fail_at = int(fail_at) if fail_at and fail_at.isdigit() else None
        self._count = 0

    def fsync(self, fd, what):
        self._count += 1
        fault_point("before_fsync")
        try:
            if self._fail_at is not None and self._count == self._fail_at:
                raise OSError(errno.EIO, "injected fsync failure (SWITCHYARD_TEST_FAIL_FSYNC)")
            os.fsync(fd)
        except OSError as e:
            self.durable = False
            self.failures.append("%s: %s" % (what, e.strerror or e))
            if self.required:
                raise FsyncFailed(e.errno or errno.EIO, "fsync of %s failed: %s" % (what, e.strerror or e))


def fault_point(name):
    """Test-only crash points: SWITCHYARD_TEST_KILL_AT=<name>[:<n>] SIGKILLs this process the n-th time
    `name` is reached.  Inert unless that variable is set (it never is outside the test suite)."""
    spec = os.environ.get("SWITCHYARD_TEST_KILL_AT")
    if not spec:
        return
    want, _sep, nth = spec.partition(":")
    if want != name:
        return
    count = _FAULT_COUNTS.get(name, 0) + 1
    _FAULT_COUNTS[name] = count
    if count >= (int(nth) if nth else 1):
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNTS = {}


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


def copy_fd(src_fd, dst_fd):
    """Copy all bytes; copy_file_range where available, read/write otherwise."""
    os.lseek(src_fd, 0, os.SEEK_SET)
    cfr = getattr(os, "copy_file_range", None)
    if cfr is not None:
        try:
            while cfr(src_fd, dst_fd, _CHUNK * 8):
                pass
            return
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.lseek(src_fd, 0, os.SEEK_SET)
            os.lseek(dst_fd, 0, os.SEEK_SET)
            os.ftruncate(dst_fd, 0)
    while True:
        chunk = os.read(src_fd, _CHUNK)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            n = os.write(dst_fd, view)
            view = view[n:]


def create_exclusive_at(dirfd, name, mode=0o600):
    """A new file, flocked while this fd is open: remove_dead_temps tells a live writer from a dead one."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dirfd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # a sweeper got it first (and unlinked it): the later rename fails cleanly with ENOENT
    return fd


def remove_dead_temps(dirfd, name):
    """Remove regular-file temps of `name` ('.<name>.swy-tmp.*') whose writer died (flock free).
    Symlink temps cannot be locked and live for one syscall; journaled runs remove theirs on recovery."""
    prefix = ".%s%s" % (name, TEMP_MARKER)
    removed = 0
    for entry in os.listdir(dirfd):
        if not entry.startswith(prefix):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dirfd)
        except OSError:
            continue  # a symlink (ELOOP), or already gone
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its writer is alive
            unlink_at(dirfd, entry)
            removed += 1
        finally:
            os.close(fd)
    return removed


def rename_at(src_dirfd, src, dst_dirfd, dst):
    os.rename(src, dst, src_dir_fd=src_dirfd, dst_dir_fd=dst_dirfd)


def unlink_at(dirfd, name, missing_ok=True):
    try:
        os.unlink(name, dir_fd=dirfd)
    except OSError as e:
        if not (missing_ok and e.errno == errno.ENOENT):
            raise
        return
    fault_point("after_unlink")


def hardlink_at(src_dirfd, src, dst_dirfd, dst):
    """linkat without following: links the entry itself (a symlink stays a symlink)."""
    os.link(src, dst, src_dir_fd=src_dirfd, dst_dir_fd=dst_dirfd, follow_symlinks=False)


def symlink_replace_at(dirfd, name, link_text, run_id, durability):
    """symlinkat under a temp name, renameat over `name`, fsync the directory.

    Never unlink first: at every instant `name` is either the old entry or the new link."""
    tmp = temp_name(name, run_id)
    os.symlink(link_text, tmp, dir_fd=dirfd)
    try:
        fault_point("before_rename")
        rename_at(dirfd, tmp, dirfd, name)
    except BaseException:
        unlink_at(dirfd, tmp)
        raise
    fault_point("after_rename")
    durability.fsync(dirfd, "directory of %s" % name)


def write_file_replace_at(dirfd, name, data, run_id, durability, mode=0o644):
    """Write bytes to a temp name, fsync, renameat over `name`, fsync the directory."""
    tmp = temp_name(name, run_id)
    fd = create_exclusive_at(dirfd, tmp, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            durability.fsync(fd, name)
        finally:
            os.close(fd)
        rename_at(dirfd, tmp, dirfd, name)
    except BaseException:
        unlink_at(dirfd, tmp)
        raise
    durability.fsync(dirfd, "directory of %s" % name)


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


def makedirs_at(dirfd, rel_parts, mode=0o755, durability=None):
    """Open (creating as needed) a chain of directories under dirfd, never following symlinks.
    Returns a new fd for the last one; the caller closes it.  With `durability`, the parent of
    every directory created is fsynced, so a journal or backup inside it survives power loss."""
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
                        durability.fsync(fd, "directory holding new directory %s" % part)
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
