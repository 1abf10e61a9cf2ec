# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The process lock: flock, waited for in the kernel's queue until a deadline. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import json
import math
import os
import random
import signal
import socket
import threading
import time

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._errors import LockingError, PolicyError

# How acquire_lock waits after a failed first attempt: block in flock(2) until an interval
# timer cuts it short at the deadline (where SIGALRM can be borrowed; else poll), or poll.
WAIT_BLOCK = "block"
WAIT_POLL = "poll"
# The polling backoff (wait="poll", and the fallback where the alarm cannot be used).
DEFAULT_BASE = 0.01
DEFAULT_CAP = 0.05
# Shortest alarm ever armed: setitimer(0) would disarm it and let flock block forever.
_MIN_ALARM_S = 1e-5

# Failures that mean "this host cannot give us a lock at this path at all" (read-only /run,
# no permission, no lock support, no space), as opposed to "someone else holds it" or
# "something odd is at the lock path".  Only these may let the engine run unlocked by policy.
_UNAVAILABLE_ERRNOS = frozenset(
    e for e in (
        errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOLCK, errno.ENOSPC,
        getattr(errno, "EDQUOT", None), getattr(errno, "EOPNOTSUPP", None),
        getattr(errno, "ENOTSUP", None),
    ) if e is not None
)
# flock(2) answers EINVAL for objects that do not support locking.
_UNAVAILABLE_FLOCK_ERRNOS = _UNAVAILABLE_ERRNOS | frozenset((errno.EINVAL,))
_CONTENDED_ERRNOS = frozenset((errno.EWOULDBLOCK, errno.EAGAIN))
_HOLDER_READ_LIMIT = 4096


class LockUnavailableError(LockingError):
    """The lock file cannot be created, opened or flocked at all (EROFS, EACCES, ENOLCK...).

    Under ``locking: optional`` the engine may then run unlocked and emit a warn event; a
    timeout is a plain ``LockingError`` and never allows that.
    """

    def __init__(self, msg, path=None, cause_ids=(), errno_value=None):
        super(LockUnavailableError, self).__init__(msg, path=path, cause_ids=cause_ids)
        self.errno = errno_value


class LockHandle:
    """A held lock; release() is idempotent and also runs on leaving a ``with`` block."""

    backend = "flock"

    def __init__(self, fd, path, plan_id, attempts, wait_ms):
        self._fd = fd
        self.path = path
        self.plan_id = plan_id
        self.attempts = attempts
        self.wait_ms = wait_ms

    @property
    def held(self):
        return self._fd is not None

    def release(self):
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Clear the holder record while still holding the lock, so the file never
            # names a process that no longer holds it.  Cosmetic: a failure here must
            # not keep the lock held, so it is ignored.
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release()
        return False

    def __repr__(self):
        return "LockHandle(path=%r, plan_id=%r, attempts=%d, wait_ms=%.1f, held=%r)" % (
            self.path, self.plan_id, self.attempts, self.wait_ms, self.held)


def holder_record(plan_id):
    """The JSON line the holder writes into the lock file."""
    return json.dumps({
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "plan_id": plan_id if plan_id is None else str(plan_id),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, sort_keys=True) + "\n"


def parse_holder(data):
    """The holder dict from lock file bytes, or None when empty, garbled or not a record."""
    line = data.split(b"\n", 1)[0].strip()
    if not line:
        return None
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return None
    if not isinstance(record, dict):
        return None
    return record


def describe_holder(holder):
    if not holder:
        return "holder unknown (lock file empty or unreadable)"
    return "held by pid %s on host %s for plan_id %s since %s" % (
        holder.get("pid", "?"), holder.get("host", "?"), holder.get("plan_id", "?"),
        holder.get("since", "?"))


def _read_holder(fd):
    try:
        return parse_holder(os.pread(fd, _HOLDER_READ_LIMIT, 0))
    except OSError:
        return None


def _os_error_to_lock_error(exc, what, lock_path, unavailable):
    msg = "cannot %s lock file %s: %s" % (what, lock_path, exc.strerror or exc)
    if exc.errno in unavailable:
        return LockUnavailableError(msg, path=lock_path, errno_value=exc.errno)
    return LockingError(msg, path=lock_path)


def lock_dir_error(exc, lock_path):
    """The LockingError for a directory of lock_path that cannot be opened or created (the engine's walk)."""
    return _os_error_to_lock_error(exc, "create the directory of", lock_path, _UNAVAILABLE_ERRNOS)


def _open_lock_file(lock_path, dir_fd=None, name=None):
    """Open (creating exclusively when absent) the lock file: `name` in the already-confined directory dir_fd
    (the engine's way), or lock_path itself, its missing parents made 0755.  Only a regular file owned by this
    user with one link is used: never a symlink, and never a hard link whose truncation would reach another file."""
    own_dir = dir_fd is None
    if own_dir:
        parent = os.path.dirname(lock_path) or "."
        name = os.path.basename(lock_path)
        try:
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
        except OSError as exc:
            if not os.path.isdir(parent):  # tolerate a concurrent makedirs
                raise lock_dir_error(exc, lock_path)
        try:
            dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise lock_dir_error(exc, lock_path)
    try:
        fd, _created = fs.open_or_create_at(dir_fd, name, os.O_RDWR, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            # Something planted a symlink at the lock path: refuse, and do not let the
            # engine treat it as "no lock available" and run unlocked.
            raise LockingError("lock file %s is a symlink; refusing to follow it" % lock_path,
                               path=lock_path)
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO nobody reads)
            raise LockingError("lock file %s is not a regular file" % lock_path, path=lock_path)
        raise _os_error_to_lock_error(exc, "open", lock_path, _UNAVAILABLE_ERRNOS)
    finally:
        if own_dir:
            os.close(dir_fd)
    try:
        problem = fs.regular_file_problem(os.fstat(fd))
    except OSError as exc:
        os.close(fd)
        raise _os_error_to_lock_error(exc, "stat", lock_path, _UNAVAILABLE_ERRNOS)
    if problem:
        os.close(fd)
        raise LockingError("lock file %s %s; refusing to use it" % (lock_path, problem), path=lock_path)
    return fd


def _try_flock(fd, lock_path):
    """True if taken, False if someone else holds it; raises if flock cannot work here."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _CONTENDED_ERRNOS:
            return False
        raise _os_error_to_lock_error(exc, "flock", lock_path, _UNAVAILABLE_FLOCK_ERRNOS)
    return True


def _write_holder(fd, plan_id):
    data = holder_record(plan_id).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _validate(timeout, base, cap):
    for name, value in (("lock_timeout", timeout), ("base", base), ("cap", cap)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise PolicyError("%s must be a number, got %r" % (name, value))
    if timeout < 0:
        raise PolicyError("lock_timeout must be >= 0, got %r" % (timeout,))
    if base <= 0 or cap < base:
        raise PolicyError("lock backoff needs 0 < base <= cap, got base=%r cap=%r" % (base, cap))


class _DeadlineReached(Exception):
    """Raised by the SIGALRM handler to cut a blocking flock short at the deadline."""


def _can_use_alarm():
    """True when a bounded blocking wait may borrow SIGALRM and ITIMER_REAL here.

    Only the main thread may install signal handlers (and only it runs Python handlers).  A
    handler installed from C (getsignal() is None) could not be put back, and an armed
    ITIMER_REAL belongs to someone else: in those cases the caller polls instead.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGALRM) is None:
        return False
    return signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def _flock_until_alarm(fd, lock_path, seconds):
    """One blocking ``flock(LOCK_EX)`` cut short by SIGALRM after ``seconds``.

    Returns True if the lock was taken, False if the alarm (or a stray SIGALRM) interrupted
    the wait, None if no handler could be installed (nothing attempted).  May also raise
    _DeadlineReached when the alarm strikes just outside the flock call; the caller treats
    that like False.  The previous SIGALRM handler is put back and the timer is disarmed on
    every path.  Call only when _can_use_alarm().
    """
    armed = [False]

    def on_alarm(signum, frame):
        # Raise at most once, and only while this wait is armed: a handler that runs late
        # (after the flock returned) must not raise into unrelated code.
        if armed[0]:
            armed[0] = False
            raise _DeadlineReached()

    try:
        previous = signal.signal(signal.SIGALRM, on_alarm)
    except (ValueError, OSError):  # not allowed here after all: the caller polls
        return None
    try:
        try:
            armed[0] = True
            # setitimer(0) would disarm the timer and leave flock blocked forever.
            signal.setitimer(signal.ITIMER_REAL, max(seconds, _MIN_ALARM_S))
            fcntl.flock(fd, fcntl.LOCK_EX)  # EINTR from other signals is retried by Python
            armed[0] = False
            return True
        except _DeadlineReached:
            return False
        except OSError as exc:
            armed[0] = False
            raise _os_error_to_lock_error(exc, "flock", lock_path, _UNAVAILABLE_FLOCK_ERRNOS)
        finally:
            armed[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            # A SIGALRM delivered before the line above has run its (now harmless) handler by
            # the time the next line starts: the main thread handles pending signals right
            # after a call returns.
    finally:
        signal.signal(signal.SIGALRM, previous)


def _wait_blocking(fd, lock_path, deadline, clock):
    """Wait in the kernel's flock queue until the deadline.

    Returns (taken, flock calls made), or None when signals cannot be used here (nothing
    was attempted then).
    """
    calls = 0
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return False, calls
        taken = None
        if _can_use_alarm():
            try:
                taken = _flock_until_alarm(fd, lock_path, remaining)
            except _DeadlineReached:
                taken = False
        if taken is None:
            return None if calls == 0 else (False, calls)
        calls += 1
        if taken:
            return True, calls
        # Interrupted.  One non-blocking try: it takes a lock released right at the
        # deadline, and it confirms a lock the blocking call took just before the alarm
        # struck (flock on a descriptor that already holds the lock succeeds).
        calls += 1
        if _try_flock(fd, lock_path):
            return True, calls


def _wait_polling(fd, lock_path, deadline, clock, sleep, rand, base, cap):
    """Sleep-and-retry with full-jitter backoff until the deadline: (taken, attempts)."""
    attempts = 0
    ceiling = base
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return False, attempts
        sleep(min(rand() * ceiling, remaining))
        ceiling = min(cap, ceiling * 2)
        attempts += 1
        if _try_flock(fd, lock_path):
            return True, attempts


def acquire_lock(lock_path, timeout, plan_id, base=DEFAULT_BASE, cap=DEFAULT_CAP,
                 clock=time.monotonic, sleep=time.sleep, rand=random.random, wait=WAIT_BLOCK,
                 dir_fd=None, name=None):
    """Take an exclusive flock on lock_path within ``timeout`` seconds; return a LockHandle.

    The first attempt is an immediate non-blocking ``flock``.  If it fails and ``timeout``
    is positive, ``wait="block"`` (the default) then blocks in ``flock(LOCK_EX)``, where
    the kernel queues waiters and hands the lock over on release with no polling delay; a
    ``SIGALRM`` from ``ITIMER_REAL`` at the deadline interrupts the wait, after which one
    last non-blocking attempt is made.  The previous SIGALRM handler is restored.  Where
    the alarm cannot be used (not the main thread, a handler installed from C, or an
    ITIMER_REAL already armed by someone else), and with ``wait="poll"``, it polls
    instead: after the n-th failed attempt (n from 0) it sleeps ``rand() * min(cap, base *
    2**n)`` (full jitter), cut short at the deadline, and tries again.

    ``attempts`` counts the ``flock`` calls made: 1 for the immediate attempt, plus 1 for
    each blocking wait, plus 1 for the non-blocking attempt after each interrupted wait, or
    plus 1 per poll.  So 1 when the lock was free, 2 when a blocking wait got it, 3 on a
    timeout (more only if something else sent SIGALRM).  ``timeout == 0`` is exactly one
    attempt.  The total wait is bounded by ``timeout`` (plus signal delivery and one
    ``flock`` call).  Raises LockingError on timeout and LockUnavailableError when no
    lock can be had here.
    With dir_fd and name the file is `name` in that directory (lock_path then only names it in messages).
    """
    if wait not in (WAIT_BLOCK, WAIT_POLL):
        raise PolicyError("lock wait must be %r or %r, got %r" % (WAIT_BLOCK, WAIT_POLL, wait))
    _validate(timeout, base, cap)
    fd = _open_lock_file(lock_path, dir_fd, name)
    try:
        start = clock()
        deadline = start + timeout
        attempts = 1
        taken = _try_flock(fd, lock_path)
        if not taken and timeout > 0:
            outcome = _wait_blocking(fd, lock_path, deadline, clock) if wait == WAIT_BLOCK else None
            if outcome is not None:
                taken, calls = outcome
                attempts += calls
            if outcome is None or (not taken and clock() < deadline):
                taken, calls = _wait_polling(fd, lock_path, deadline, clock, sleep, rand, base, cap)
                attempts += calls
        wait_ms = (clock() - start) * 1000.0
        if taken:
            try:
                _write_holder(fd, plan_id)
            except OSError:
                # A lock we cannot label is still a lock; the record is only for messages.
                pass
            handle = LockHandle(fd, lock_path, plan_id, attempts, wait_ms)
            fd = None
            return handle
        holder = _read_holder(fd)
        err = LockingError(
            "could not lock %s within lock_timeout=%ss: %d attempts over %.0f ms; %s"
            % (lock_path, timeout, attempts, wait_ms, describe_holder(holder)),
            path=lock_path)
        err.attempts = attempts
        err.wait_ms = wait_ms
        err.holder = holder
        err.lock_timeout = timeout
        raise err
    finally:
        if fd is not None:
            os.close(fd)
