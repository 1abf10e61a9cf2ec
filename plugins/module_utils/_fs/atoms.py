# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Low-level filesystem atoms on directory handles (*at calls only). Private to this collection."""

from __future__ import absolute_import, division, print_function

import binascii
import ctypes
import errno
import fcntl
import hashlib
import os
import platform
import stat
import time

from ansible_collections.switchyard.fs.plugins.module_utils import _faults as faults

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
HASH_ALG = "sha256"
_CHUNK = 1 << 20

# Every temp name the engine creates contains this marker, so recovery can find leftovers.
TEMP_MARKER = ".swy-tmp."


class FsyncFailed(OSError):
    """An fsync that policy requires did not succeed."""


class Durability(object):
    """Applies require_backup_durability to every fsync: required, a failed fsync raises FsyncFailed;
    not required, fsyncs are skipped altogether (the rollout knob of the seed) and nothing is durable."""

    def __init__(self, required=True):
        self.required = required
        self.durable = bool(required)
        self.failures = []
        self._fail_at = faults.fsync_failure_at()
        self._count = 0

    def fsync(self, fd, what):
        self._sync(os.fsync, fd, what)

    def syncfs(self, fd, what):
        """Make everything written to the filesystem holding fd durable at once (group commit)."""
        self._sync(_syncfs, fd, what)

    def _sync(self, call, fd, what):
        if not self.required:
            return
        self._count += 1
        faults.kill_point("before_fsync")
        try:
            if self._fail_at is not None and self._count == self._fail_at:
                raise OSError(errno.EIO, "injected fsync failure (%s)" % faults.FAIL_FSYNC_ENV)
            call(fd)
        except OSError as e:
            self.durable = False
            self.failures.append("%s: %s" % (what, e.strerror or e))
            raise FsyncFailed(e.errno or errno.EIO, "fsync of %s failed: %s" % (what, e.strerror or e))


def _syncfs(fd):
    libc = _libc()
    fn = getattr(libc, "syncfs", None) if libc is not None else None
    if fn is None:
        os.sync()  # no syncfs(2) wrapper: sync everything (cannot report errors, but never skips data)
        return
    if fn(ctypes.c_int(fd)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class DurableBatch(object):
    """Group commit: files written and directories changed by many actions are made durable together,
    one syncfs per filesystem and one fsync per directory, instead of three fsyncs per action."""

    def __init__(self, durability):
        self.durability = durability
        self._dirs = {}         # (st_dev, st_ino) -> own fd on the directory
        self._filesystems = {}  # st_dev -> (st_dev, st_ino) of a directory on it, for syncfs
        self._temps = {}        # (st_dev, st_ino) -> temp-looking entries of that directory, listed once per plan

    def temps_in(self, dir_fd):
        """The entries of this directory that look like temps ('*.swy-tmp.*'), listed once per batch: a plan with
        many targets in one directory sweeps dead temps without reading the directory once per target."""
        st = os.fstat(dir_fd)
        key = (st.st_dev, st.st_ino)
        if key not in self._temps:
            self._temps[key] = [e for e in os.listdir(dir_fd) if TEMP_MARKER in e]
        return self._temps[key]

    def wrote_in(self, dir_fd):
        """A file's data was written in this directory (and the directory changed)."""
        key = self.changed(dir_fd)
        self._filesystems.setdefault(key[0], key)

    def changed(self, dir_fd):
        """An entry of this directory was created, renamed or removed."""
        st = os.fstat(dir_fd)
        key = (st.st_dev, st.st_ino)
        if key not in self._dirs:
            self._dirs[key] = os.dup(dir_fd)
        return key

    def flush(self, what):
        """syncfs each filesystem written to, then fsync each changed directory once; then start empty."""
        try:
            for key in self._filesystems.values():
                self.durability.syncfs(self._dirs[key], "%s (filesystem)" % what)
            for fd in self._dirs.values():
                self.durability.fsync(fd, "%s (directory)" % what)
        finally:
            self.close()

    def close(self):
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs, self._filesystems = {}, {}


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


def remove_dead_temps(dirfd, name, entries=None):
    """Remove regular-file temps of `name` ('.<name>.swy-tmp.*') whose writer died (flock free).
    Symlink temps cannot be locked and live for one syscall; journaled runs remove theirs on recovery.
    entries: the directory's entries listed earlier in this run (DurableBatch.temps_in), else it is listed now."""
    prefix = ".%s%s" % (name, TEMP_MARKER)
    removed = 0
    for entry in (os.listdir(dirfd) if entries is None else entries):
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
    faults.kill_point("after_unlink")


def hardlink_at(src_dirfd, src, dst_dirfd, dst):
    """linkat without following: links the entry itself (a symlink stays a symlink)."""
    os.link(src, dst, src_dir_fd=src_dirfd, dst_dir_fd=dst_dirfd, follow_symlinks=False)


AT_EMPTY_PATH = 0x1000
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# renameat2(2) syscall numbers, for a libc that predates its wrapper (glibc < 2.28).
_RENAMEAT2_NR = {"x86_64": 316, "aarch64": 276, "ppc64le": 357, "ppc64": 357, "s390x": 347, "i686": 353,
                 "i386": 353, "armv7l": 382, "riscv64": 276, "loongarch64": 276}
_LIBC = []


def _libc():
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def renameat2(src_dirfd, src, dst_dirfd, dst, flags):
    """renameat2(2).  Raises OSError(EINVAL/ENOSYS/ENOTSUP) where the kernel or filesystem lacks `flags`."""
    libc = _libc()
    if libc is None:
        raise OSError(errno.ENOSYS, "renameat2: no libc")
    args = (ctypes.c_int(src_dirfd), os.fsencode(src), ctypes.c_int(dst_dirfd), os.fsencode(dst), ctypes.c_uint(flags))
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        rc = fn(*args)
    else:
        nr = _RENAMEAT2_NR.get(platform.machine())
        if nr is None:
            raise OSError(errno.ENOSYS, "renameat2: unknown syscall number on %s" % platform.machine())
        rc = libc.syscall(ctypes.c_long(nr), *args)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "renameat2(%s -> %s): %s" % (src, dst, os.strerror(err)))


# Errors that mean "this filesystem/kernel cannot do this renameat2 flag", never "the entry changed".
_NO_RENAMEAT2 = frozenset(e for e in (errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", None),
                                      getattr(errno, "EOPNOTSUPP", None)) if e is not None)


def link_fd_at(fd, dst_dirfd, dst):
    """Give the open file `fd` the name `dst`: the inode that was checked and hashed, whatever the name it was
    opened by points at now.  linkat(AT_EMPTY_PATH) where permitted, /proc/self/fd otherwise."""
    libc = _libc()
    if libc is not None:
        rc = libc.linkat(ctypes.c_int(fd), b"", ctypes.c_int(dst_dirfd), os.fsencode(dst), ctypes.c_int(AT_EMPTY_PATH))
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOENT, errno.EPERM, errno.EINVAL, errno.ENOSYS):
            raise OSError(err, "linkat(fd %d -> %s): %s" % (fd, dst, os.strerror(err)))
    os.link("/proc/self/fd/%d" % fd, dst, dst_dir_fd=dst_dirfd, follow_symlinks=True)


class SwapOutcome(object):
    """What came out of the target's place when a temp entry was renamed over it."""

    def __init__(self, method, displaced=None):
        self.method = method        # "exchange" | "noreplace" | "rename"
        self.displaced = displaced  # exchange: the temp name now holding the entry that was at the target


def _swap_into_place(src_dirfd, tmp, dirfd, name, expect):
    """Move the prepared entry `tmp` (in src_dirfd) to `name` (in dirfd) without a moment where `name` is missing.

    expect None: RENAME_NOREPLACE, so an entry that appeared meanwhile is never overwritten.
    Otherwise RENAME_EXCHANGE: the old entry comes out under `tmp` for the caller to check (and to swap
    back when it is not the one that was backed up).  Where the filesystem has neither, a last check of
    the entry and a plain rename (the window is one syscall; facts say which method ran)."""
    flags = RENAME_NOREPLACE if expect is None else RENAME_EXCHANGE
    try:
        renameat2(src_dirfd, tmp, dirfd, name, flags)
    except OSError as e:
        if e.errno not in _NO_RENAMEAT2:
            raise
        if not _same_entry_state(lstat_at(dirfd, name), expect):
            raise EntryChanged(errno.EAGAIN, "%s changed after it was inspected (a concurrent writer?); "
                                             "its new content was left in place" % name)
        rename_at(src_dirfd, tmp, dirfd, name)
        return SwapOutcome("rename")
    if expect is None:
        return SwapOutcome("noreplace")
    return SwapOutcome("exchange", tmp)


ANY_ENTRY = object()  # expect=ANY_ENTRY: replace whatever is there (plain rename)


def replace_checked(dirfd, tmp, name, expect=ANY_ENTRY, src_dirfd=None, expect_hash=None):
    """Rename the prepared entry `tmp` (in src_dirfd, default dirfd) over `name` (no instant without `name`)
    and return the SwapOutcome.

    `expect` is the lstat of the entry the caller inspected (and backed up), or None when `name` must be
    absent.  An exchange that brings out anything else (another inode, or the same one written since) is
    swapped back and raises EntryChanged, so what a package manager wrote meanwhile is never discarded.
    expect_hash: the sha256 the entry had; a regular file changed too recently for its timestamps to prove
    anything (recently_changed) is compared by its bytes too.  `tmp` is gone afterwards in every case."""
    src_dirfd = dirfd if src_dirfd is None else src_dirfd
    try:
        if expect is ANY_ENTRY:
            rename_at(src_dirfd, tmp, dirfd, name)
            outcome = SwapOutcome("rename")
        else:
            outcome = _swap_into_place(src_dirfd, tmp, dirfd, name, expect)
    except BaseException:
        unlink_at(src_dirfd, tmp)
        raise
    if outcome.displaced is not None:
        out = lstat_at(src_dirfd, outcome.displaced)
        same = _same_entry_state(out, expect)
        if same and expect_hash and stat.S_ISREG(out.st_mode) and recently_changed(out):
            same = sha256_at(src_dirfd, outcome.displaced) == expect_hash
        if not same:
            renameat2(src_dirfd, outcome.displaced, dirfd, name, RENAME_EXCHANGE)
            unlink_at(src_dirfd, outcome.displaced)
            raise EntryChanged(errno.EAGAIN, "%s changed after it was inspected (a concurrent writer?); "
                                             "its new content was left in place" % name)
        unlink_at(src_dirfd, outcome.displaced)
    return outcome


def remove_checked(dirfd, name, expect, run_id):
    """Remove `name` only if it is still the entry inspected (`expect`): it is first renamed to a temp name
    (RENAME_NOREPLACE), checked there, and put back when a concurrent writer had replaced it."""
    tmp = temp_name(name, run_id)
    try:
        renameat2(dirfd, name, dirfd, tmp, RENAME_NOREPLACE)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        if e.errno not in _NO_RENAMEAT2:
            raise
        rename_at(dirfd, name, dirfd, tmp)
    if not _same_entry_state(lstat_at(dirfd, tmp), expect):
        try:
            renameat2(dirfd, tmp, dirfd, name, RENAME_NOREPLACE)
        except OSError as e:
            if e.errno not in _NO_RENAMEAT2:
                raise  # the name was taken again meanwhile: the writer's entry stays under the temp name
            rename_at(dirfd, tmp, dirfd, name)
        raise EntryChanged(errno.EAGAIN, "%s changed after it was inspected (a concurrent writer?); "
                                         "its new content was left in place" % name)
    unlink_at(dirfd, tmp)


def symlink_replace_at(dirfd, name, link_text, run_id, durability, expect=ANY_ENTRY, batch=None, expect_hash=None):
    """symlinkat under a temp name, swap it into `name` (replace_checked), fsync the directory (or leave
    that to batch.flush())."""
    tmp = temp_name(name, run_id)
    os.symlink(link_text, tmp, dir_fd=dirfd)
    faults.kill_point("before_rename")
    outcome = replace_checked(dirfd, tmp, name, expect, expect_hash=expect_hash)
    faults.kill_point("after_rename")
    if batch is None:
        durability.fsync(dirfd, "directory of %s" % name)
    else:
        batch.changed(dirfd)
    return outcome


class EntryChanged(OSError):
    """The entry at a target was not the one backed up when it was swapped out."""


# File timestamps come from the kernel's coarse clock (one tick, up to 10 ms; more on some filesystems), so
# two writes within one tick leave the same mtime.  A stat comparison proves "unchanged" only for a file
# whose mtime is older than this when it is checked; a younger one is compared by its bytes.  (ctime cannot
# serve: linking and renaming, which the engine itself does, move it.)
TIMESTAMP_SLACK_NS = 100 * 1000 * 1000


def recently_changed(st, now_ns=None):
    """True when st's mtime is too close to now for a timestamp comparison to prove anything."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return st.st_mtime_ns > now_ns - TIMESTAMP_SLACK_NS


def _same_entry_state(st, expect):
    """Same inode and unwritten since it was inspected: a write in place moves mtime (or size).  ctime is
    not compared: the rename that brought the entry out moves it."""
    if st is None or expect is None:
        return st is None and expect is None
    return ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            == (expect.st_dev, expect.st_ino, expect.st_size, expect.st_mtime_ns))


def write_file_replace_at(dirfd, name, data, run_id, durability, mode=0o644, batch=None):
    """Write bytes to a temp name, fsync, renameat over `name`, fsync the directory.
    With a DurableBatch both syncs are left to batch.flush()."""
    tmp = temp_name(name, run_id)
    fd = create_exclusive_at(dirfd, tmp, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if batch is None:
                durability.fsync(fd, name)
        finally:
            os.close(fd)
        rename_at(dirfd, tmp, dirfd, name)
    except BaseException:
        unlink_at(dirfd, tmp)
        raise
    if batch is None:
        durability.fsync(dirfd, "directory of %s" % name)
    else:
        batch.wrote_in(dirfd)


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
