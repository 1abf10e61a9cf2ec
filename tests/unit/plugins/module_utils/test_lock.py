# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the flock process lock, against the real kernel. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import fcntl
import json
import multiprocessing
import os
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.switchyard.fs.plugins.module_utils._errors import LockingError, PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.lock import (
    LockHandle,
    LockUnavailableError,
    _try_flock,
    acquire_lock,
    parse_holder,
)

# fork: the children need the already-imported collection, not a fresh interpreter.
MP = multiprocessing.get_context("fork")


class FakeTime:
    """An injected clock whose sleep advances it and records each sleep with its start."""

    def __init__(self, on_sleep=None):
        self.now = 1000.0
        self.sleeps = []  # (start, seconds)
        self.on_sleep = on_sleep

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.sleeps.append((self.now, seconds))
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


def hold_in_this_process(lock_path):
    """Hold the flock through a separate open file description (the kernel excludes it)."""
    fd = os.open(str(lock_path), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _hold_in_child(lock_path, plan_id, ready, release):
    with acquire_lock(lock_path, 5, plan_id):
        ready.set()
        release.wait(30)


@pytest.fixture
def child_holder():
    """Start a real process holding the lock via acquire_lock; yields its pid."""
    started = []

    def start(lock_path, plan_id):
        ready, release = MP.Event(), MP.Event()
        proc = MP.Process(target=_hold_in_child, args=(str(lock_path), plan_id, ready, release))
        proc.start()
        started.append((proc, release))
        assert ready.wait(10), "child never took the lock"
        return proc.pid

    yield start
    for proc, release in started:
        release.set()
        proc.join(10)
        assert proc.exitcode == 0


# --- polling backoff (wait="poll"; injected clock/sleep/rand, real flock) ----------------

def test_uncontended_lock_takes_one_attempt_and_never_sleeps(tmp_path):
    ft = FakeTime()
    handle = acquire_lock(str(tmp_path / "lock"), 5, "p1", clock=ft.clock, sleep=ft.sleep)
    try:
        assert ft.sleeps == []
        assert handle.attempts == 1
        assert handle.wait_ms == 0.0
        assert handle.backend == "flock"
        assert handle.path == str(tmp_path / "lock")
    finally:
        handle.release()


@pytest.mark.parametrize("wait", ["block", "poll"])
def test_timeout_zero_is_exactly_one_attempt(tmp_path, wait):
    lock_path = tmp_path / "lock"
    fd = hold_in_this_process(lock_path)
    calls = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: calls.append(signum))
    try:
        ft = FakeTime()
        with pytest.raises(LockingError) as info:
            acquire_lock(str(lock_path), 0, "p1", clock=ft.clock, sleep=ft.sleep, wait=wait)
        assert info.value.attempts == 1
        assert info.value.wait_ms == 0.0
        assert ft.sleeps == []
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and calls == []
    finally:
        signal.signal(signal.SIGALRM, previous)
        os.close(fd)


def test_backoff_doubles_from_base_to_cap_and_stops_at_deadline(tmp_path):
    lock_path = tmp_path / "lock"
    fd = hold_in_this_process(lock_path)
    try:
        ft = FakeTime()
        with pytest.raises(LockingError) as info:
            acquire_lock(str(lock_path), 1.0, "p1", base=0.01, cap=0.25, wait="poll",
                         clock=ft.clock, sleep=ft.sleep, rand=lambda: 1.0)
    finally:
        os.close(fd)
    slept = [round(s, 9) for _unused, s in ft.sleeps]
    # 0.01 0.02 0.04 0.08 0.16, then capped at 0.25 twice (sum 0.81), the last cut to the deadline.
    assert slept == [0.01, 0.02, 0.04, 0.08, 0.16, 0.25, 0.25, 0.19]
    assert info.value.attempts == len(slept) + 1  # one attempt before and after each sleep
    assert info.value.wait_ms == pytest.approx(1000.0)


def test_full_jitter_scales_each_ceiling_by_rand(tmp_path):
    lock_path = tmp_path / "lock"
    fd = hold_in_this_process(lock_path)
    try:
        ft = FakeTime()
        with pytest.raises(LockingError):
            acquire_lock(str(lock_path), 0.1, "p1", base=0.01, cap=0.04, wait="poll",
                         clock=ft.clock, sleep=ft.sleep, rand=lambda: 0.5)
    finally:
        os.close(fd)
    slept = [round(s, 9) for _unused, s in ft.sleeps]
    assert slept[:5] == [0.005, 0.01, 0.02, 0.02, 0.02]


@settings(max_examples=60, deadline=None)
@given(
    timeout=st.floats(min_value=0, max_value=2),
    base=st.floats(min_value=0.005, max_value=0.1),
    cap_factor=st.floats(min_value=1, max_value=50),
    # rand() == 0 forever would never advance a fake clock; the real one always advances.
    rands=st.lists(st.floats(min_value=0.1, max_value=1, exclude_max=True), min_size=1, max_size=20),
)
def test_sleeps_bounded_by_cap_and_deadline(tmp_path_factory, timeout, base, cap_factor, rands):
    lock_path = tmp_path_factory.mktemp("lock") / "lock"
    cap = base * cap_factor
    fd = hold_in_this_process(lock_path)
    seq = iter(rands * 10000)
    try:
        ft = FakeTime()
        start = ft.now
        with pytest.raises(LockingError) as info:
            acquire_lock(str(lock_path), timeout, "p", base=base, cap=cap, wait="poll",
                         clock=ft.clock, sleep=ft.sleep, rand=lambda: next(seq))
    finally:
        os.close(fd)
    deadline = start + timeout
    for n, (at, seconds) in enumerate(ft.sleeps):
        assert seconds <= min(cap, base * 2 ** min(n, 64)) + 1e-12
        assert at + seconds <= deadline + 1e-9
    assert info.value.attempts == len(ft.sleeps) + 1
    assert info.value.wait_ms <= timeout * 1000.0 + 1e-6


def test_attempts_and_wait_count_exactly_when_holder_releases(tmp_path):
    lock_path = tmp_path / "lock"
    fd = [hold_in_this_process(lock_path)]

    def release_after_third_sleep(count):
        if count == 3:
            os.close(fd.pop())

    ft = FakeTime(on_sleep=release_after_third_sleep)
    with acquire_lock(str(lock_path), 10, "p1", base=0.01, cap=0.25, wait="poll",
                      clock=ft.clock, sleep=ft.sleep, rand=lambda: 1.0) as handle:
        assert handle.attempts == 4
        assert handle.wait_ms == pytest.approx(70.0)  # 10 + 20 + 40 ms of (fake) sleep
    assert [round(s, 9) for _unused, s in ft.sleeps] == [0.01, 0.02, 0.04]


@pytest.mark.parametrize("kwargs", [
    dict(timeout=-1), dict(timeout=None), dict(timeout=True),
    dict(timeout=1, base=0), dict(timeout=1, base=0.5, cap=0.25), dict(timeout=1, wait="spin"),
    dict(timeout=1, wait=None),
])
def test_invalid_backoff_parameters_are_policy_errors(tmp_path, kwargs):
    timeout = kwargs.pop("timeout")
    with pytest.raises(PolicyError):
        acquire_lock(str(tmp_path / "lock"), timeout, "p", **kwargs)
    assert not (tmp_path / "lock").exists()


# --- blocking wait (the default): real processes, real flock, real SIGALRM -------------

def _release_later(release, seconds):
    """Release a child_holder-style Event from a separate process after ``seconds``."""
    proc = MP.Process(target=lambda: (time.sleep(seconds), release.set()))
    proc.start()
    return proc


def _hold_until(lock_path, plan_id, ready, release):
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, ('{"pid": %d, "host": "h", "plan_id": "%s", "since": "s"}\n' % (os.getpid(), plan_id)).encode(), 0)
    ready.set()
    release.wait(60)
    os.close(fd)


@pytest.fixture
def timed_holder():
    """A real process holding the lock until ``hold_s`` elapses; yields (pid, release Event)."""
    started = []

    def start(lock_path, hold_s, plan_id="plan-held"):
        ready, release = MP.Event(), MP.Event()
        proc = MP.Process(target=_hold_until, args=(str(lock_path), plan_id, ready, release))
        proc.start()
        assert ready.wait(10), "holder never took the lock"
        timer = _release_later(release, hold_s)
        started.append((proc, release, timer))
        return proc.pid, release

    yield start
    for proc, release, timer in started:
        release.set()
        proc.join(10)
        timer.terminate()  # our own sleeper process; the holder is already released
        timer.join(10)
        assert proc.exitcode == 0


def _blocked_flock_waiters(lock_path):
    """Blocked flock waiters on lock_path's inode, from /proc/locks ("->" lines).

    Since the kernel chains waiters behind one another, /proc/locks lists all of them only
    on kernels that walk that tree (2021 on); on older ones the test below times out
    waiting here and says so.
    """
    ino = os.stat(str(lock_path)).st_ino
    with open("/proc/locks") as f:
        return sum(1 for line in f if "->" in line and "FLOCK" in line
                   and line.split()[6].endswith(":%d" % ino))


def test_blocking_wait_takes_the_lock_on_release_in_two_attempts(tmp_path, timed_holder):
    lock_path = tmp_path / "lock"
    timed_holder(lock_path, 0.5)
    with acquire_lock(str(lock_path), 30, "p") as handle:
        # 1 immediate non-blocking try + 1 blocking flock that the release completed; a
        # poller would have made several attempts in half a second.
        assert handle.attempts == 2
        assert 100.0 <= handle.wait_ms < 30000.0
        assert json.loads(lock_path.read_bytes())["plan_id"] == "p"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_blocking_wait_times_out_in_three_attempts_naming_the_holder(tmp_path, timed_holder):
    lock_path = tmp_path / "lock"
    pid, _unused = timed_holder(lock_path, 60, "plan-blocker")
    with pytest.raises(LockingError) as info:
        acquire_lock(str(lock_path), 0.3, "p")
    err = info.value
    assert not isinstance(err, LockUnavailableError)
    # immediate try, the blocking wait the alarm interrupted, the last non-blocking try
    assert err.attempts == 3
    assert "3 attempts" in str(err)
    assert 300.0 <= err.wait_ms < 5000.0
    assert "pid %d" % pid in str(err) and "plan-blocker" in str(err)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.parametrize("previous", ["python", signal.SIG_IGN, signal.SIG_DFL])
@pytest.mark.parametrize("outcome", ["acquired", "timeout"])
def test_previous_sigalrm_handler_is_restored_and_never_called(tmp_path, timed_holder, previous, outcome):
    lock_path = tmp_path / "lock"
    calls = []

    def mine(signum, frame):
        calls.append(signum)

    handler = mine if previous == "python" else previous
    saved = signal.signal(signal.SIGALRM, handler)
    try:
        timed_holder(lock_path, 0.3 if outcome == "acquired" else 60)
        if outcome == "acquired":
            acquire_lock(str(lock_path), 30, "p").release()
        else:
            with pytest.raises(LockingError):
                acquire_lock(str(lock_path), 0.3, "p")
        assert signal.getsignal(signal.SIGALRM) is handler
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert calls == []
        if previous == "python":
            # It is really installed again, not merely reported: a real SIGALRM reaches it.
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            time.sleep(1)
            assert calls == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, saved)


def test_an_armed_itimer_is_left_alone_and_the_wait_polls(tmp_path, timed_holder):
    lock_path = tmp_path / "lock"
    calls = []
    saved = signal.signal(signal.SIGALRM, lambda signum, frame: calls.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        timed_holder(lock_path, 60)
        with pytest.raises(LockingError) as info:
            acquire_lock(str(lock_path), 0.5, "p")
        remaining, interval = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 30 and interval == 0.0  # the caller's timer still runs
        assert calls == []
        # Polling (sleeps of at most 50 ms over 0.5 s), not one interrupted blocking wait.
        assert info.value.attempts >= 6
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, saved)


def test_off_the_main_thread_the_wait_polls_and_leaves_sigalrm_alone(tmp_path, timed_holder):
    lock_path = tmp_path / "lock"
    handler = signal.getsignal(signal.SIGALRM)
    timed_holder(lock_path, 0.5)
    out = []
    thread = threading.Thread(target=lambda: out.append(acquire_lock(str(lock_path), 30, "p")))
    thread.start()
    thread.join(60)
    assert len(out) == 1, "acquire_lock failed or hung off the main thread"
    handle = out[0]
    handle.release()
    assert handle.attempts >= 4  # polled: waits of at most 50 ms over about 0.5 s
    assert signal.getsignal(signal.SIGALRM) is handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def _send_sigalrm(pid, after):
    time.sleep(after)
    os.kill(pid, signal.SIGALRM)


def test_a_stray_sigalrm_does_not_end_the_wait_early(tmp_path, timed_holder):
    lock_path = tmp_path / "lock"
    timed_holder(lock_path, 1.5)
    calls = []
    # Should the signal land outside the wait, it must not kill the test runner (SIG_DFL).
    saved = signal.signal(signal.SIGALRM, lambda signum, frame: calls.append(signum))
    sender = MP.Process(target=_send_sigalrm, args=(os.getpid(), 0.3))
    sender.start()
    try:
        with acquire_lock(str(lock_path), 30, "p") as handle:
            # interrupted wait + its non-blocking retry, then a second blocking wait
            assert handle.attempts == 4
            assert handle.wait_ms >= 1000.0  # it waited for the release, not the signal
    finally:
        sender.join(10)
        signal.signal(signal.SIGALRM, saved)
    assert calls == []  # the signal struck during the wait, where acquire_lock handles it
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_retry_on_the_descriptor_that_holds_the_lock_succeeds(tmp_path):
    # The premise of the last non-blocking try after an alarm: if the alarm struck just
    # after the blocking flock returned, that try reports the lock as ours.
    fd = os.open(str(tmp_path / "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert _try_flock(fd, str(tmp_path / "lock")) is True
        other = hold_or_none(tmp_path / "lock")
        assert other is None  # and it is still held exclusively
    finally:
        os.close(fd)


def hold_or_none(lock_path):
    fd = os.open(str(lock_path), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _queued_waiter(lock_path, name, out_path, hold):
    with acquire_lock(lock_path, 60, name):
        with open(out_path, "a") as f:
            f.write(name + "\n")
        time.sleep(hold)


def test_waiters_get_the_lock_in_arrival_order(tmp_path, timed_holder):
    # The kernel queues blocked flock waiters and hands the lock to the oldest: the
    # fairness the polling strategies only approximate.
    lock_path = tmp_path / "lock"
    out = str(tmp_path / "order.txt")
    _unused, release = timed_holder(lock_path, 60)
    waiters = []
    names = ["w%d" % n for n in range(5)]
    for n, name in enumerate(names):
        proc = MP.Process(target=_queued_waiter, args=(str(lock_path), name, out, 0.02))
        proc.start()
        waiters.append(proc)
        deadline = time.monotonic() + 30
        while _blocked_flock_waiters(lock_path) < n + 1:  # queued before the next one starts
            assert time.monotonic() < deadline, "waiter %s never blocked in flock" % name
            time.sleep(0.005)
    release.set()
    for proc in waiters:
        proc.join(60)
        assert proc.exitcode == 0
    with open(out) as f:
        assert f.read().split() == names


# --- holder record and the timeout error ------------------------------------------------

def test_holder_record_is_one_json_line_in_a_0644_file_under_new_0755_dirs(tmp_path):
    lock_path = tmp_path / "run" / "switchyard" / "lock"
    old_umask = os.umask(0o022)
    try:
        with acquire_lock(str(lock_path), 1, "plan-42"):
            data = lock_path.read_bytes()
            mode = stat.S_IMODE(lock_path.stat().st_mode)
            dir_mode = stat.S_IMODE(lock_path.parent.stat().st_mode)
    finally:
        os.umask(old_umask)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    record = json.loads(data)
    assert set(record) == {"pid", "host", "plan_id", "since"}
    assert record["pid"] == os.getpid()
    assert record["host"] == socket.gethostname()
    assert record["plan_id"] == "plan-42"
    assert time.strptime(record["since"], "%Y-%m-%dT%H:%M:%SZ")
    assert mode == 0o644
    assert dir_mode == 0o755


def test_previous_longer_record_is_truncated(tmp_path):
    lock_path = tmp_path / "lock"
    lock_path.write_text('{"junk": "' + "x" * 500 + '"}\nmore junk\n')
    with acquire_lock(str(lock_path), 1, "p"):
        assert json.loads(lock_path.read_bytes())["plan_id"] == "p"


def test_timeout_error_names_path_timeout_attempts_and_holder(tmp_path, child_holder):
    lock_path = tmp_path / "lock"
    pid = child_holder(lock_path, "plan-held-by-child")
    with pytest.raises(LockingError) as info:
        acquire_lock(str(lock_path), 0.3, "plan-waiting")
    err = info.value
    assert not isinstance(err, LockUnavailableError)
    assert err.error_id == "E_LOCKING" and err.exit_code == 30
    assert err.attempts >= 2
    assert 300.0 <= err.wait_ms < 2000.0
    msg = str(err)
    assert str(lock_path) in msg
    assert "lock_timeout=0.3s" in msg
    assert "%d attempts" % err.attempts in msg
    assert "pid %d" % pid in msg
    assert socket.gethostname() in msg
    assert "plan-held-by-child" in msg
    assert err.holder["pid"] == pid
    assert err.path == str(lock_path)


@pytest.mark.parametrize("content", [b"", b"\x00\xff{garbled", b"[1, 2]\n", b"\n\n"])
def test_timeout_error_tolerates_empty_or_garbled_holder(tmp_path, child_holder, content):
    lock_path = tmp_path / "lock"
    child_holder(lock_path, "plan-x")
    with open(str(lock_path), "wb") as f:  # overwrite the child's record behind its back
        f.write(content)
    with pytest.raises(LockingError) as info:
        acquire_lock(str(lock_path), 0, "p")
    assert "holder unknown" in str(info.value)
    assert info.value.holder is None


def test_parse_holder_reads_only_the_first_line():
    assert parse_holder(b'{"pid": 1}\ntrailing garbage') == {"pid": 1}
    assert parse_holder(b"not json") is None


# --- release and the lock file's life ---------------------------------------------------

def test_release_is_idempotent_keeps_the_file_and_clears_the_record(tmp_path):
    lock_path = tmp_path / "lock"
    handle = acquire_lock(str(lock_path), 1, "p")
    inode = lock_path.stat().st_ino
    handle.release()
    handle.release()
    assert not handle.held
    # Never unlinked: a recreated file would let two holders flock different inodes.
    assert lock_path.stat().st_ino == inode
    assert lock_path.read_bytes() == b""
    fd = hold_in_this_process(lock_path)  # really released: a non-blocking flock succeeds
    os.close(fd)


def test_context_manager_releases_on_exception(tmp_path):
    lock_path = tmp_path / "lock"
    with pytest.raises(RuntimeError):
        with acquire_lock(str(lock_path), 1, "p") as handle:
            assert isinstance(handle, LockHandle)
            raise RuntimeError("boom")
    assert not handle.held
    acquire_lock(str(lock_path), 0, "p2").release()


def test_lock_fd_is_close_on_exec(tmp_path):
    with acquire_lock(str(tmp_path / "lock"), 1, "p") as handle:
        assert fcntl.fcntl(handle._fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_symlink_at_lock_path_is_refused_not_treated_as_unavailable(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "lock").symlink_to(target)
    with pytest.raises(LockingError) as info:
        acquire_lock(str(tmp_path / "lock"), 0, "p")
    assert not isinstance(info.value, LockUnavailableError)
    assert target.read_text() == ""


def test_directory_at_lock_path_is_a_locking_error(tmp_path):
    (tmp_path / "lock").mkdir()
    with pytest.raises(LockingError) as info:
        acquire_lock(str(tmp_path / "lock"), 0, "p")
    assert not isinstance(info.value, LockUnavailableError)


# --- unavailable: a real read-only tmpfs ------------------------------------------------

@pytest.fixture
def ro_mount(tmp_path):
    """A real tmpfs holding an existing lock file, remounted read-only."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    assert os.geteuid() == 0, "mounting tmpfs needs root: run the tests as root"
    subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)])
    try:
        (mnt / "existing.lock").write_bytes(b"")
        subprocess.check_call(["mount", "-o", "remount,ro", str(mnt)])
        yield mnt
    finally:
        subprocess.check_call(["umount", str(mnt)])


@pytest.mark.parametrize("relpath", ["new.lock", "missing/dir/new.lock", "existing.lock"])
def test_read_only_location_raises_lock_unavailable(ro_mount, relpath):
    lock_path = str(ro_mount / relpath)
    with pytest.raises(LockUnavailableError) as info:
        acquire_lock(lock_path, 1, "p")
    err = info.value
    assert err.errno == errno.EROFS
    assert err.error_id == "E_LOCKING"
    assert lock_path in str(err)


# --- mutual exclusion stress: real processes, real flock --------------------------------

STRESS_PROCS = 8
STRESS_ROUNDS = 100
CONTROL_ROUNDS = 20
STRESS_TIMEOUT = 15.0


def _stress_worker(lock_path, out_path, start_barrier, locked, wait):
    lines = []
    start_barrier.wait(10)
    began = time.monotonic()
    for i in range(STRESS_ROUNDS if locked else CONTROL_ROUNDS):
        if locked:
            handle = acquire_lock(lock_path, STRESS_TIMEOUT, "plan-%d-%d" % (os.getpid(), i), wait=wait)
            attempts, wait_ms = handle.attempts, handle.wait_ms
        else:
            handle, attempts, wait_ms = None, 1, 0.0
        enter = time.monotonic()
        time.sleep(0.001 if locked else 0.02)  # the critical section
        leave = time.monotonic()
        if handle is not None:
            handle.release()
        lines.append("%r %r %d %r\n" % (enter, leave, attempts, wait_ms))
    lines.append("total %r\n" % (time.monotonic() - began))
    with open(out_path, "w") as f:
        f.writelines(lines)


def run_workers(tmp_path, procs, locked, wait="block"):
    lock_path = str(tmp_path / "lock")
    barrier = MP.Barrier(procs)
    workers = []
    for n in range(procs):
        out = str(tmp_path / ("worker-%d.txt" % n))
        p = MP.Process(target=_stress_worker, args=(lock_path, out, barrier, locked, wait))
        p.start()
        workers.append((p, out))
    per_worker = []
    for p, out in workers:
        p.join(60)
        assert p.exitcode == 0, "worker %d failed or hung (exitcode %r)" % (p.pid, p.exitcode)
        with open(out) as f:
            rows = f.read().splitlines()
        total = float(rows.pop().split()[1])
        per_worker.append((total, [(float(a), float(b), int(c), float(d))
                                   for a, b, c, d in (r.split() for r in rows)]))
    return per_worker


def overlapping_sections(intervals):
    """Pairs of critical sections that overlap in time (sorted by entry)."""
    overlaps = []
    latest = None
    for enter, leave in sorted(intervals):
        if latest is not None and enter < latest[1]:
            overlaps.append((latest, (enter, leave)))
        if latest is None or leave > latest[1]:
            latest = (enter, leave)
    return overlaps


@pytest.mark.parametrize("wait", ["block", "poll"])
def test_no_two_processes_are_ever_inside_the_lock_together(tmp_path, wait):
    per_worker = run_workers(tmp_path, STRESS_PROCS, locked=True, wait=wait)
    rows = [row for _unused, worker_rows in per_worker for row in worker_rows]
    assert len(rows) == STRESS_PROCS * STRESS_ROUNDS
    assert overlapping_sections([(enter, leave) for enter, leave, _unused, _unused in rows]) == []
    attempts = [a for _unused, _unused, a, _unused in rows]
    assert all(a >= 1 for a in attempts)
    assert sum(attempts) >= len(rows)
    # Under this much contention somebody must have retried; all-ones means no contention
    # was exercised and the test proves nothing.
    assert sum(attempts) > len(rows)
    if wait == "block":
        # Taken at once (1) or by one blocking wait (2): the kernel queue, not retries.
        assert set(attempts) <= {1, 2}
    for total, worker_rows in per_worker:
        assert all(wait_ms <= STRESS_TIMEOUT * 1000.0 + 50.0 for _unused, _unused, _unused, wait_ms in worker_rows)
        assert total <= STRESS_ROUNDS * STRESS_TIMEOUT
        assert total < 30.0


def test_overlap_check_catches_processes_without_the_lock(tmp_path):
    # Control: the same harness without the lock must report overlaps, or the check above
    # could pass vacuously.
    per_worker = run_workers(tmp_path, 2, locked=False)
    rows = [row for _unused, worker_rows in per_worker for row in worker_rows]
    assert overlapping_sections([(enter, leave) for enter, leave, _unused, _unused in rows]) != []
