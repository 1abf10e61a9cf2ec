# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The smoke check runner: one process in its own session, capped pipes, every process of it killed after. Private to this collection.

Every check runs in its own session (process group); when the check's first process exits (it is
judged on that exit) or its timeout passes, the whole group is killed, and any process that left
the group is killed too (the module is made a child subreaper, so orphans come back to it; a
child of the module that is in the module's own session is never one of them).  Checks run one
at a time per process.
Output is read as it comes and at most KEEP_HEAD + KEEP_TAIL bytes are kept per stream.
"""

from __future__ import absolute_import, division, print_function

import errno
import os
import select
import signal
import subprocess
import threading
import time

# Output kept per stream: the first KEEP_HEAD and the last KEEP_TAIL bytes; the rest is counted and dropped.
KEEP_HEAD = 32 * 1024
KEEP_TAIL = 32 * 1024
_READ_CHUNK = 64 * 1024
_TICK = 0.05  # seconds between checks whether the check's first process has exited while others hold its pipes
_DRAIN_GRACE = 2.0  # seconds to read what is left in the pipes after every process of the check was killed

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class Capped(object):
    """The first KEEP_HEAD and the last KEEP_TAIL bytes of a stream, and how many bytes it had."""

    def __init__(self, head=KEEP_HEAD, tail=KEEP_TAIL):
        self.head_max = head
        self.tail_max = tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data):
        self.total += len(data)
        room = self.head_max - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_max:
                del self.tail[:-self.tail_max]

    def finish(self):
        if len(self.tail) > self.tail_max:
            del self.tail[:-self.tail_max]

    @property
    def kept(self):
        return len(self.head) + len(self.tail)

    @property
    def truncated(self):
        return self.total > self.kept

    def texts(self):
        """The kept output as text: one piece when nothing was dropped, else the head and the tail."""
        if not self.truncated:
            return [bytes(self.head + self.tail).decode("utf-8", "replace")]
        return [bytes(self.head).decode("utf-8", "replace"), bytes(self.tail).decode("utf-8", "replace")]


# -- process lifetime -----------------------------------------------------------------------------

_SUBREAPER = [None]
_RUN_LOCK = threading.Lock()


def _become_subreaper():
    """PR_SET_CHILD_SUBREAPER: a process that leaves the check's session and loses its parent is
    reparented to this module instead of init, so _kill_orphans can find it.  False when unavailable."""
    if _SUBREAPER[0] is None:
        ok = False
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            ok = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
        except (ImportError, OSError, AttributeError):
            ok = False
        _SUBREAPER[0] = ok
    return _SUBREAPER[0]


def _children():
    """{pid: session id} of this process's children, from /proc."""
    me = str(os.getpid()).encode()
    out = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for n in names:
        if not n.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % n, "rb") as f:
                data = f.read()
        except (IOError, OSError):
            continue
        fields = data[data.rfind(b")") + 2:].split()  # state ppid pgrp session ...
        if len(fields) > 3 and fields[1] == me:
            out[int(n)] = int(fields[3])
    return out


def _kill_orphans(keep):
    """Kill and reap every child of this process that a check left behind, until none is left.

    Such a child came back here through the subreaper, and it is in another session than this
    process (every check starts a session of its own, and a process can only leave it for a new
    one); children in this process's own session, or in `keep` (there before the check), are
    never touched."""
    mine = os.getsid(0)
    killed = 0
    for _round in range(200):
        extra = [pid for pid, sid in _children().items() if sid != mine and pid not in keep]
        if not extra:
            break
        for pid in extra:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        for pid in extra:
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
    return killed


def _killpg(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


def _exited(pid):
    """True when pid has exited, without reaping it (its zombie keeps the process group id from reuse)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None and info.si_pid == pid


def _collect(proc, timeout, end):
    """Read both pipes into bounded buffers until the first process exits or the timeout passes;
    then end() kills every process of the check and what is left in the pipes is drained.
    Returns (returncode or None, out, err, timed_out)."""
    out, err = Capped(), Capped()
    bufs = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    poller = select.poll()
    for fd in bufs:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    deadline = time.monotonic() + timeout
    timed_out = False
    ended = False  # the first process exited (or timed out) and every process of the check was killed
    drain_until = None
    try:
        while True:
            now = time.monotonic()
            if not ended:
                if _exited(proc.pid):
                    ended = True
                elif now >= deadline:
                    ended = timed_out = True
                if ended:
                    end()
                    drain_until = time.monotonic() + _DRAIN_GRACE
            if ended and (not bufs or time.monotonic() >= drain_until):
                break  # all read, or a process out of reach still holds a pipe: it is killed again below
            wait = _TICK if not ended else max(0.0, drain_until - time.monotonic())
            for fd, _ev in poller.poll(int(wait * 1000) + 1):
                try:
                    data = os.read(fd, _READ_CHUNK)
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EINTR):
                        continue
                    data = b""
                if data:
                    bufs[fd].add(data)
                else:
                    poller.unregister(fd)
                    del bufs[fd]
    finally:
        if not ended:
            end()
        proc.stdout.close()
        proc.stderr.close()
        proc.wait()
        out.finish()
        err.finish()
    return (None if timed_out else proc.returncode), out, err, timed_out


def _spawn(argv, extra):
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(ENV), close_fds=True, start_new_session=True, **extra)


def run_once(argv, timeout, extra):
    """Spawn and collect one process in its own session, leaving nothing of it running.
    Raises OSError/SubprocessError when it cannot start."""
    with _RUN_LOCK:  # one check at a time per process: a check's leftovers are told apart from its peers'
        subreaper = _become_subreaper()
        keep = set(_children()) if subreaper else set()
        proc = None
        try:
            proc = _spawn(argv, extra)

            def end():
                # The first process is not reaped yet (a zombie at worst), so its group id cannot be reused.
                _killpg(proc.pid)
                if subreaper:
                    _kill_orphans(keep | {proc.pid})
            return _collect(proc, timeout, end)
        finally:
            if subreaper:
                _kill_orphans(keep)


def chroot_into(root):
    """preexec_fn that makes the child run inside a chroot of root."""
    def _pre():
        os.chroot(root)
        os.chdir("/")
    return _pre


def exec_fd(fd, argv, script):
    """preexec_fn that replaces the child by the file open as `fd` (fexecve): no path is looked up again.

    A '#!' script is run by its interpreter with /dev/fd/<fd> as the script's path, so for a
    script the descriptor must survive the exec: it is made inheritable in the child (a binary
    keeps it close-on-exec).  Every other
    descriptor above 2 is closed first (what close_fds would do after preexec_fn)."""
    def _pre():
        try:
            if script:
                os.set_inheritable(fd, True)
            os.closerange(3, fd)
            os.closerange(fd + 1, 65536)
            os.execve(fd, argv, dict(ENV))
        except OSError as e:
            os.write(2, ("switchyard smoke: cannot execute by descriptor: %s\n" % (e.strerror or e)).encode())
        os._exit(127)
    return _pre
