# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: preflight cost against the number of old journals in state_dir (issue 13.4).

Run as a script: ``.venv/bin/python tests/bench/bench_journals.py [--journals 20000] [--repeats 5]``.
Prints, for one safe_preflight (engine in-process, 3 links), the median time with

  empty          an empty state directory
  legacy         N finished journals in <state_dir>/journal/ as 0.1.0 left them (check mode cannot move them)
  migrated       the same after one safe_apply retired them into journal/done/ (and expired all but the
                 newest JOURNAL_RETENTION)
  retired        N finished journals already in journal/done/ (e.g. many plans within the retention)

and the ratio of each to `empty`.  Asserts nothing about time (SPEC section 9).
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import runpy
import shutil
import statistics
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
runpy.run_path(os.path.join(REPO, "tests", "conftest.py"))
sys.path.insert(0, os.path.join(REPO, "tests"))

from sandbox import make_sandbox  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply, preflight, restore  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402


def _write_journals(jdir, n, retired):
    """n finished apply journals (begin with 3 actions, 3 progress records, end committed)."""
    os.makedirs(jdir, exist_ok=True)
    now = int(time.time() * 1000) - n
    for i in range(n):
        run_id, plan_id = str(uuid.uuid4()), str(uuid.uuid4())
        actions = [{"action_id": str(uuid.uuid4()), "target": "/usr/bin/t%d" % k, "link_text": "/opt/p/t%d" % k,
                    "backup_ms": now + i, "prior_kind": "file"} for k in range(3)]
        begin = {"record": "begin", "kind": "apply", "plan_id": plan_id, "run_id": run_id, "tag": "switchyard",
                 "ts_ms": now + i, "backup_dir_rel": None, "actions": actions}
        recs = [begin] + [{"record": "action", "action_id": a["action_id"], "state": "swapped"} for a in actions]
        recs.append({"record": "end", "state": "committed"})
        name = jr.done_name(begin) if retired else run_id + jr.JOURNAL_SUFFIX
        with open(os.path.join(jdir, name), "w") as f:
            f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))


def _count(jdir):
    top = [n for n in os.listdir(jdir) if n.endswith(jr.JOURNAL_SUFFIX)] if os.path.isdir(jdir) else []
    done = os.path.join(jdir, jr.DONE_DIR)
    return len(top), (len(os.listdir(done)) if os.path.isdir(done) else 0)


def _time_preflight(sb, links, repeats):
    times = []
    for _i in range(repeats):
        t0 = time.perf_counter()
        rep, err, _w = preflight(Settings(root=sb.root), links=links, fail_on_stop=False)
        times.append(time.perf_counter() - t0)
        assert entries(rep), err
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--journals", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    base = os.path.join(REPO, ".build", "bench-journals-%d" % os.getpid())
    rows = []
    try:
        for case in ("empty", "legacy", "retired"):
            sb = make_sandbox(os.path.join(base, case))
            links = [sb.link(n) for n in ("ls", "cat", "echo")]
            jdir = sb.p("/var/lib/switchyard/journal")
            if case == "legacy":
                _write_journals(jdir, args.journals, retired=False)
            elif case == "retired":
                _write_journals(os.path.join(jdir, jr.DONE_DIR), args.journals, retired=True)
            rows.append((case, _count(jdir), _time_preflight(sb, links, args.repeats)))
            if case == "legacy":
                t0 = time.perf_counter()
                rep, err, _w = apply(Settings(root=sb.root), links)
                t_apply = time.perf_counter() - t0
                assert err is None, err.msg
                assert restore(Settings(root=sb.root), plan_id=rep["plan_id"])[1] is None
                rows.append(("migrated", _count(jdir), _time_preflight(sb, links, args.repeats)))
                print("one-time migration: the first safe_apply over %d legacy journals took %.3f s"
                      % (args.journals, t_apply))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    empty = rows[0][2]
    print("\npreflight (3 links, engine in-process), median of %d; JOURNAL_RETENTION=%d"
          % (args.repeats, jr.JOURNAL_RETENTION))
    print("%-10s %10s %10s %12s %8s" % ("state dir", "journal/", "done/", "preflight s", "x empty"))
    for case, (top, done), t in rows:
        print("%-10s %10d %10d %12.4f %8.2f" % (case, top, done, t, t / empty))


if __name__ == "__main__":
    main()
