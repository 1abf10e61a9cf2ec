"""A concurrent writer of one target file, like a package manager upgrading it.

    python writer.py <directory> <name> rename|inplace <size>

Reads "<version> <delay_us>" lines on stdin.  For each: spin for delay_us, then install the bytes of
that version (racekit.version_bytes) and reply "<version> installed|skipped|overlapped <start ns> <end ns>"
(CLOCK_MONOTONIC, the same clock in every process); inplace may answer "overlapped" instead.
  rename:  write '.<name>.dpkg-new' in the same directory, chmod 0755, rename it over <name>
           (exactly what dpkg does when it unpacks an upgrade).
  inplace: open <name> for writing without following a symlink and overwrite all bytes at offset 0
           (same size, so no truncation); skipped when <name> is a symlink or absent; "overlapped"
           when, after the write, <name> is no longer the inode written (swapped out during it).
"""
import errno
import hashlib
import os
import sys
import time


def version_bytes(version, size):
    out = b"".join(hashlib.sha256(b"%d:%d" % (version, i)).digest() for i in range((size + 31) // 32))
    return out[:size]


def write_all(fd, data, offset=None):
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        n = os.pwrite(fd, view[pos:], offset + pos) if offset is not None else os.write(fd, view[pos:])
        pos += n


def main():
    directory, name, how, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    tmp = ".%s.dpkg-new" % name
    for line in sys.stdin:
        version, delay_us = (int(x) for x in line.split())
        data = version_bytes(version, size)
        deadline = time.perf_counter() + delay_us / 1e6
        if delay_us > 500:
            time.sleep((delay_us - 300) / 1e6)  # leave the CPU to the engine, spin only the last stretch
        while time.perf_counter() < deadline:
            pass
        done = "installed"
        start = time.monotonic_ns()
        if how == "rename":
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755, dir_fd=dfd)
            try:
                write_all(fd, data)
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        else:
            try:
                fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW, dir_fd=dfd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOENT):
                    raise
                done = "skipped"
            else:
                try:
                    write_all(fd, data, 0)
                    # Was the inode written still the target afterwards?  If the engine swapped it out
                    # meanwhile, the write may have landed after the swap, through an fd opened before it.
                    mine = os.fstat(fd)
                    try:
                        now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        now = None
                    if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
                        done = "overlapped"
                finally:
                    os.close(fd)
        sys.stdout.write("%d %s %d %d\n" % (version, done, start, time.monotonic_ns()))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
