"""Tools of the race suite: an inotify watch on a decoy tree, byte/stat snapshots, the flipper and
writer processes, sandboxes on a tmpfs, and the recoverability checks.

Every check that runs while a flipper is active goes through directory handles opened before the
flipping started: the test itself must never look a path up through a directory that may be a
symlink out of root at that instant (it would show up as an access to the decoy).
"""
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
FLIPPER = os.path.join(HERE, "flipper.py")
WRITER = os.path.join(HERE, "writer.py")
TEMP_MARKER = ".swy-tmp."
TAG = "switchyard"

# How many apply/restore/prune cycles each mode runs: 1000 in the normal test command,
# SWITCHYARD_RACE_ITERATIONS=100000 (or more) for the long run documented in docs/security.md.
ITERATIONS = int(os.environ.get("SWITCHYARD_RACE_ITERATIONS", "1000"))


# -- inotify (Linux, through ctypes) ---------------------------------------------------------------

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

WATCH_MASK = (IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_OPEN | IN_CREATE | IN_DELETE
              | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF)
_NAMES = dict((v, k) for k, v in list(globals().items()) if k.startswith("IN_") and isinstance(v, int)
              and k not in ("IN_NONBLOCK", "IN_CLOEXEC", "IN_DONT_FOLLOW"))
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)


def mask_names(mask):
    return "|".join(n for bit, n in sorted(_NAMES.items()) if mask & bit) or hex(mask)


class Watch(object):
    """inotify on every directory and file of a tree (symlinks themselves, not their targets).

    Any event is an access by someone; the tree is a decoy nobody inside root may reach."""

    def __init__(self, top):
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.paths = {}
        self.events = []
        # List the whole tree first: listing a directory already watched would report an access.
        paths = []
        for dirpath, dirnames, filenames in os.walk(top):
            paths.append(dirpath)
            paths.extend(os.path.join(dirpath, n) for n in filenames)
            paths.extend(os.path.join(dirpath, n) for n in dirnames if os.path.islink(os.path.join(dirpath, n)))
        for p in paths:
            wd = _libc.inotify_add_watch(self.fd, os.fsencode(p), WATCH_MASK | IN_DONT_FOLLOW)
            if wd < 0:
                raise OSError(ctypes.get_errno(), "inotify_add_watch %s" % p)
            self.paths[wd] = p

    def drain(self):
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    return self.events
                raise
            off = 0
            while off < len(buf):
                wd, mask, _cookie, nlen = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size:off + _EVENT.size + nlen].rstrip(b"\0").decode("utf-8", "replace")
                off += _EVENT.size + nlen
                if mask & IN_IGNORED and not mask & ~IN_IGNORED:
                    continue
                self.events.append("%s %s%s" % (mask_names(mask), self.paths.get(wd, "wd%d" % wd),
                                                "/" + name if name else ""))

    def close(self):
        self.drain()
        os.close(self.fd)


def snapshot(top):
    """{path: identity, metadata and bytes} of every entry of a tree, the top included (no atime:
    reading for the hash changes it, and an access shows up in the inotify watch instead)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for p in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            st = os.lstat(p)
            meta = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                    st.st_ino, st.st_nlink, st.st_mtime_ns, st.st_ctime_ns)
            if stat.S_ISLNK(st.st_mode):
                out[p] = meta + (os.readlink(p),)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[p] = meta + (hashlib.sha256(f.read()).hexdigest(),)
            else:
                out[p] = meta + (tuple(sorted(os.listdir(p))),)
    return out


def snapshot_diff(before, after):
    lines = []
    for p in sorted(set(before) | set(after)):
        if before.get(p) != after.get(p):
            lines.append("%s: %r -> %r" % (p, before.get(p), after.get(p)))
    return lines


# -- tmpfs -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path, size="256m"):
    """A real tmpfs: fsync costs nothing, so a thousand cycles fit in seconds; root and decoy share it,
    so an escape could hard link or rename across (nothing is masked by EXDEV)."""
    os.makedirs(path, exist_ok=True)
    subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path])
    try:
        yield path
    finally:
        if subprocess.call(["umount", path], stderr=subprocess.DEVNULL) != 0:
            subprocess.call(["umount", "-l", path])


# -- separate processes ----------------------------------------------------------------------------

class Flipper(object):
    """A separate process exchanging `<parent>/<name>` (a real directory) with symlinks that point out
    of root, in a tight loop, with renameat2(RENAME_EXCHANGE): the name never disappears."""

    def __init__(self, parent, name, evil_names, seed=0):
        self.proc = subprocess.Popen([sys.executable, FLIPPER, parent, name, str(seed)] + list(evil_names),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.wait(10)
            raise AssertionError("flipper did not start: %r %s" % (line, self.proc.stderr.read()))

    def stop(self):
        """Stop after a complete pair of exchanges (the real directory is back); returns the flip count."""
        self.proc.send_signal(signal.SIGUSR1)
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, "flipper failed (rc %s): %s" % (self.proc.returncode, err)
        return int(out.strip().splitlines()[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Writer(object):
    """A separate process that installs a new version of one file on request, after a delay, by
    rename over it (like dpkg) or by rewriting it in place; replies what it did."""

    def __init__(self, directory, name, how, size):
        self.size = size
        self.proc = subprocess.Popen([sys.executable, WRITER, directory, name, how, str(size)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True, bufsize=1)

    def start(self, version, delay_us):
        self.proc.stdin.write("%d %d\n" % (version, delay_us))
        self.proc.stdin.flush()

    def result(self):
        """(version, "installed"|"skipped"|"overlapped", start ns, end ns) of the last request, once done."""
        line = self.proc.stdout.readline().split()
        assert line, "writer died"
        return int(line[0]), line[1], int(line[2]), int(line[3])

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def version_bytes(version, size):
    """What the writer puts in the file for `version` (the test recomputes it)."""
    out = b"".join(hashlib.sha256(b"%d:%d" % (version, i)).digest() for i in range((size + 31) // 32))
    return out[:size]


# -- sandboxes -------------------------------------------------------------------------------------

class RaceRoot(object):
    """A root with targets usr/bin/{a,b} (random bytes, 0755) and a provider opt/prov/bin/{a,b}."""

    NAMES = ("a", "b")
    SIZES = {"a": 3000, "b": 70000}

    def __init__(self, root):
        self.root = root
        for d in ("usr/bin", "opt/prov/bin", "run/lock", "var/lib", "var/backups"):
            os.makedirs(self.host(d), exist_ok=True)
        self.originals = {}
        self.data = {}
        for n in self.NAMES:
            data = self.data[n] = os.urandom(self.SIZES[n])
            with open(self.host("usr/bin/" + n), "wb") as f:
                f.write(data)
            os.chmod(self.host("usr/bin/" + n), 0o755)
            self.originals[n] = hashlib.sha256(data).hexdigest()
            with open(self.host("opt/prov/bin/" + n), "wb") as f:
                f.write(b"#!/bin/sh\n# provider " + n.encode() + b"\n")
            os.chmod(self.host("opt/prov/bin/" + n), 0o755)
        self.links = [{"source": self.host("opt/prov/bin/" + n), "target": self.host("usr/bin/" + n)} for n in self.NAMES]
        self.targets = [l["target"] for l in self.links]

    def host(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def source_text(self, name):
        return "/opt/prov/bin/" + name


def open_dir(path):
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def sha256_at(dir_fd, name):
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        h = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
    finally:
        os.close(fd)


def lstat_at(dir_fd, name):
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def backups_at(bdir_fd, name, tag=TAG):
    """[(sidecar name, meta, payload sha256 or None)] of every backup of `name` in a backup directory.

    The payload is the sidecar's name without '.meta.json' (never a path read from the sidecar)."""
    rx = re.compile(r"^\.%s\.%s\.(\d+)\.bak\.meta\.json$" % (re.escape(name), re.escape(tag)))
    out = []
    for entry in os.listdir(bdir_fd):
        if not rx.match(entry):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=bdir_fd)
        except FileNotFoundError:
            continue
        try:
            meta = json.loads(os.read(fd, 1 << 20).decode("utf-8"))
        finally:
            os.close(fd)
        payload = entry[:-len(".meta.json")]
        st = lstat_at(bdir_fd, payload)
        digest = sha256_at(bdir_fd, payload) if st is not None and stat.S_ISREG(st.st_mode) else None
        out.append((entry, meta, digest))
    return out


def verified_hashes(bdir_fd, name):
    """Hashes of the regular-file backups of `name` whose payload matches its sidecar's payload_hash."""
    return set(meta.get("payload_hash") for _s, meta, digest in backups_at(bdir_fd, name)
               if digest is not None and meta.get("payload_hash") == digest)


def target_state(dir_fd, name):
    """('file', sha256, mode) | ('symlink', text) | ('absent',) | ('other', mode) of an entry, by handle."""
    st = lstat_at(dir_fd, name)
    if st is None:
        return ("absent",)
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", os.readlink(name, dir_fd=dir_fd))
    if stat.S_ISREG(st.st_mode):
        return ("file", sha256_at(dir_fd, name), stat.S_IMODE(st.st_mode))
    return ("other", st.st_mode)


def recoverable_problems(rr, tdir_fd, bdir_fd):
    """SPEC 4.7 as the flipper leaves it: each target holds its original bytes (mode 0755), or is the
    link to its source while a backup whose payload verifies holds the original bytes."""
    problems = []
    for n in rr.NAMES:
        state = target_state(tdir_fd, n)
        if state == ("file", rr.originals[n], 0o755):
            continue
        if state == ("symlink", rr.source_text(n)):
            if rr.originals[n] in verified_hashes(bdir_fd, n):
                continue
            problems.append("%s is swapped but no verified backup holds its original bytes" % n)
            continue
        problems.append("%s is %r: neither the original nor the link to its source" % (n, state))
    return problems


def put_back(dir_fd, name, data):
    """Test repair after a counted violation: the bytes that should have survived, back at name (0755)."""
    tmp = ".%s.race-repair" % name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755, dir_fd=dir_fd)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def temps_under(top):
    return [os.path.join(d, n) for d, dns, fns in os.walk(top) for n in dns + fns if TEMP_MARKER in n]


def drop_finished_journals(jdir_fd):
    """Test hygiene between cycles: delete journals that reached a final state (never an unfinished
    one), so a thousand cycles do not make every run parse a thousand journals (issue 13 covers
    journal retention in the product)."""
    for entry in os.listdir(jdir_fd):
        if not entry.endswith(".journal") or entry.startswith("."):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=jdir_fd)
        except FileNotFoundError:
            continue
        try:
            lines = os.read(fd, 1 << 20).decode("utf-8", "replace").splitlines()
        finally:
            os.close(fd)
        final = None
        for line in reversed(lines[1:]):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("record") == "reopen":
                break
            if rec.get("record") == "end":
                final = rec.get("state")
                break
        if final is not None:
            os.unlink(entry, dir_fd=jdir_fd)


def unfinished_journals(jdir_fd):
    names = []
    for entry in os.listdir(jdir_fd):
        if entry.endswith(".journal") and not entry.startswith("."):
            with open(os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=jdir_fd), "rb") as f:
                recs = [json.loads(l) for l in f.read().decode().splitlines() if l.strip()]
            if not any(r.get("record") == "end" for r in recs[1:]):
                names.append(entry)
    return names


class Tally(object):
    """What the engine calls did: outcome counts, and every call that broke the contract."""

    def __init__(self):
        self.outcomes = {}
        self.first_msg = {}
        self.raised = {}
        self.first_trace = {}
        self.violations = {}
        self.first_violation = {}

    def outcome(self, op, error_id, msg=None):
        key = "%s:%s" % (op, error_id or "ok")
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        if msg:
            self.first_msg.setdefault(key, msg)

    def exception(self, op, exc):
        """An exception that is not a SwitchyardError, keyed by where it was raised."""
        frames = traceback.extract_tb(exc.__traceback__)
        inner = frames[-1]
        key = "%s raised %s(errno %s) at %s:%d %s()" % (op, type(exc).__name__, getattr(exc, "errno", None),
                                                        os.path.basename(inner.filename), inner.lineno, inner.name)
        self.raised[key] = self.raised.get(key, 0) + 1
        self.first_trace.setdefault(key, "".join(
            "    %s:%d %s()\n" % (os.path.basename(f.filename), f.lineno, f.name) for f in frames[1:])
            + "    %s: %s" % (type(exc).__name__, exc))

    def violation(self, kind, detail):
        self.violations[kind] = self.violations.get(kind, 0) + 1
        self.first_violation.setdefault(kind, detail)

    def failures(self):
        out = []
        for k, v in sorted(self.raised.items()):
            out.append("%d x %s; first call chain:\n%s" % (v, k, self.first_trace[k]))
        for k, v in sorted(self.violations.items()):
            out.append("%d x %s; first: %s" % (v, k, self.first_violation[k]))
        return out

    def summary(self):
        return ", ".join("%s=%d" % kv for kv in sorted(self.outcomes.items()))

    def messages(self):
        return "".join("\n  first %s: %s" % (k, m[:300]) for k, m in sorted(self.first_msg.items()))
