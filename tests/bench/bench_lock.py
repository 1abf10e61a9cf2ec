# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the flock lock's waiting strategies side by side. Private to this collection.

Run as a script: ``.venv/bin/python tests/bench/bench_lock.py [--quick]``.  Prints a table,
asserts nothing.  Each contender is a real process taking the real lock.
"""

from __future__ import absolute_import, division, print_function

import multiprocessing
import os
import resource
import runpy
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tests/conftest.py creates <repo>/.build/collections/ansible_collections/switchyard/fs and puts
# it on sys.path; running it keeps one definition of that layout.
runpy.run_path(os.path.join(REPO, "tests", "conftest.py"))

from ansible_collections.switchyard.fs.plugins.module_utils._fs.lock import acquire_lock  # noqa: E402

MP = multiprocessing.get_context("fork")

# name -> acquire_lock keyword arguments.  The polling rows are the same code path with
# wait="poll", so the comparison isolates the waiting strategy.
STRATEGIES = [
    # What the seed replaced: a retry every 25 ms (base == cap, rand() == 1).
    ("fixed 25ms poll", dict(wait="poll", base=0.025, cap=0.025, rand=lambda: 1.0)),
    # The 0.1.0 default: exponential backoff with full jitter, 10 ms doubling to 250 ms.
    ("old jitter 10..250ms", dict(wait="poll", base=0.01, cap=0.25)),
    # Today's fallback where SIGALRM cannot be borrowed (not the main thread, ...).
    ("poll 10..50ms fallbk", dict(wait="poll")),
    # The default: blocking flock, interrupted by ITIMER_REAL at the deadline.
    ("block+alarm (new)", dict()),
]
HOLD_S = 0.002        # short time inside the critical section per acquisition
TARGET_HOLD_S = 0.05  # the hold issue 16's targets are stated for
# THINK_S: time between a release and the next attempt, so a releaser does not simply re-take
# the lock it just dropped on every round
THINK_S = 0.005
TIMEOUT_S = 60.0      # long enough that nobody times out; timeouts are counted anyway


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def jain(values):
    """Jain's fairness index: 1.0 when all equal, 1/n when one process takes everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return (total * total) / (len(values) * squares) if squares else 1.0


def _contender(lock_path, kwargs, rounds, hold, barrier, queue):
    waits, attempts, timeouts = [], 0, 0
    barrier.wait(30)
    for i in range(rounds):
        try:
            handle = acquire_lock(lock_path, TIMEOUT_S, "bench-%d-%d" % (os.getpid(), i), **kwargs)
        except Exception:  # a timeout is a data point here, not a crash
            timeouts += 1
            continue
        time.sleep(hold)
        handle.release()
        waits.append(handle.wait_ms)
        attempts += handle.attempts
        time.sleep(THINK_S)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put((waits, attempts, timeouts, usage.ru_utime + usage.ru_stime))


def contended(lock_dir, kwargs, procs, rounds, hold):
    lock_path = os.path.join(lock_dir, "contended-%d-%d.lock" % (procs, hold * 1000))
    barrier = MP.Barrier(procs + 1)
    queue = MP.Queue()
    workers = [MP.Process(target=_contender, args=(lock_path, kwargs, rounds, hold, barrier, queue))
               for _unused in range(procs)]
    for w in workers:
        w.start()
    barrier.wait(30)
    start = time.monotonic()
    results = [queue.get(timeout=300) for _unused in workers]
    elapsed = time.monotonic() - start
    for w in workers:
        w.join(30)
    waits = sorted(w for r in results for w in r[0])
    acquisitions = len(waits)
    return dict(
        acq_per_s=acquisitions / elapsed,
        p50=percentile(waits, 0.50), p99=percentile(waits, 0.99), max=waits[-1] if waits else float("nan"),
        jain=jain([sum(r[0]) for r in results]),
        attempts_per_acq=sum(r[1] for r in results) / float(acquisitions or 1),
        cpu_s=sum(r[3] for r in results),
        timeouts=sum(r[2] for r in results),
        acquisitions=acquisitions, elapsed=elapsed,
    )


def uncontended(lock_dir, rounds):
    """Per strategy (wall p50, wall p99, wall max, cpu p99) in microseconds; strategies
    interleaved so that cache warmth and frequency scaling hit them alike.  The CPU time
    (this thread's) leaves out preemption, which dominates the wall-clock tail on a busy
    machine."""
    lock_path = os.path.join(lock_dir, "uncontended.lock")
    acquire_lock(lock_path, TIMEOUT_S, "warmup").release()
    samples = dict((name, ([], [])) for name, _unused in STRATEGIES)
    for i in range(rounds):
        for name, kwargs in STRATEGIES:
            c0 = time.thread_time()
            t0 = time.perf_counter()
            handle = acquire_lock(lock_path, TIMEOUT_S, "bench-%d" % i, **kwargs)
            t1 = time.perf_counter()
            c1 = time.thread_time()
            handle.release()
            samples[name][0].append((t1 - t0) * 1e6)
            samples[name][1].append((c1 - c0) * 1e6)
    result = {}
    for name, (wall, cpu) in samples.items():
        wall.sort()
        cpu.sort()
        result[name] = (percentile(wall, 0.50), percentile(wall, 0.99), wall[-1], percentile(cpu, 0.99))
    return result


def _verdicts(rows, unc):
    """Lines saying which of issue 16's targets the new strategy meets in this run."""
    lines = []
    new, fixed = STRATEGIES[-1][0], STRATEGIES[0][0]
    for (name, procs, hold), r in sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        if name != new or hold != TARGET_HOLD_S:
            continue
        f = rows[(fixed, procs, hold)]
        checks = [
            ("jain %.3f >= 0.95" % r["jain"], r["jain"] >= 0.95),
            ("p99 %.0f <= fixed %.0f ms" % (r["p99"], f["p99"]), r["p99"] <= f["p99"]),
            ("max %.0f <= fixed %.0f ms" % (r["max"], f["max"]), r["max"] <= f["max"]),
            ("timeouts %d == 0" % r["timeouts"], r["timeouts"] == 0),
        ]
        lines.append("%d contenders, %.0f ms holds: %s" % (procs, hold * 1000, "; ".join(
            "%s %s" % (text, "ok" if ok else "MISSED") for text, ok in checks)))
    p50_us, p99_us, _unused, cpu99_us = unc[new]
    lines.append("uncontended: wall p50 %.1f us < 1000 us %s; cpu p99 %.1f us < 1000 us %s; wall p99 %.1f us "
                 "< 1000 us %s (wall p99 = preemption on a busy machine; same code path for every strategy)"
                 % (p50_us, "ok" if p50_us < 1000 else "MISSED", cpu99_us, "ok" if cpu99_us < 1000 else "MISSED",
                    p99_us, "ok" if p99_us < 1000 else "MISSED"))
    return lines


def main(argv):
    quick = "--quick" in argv
    scale = 0.34 if quick else 1.0
    # (processes, rounds each, hold seconds).  The 50 ms rows are issue 16's targets: a real
    # apply holds the lock far longer than it takes to poll it.  The 2 ms rows show a lock
    # handed over hundreds of times a second.
    plan = [(8, int(12 * scale), TARGET_HOLD_S), (32, int(6 * scale), TARGET_HOLD_S),
            (8, int(40 * scale), HOLD_S), (32, int(12 * scale), HOLD_S)]
    lock_dir = tempfile.mkdtemp(prefix="switchyard-bench-lock-")
    rows = {}
    began = time.monotonic()
    try:
        print("flock lock benchmark: python %s, %d CPUs, think %.0f ms between rounds, lock dir %s"
              % (sys.version.split()[0], os.cpu_count() or 0, THINK_S * 1000, lock_dir))
        print()
        header = ("%-20s %5s %7s %6s %8s %8s %8s %8s %6s %8s %7s %4s"
                  % ("strategy", "procs", "hold ms", "acq", "acq/s", "p50 ms", "p99 ms", "max ms",
                     "jain", "att/acq", "cpu s", "t/o"))
        print(header)
        print("-" * len(header))
        for procs, rounds, hold in plan:
            for name, kwargs in STRATEGIES:
                r = rows[(name, procs, hold)] = contended(lock_dir, kwargs, procs, rounds, hold)
                print("%-20s %5d %7.0f %6d %8.1f %8.1f %8.1f %8.1f %6.3f %8.2f %7.2f %4d"
                      % (name, procs, hold * 1000, r["acquisitions"], r["acq_per_s"], r["p50"], r["p99"],
                         r["max"], r["jain"], r["attempts_per_acq"], r["cpu_s"], r["timeouts"]))
                sys.stdout.flush()
        print()
        n = int(5000 * scale)
        unc = uncontended(lock_dir, n)
        print("uncontended acquire latency over %d acquisitions (acquire_lock only, release excluded)" % n)
        print("%-20s %9s %9s %9s %11s" % ("strategy", "p50 us", "p99 us", "max us", "cpu p99 us"))
        for name, _unused in STRATEGIES:
            p50, p99, mx, cpu99 = unc[name]
            print("%-20s %9.1f %9.1f %9.1f %11.1f" % (name, p50, p99, mx, cpu99))
        print()
        print("targets for %r against %r (issue 16):" % (STRATEGIES[-1][0], STRATEGIES[0][0]))
        for line in _verdicts(rows, unc):
            print("  " + line)
        print()
        print("total run time %.0f s" % (time.monotonic() - began))
    finally:
        shutil.rmtree(lock_dir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
