"""A package manager upgrades a target while apply and restore run (issue 12 section 4).

A separate writer process installs a new version of usr/bin/b once per cycle, after a random delay
spread over the time apply + restore take, either the way dpkg does (write '.b.dpkg-new', rename it
over b) or in place (open b without following a symlink, overwrite every byte; skipped while b is a
link).  After each cycle, with the writer finished, these invariants must hold (a violation is
counted, the test puts the lost bytes back by hand, and the next cycle is a fresh trial):

  A  no lost update: the newest bytes b ever held (the original, or the writer's latest installed
     version) are recoverable: b is a regular file holding them, or a backup of b whose payload
     matches its sidecar's payload_hash holds them;
  B  nothing invented: when b is a regular file, it holds the original or a version the writer wrote;
  C  a restore that reports b changed produced exactly the backup's recorded bytes (after_hash equals
     the backup's payload_hash), checked for every restore the writer's write did not overlap;
and no engine call raises anything but a SwitchyardError.
"""
import hashlib
import os
import random
import time

import pytest

import racekit as rk
from ansible_collections.switchyard.fs.plugins.module_utils import engine
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

pytestmark = pytest.mark.xdist_group("races")

NAME = "b"


def call(tally, op, fn):
    """(report, start, end) of one engine call; report None when it raised."""
    start = time.monotonic_ns()
    try:
        rep, err, _w = fn()
    except engine.SwitchyardError as e:
        tally.outcome(op, e.error_id + "(raised)", e.msg)
        return None, start, time.monotonic_ns()
    except Exception as e:  # noqa: broad-except -- exactly what this suite looks for
        tally.exception(op, e)
        return None, start, time.monotonic_ns()
    tally.outcome(op, err.error_id if err is not None else None, err.msg if err is not None else None)
    return rep, start, time.monotonic_ns()


@pytest.mark.parametrize("how", ["rename", "inplace"])
def test_concurrent_writer_loses_no_bytes(base, how):
    rr = rk.RaceRoot(os.path.join(base, "root"))
    settings = engine.Settings(root=rr.root, lock_timeout=30)
    link = [l for l in rr.links if l["target"].endswith("/" + NAME)]
    target = [link[0]["target"]]
    size = rr.SIZES[NAME]

    # The writer's delay is spread over what apply + restore take here (calibration, not an assertion).
    warm = rk.Tally()
    t0 = time.monotonic()
    for _i in range(5):
        call(warm, "apply", lambda: engine.apply(settings, link))
        call(warm, "restore", lambda: engine.restore(settings, targets=target))
    window_us = int((time.monotonic() - t0) / 5 * 1e6 * 1.2)
    assert warm.summary() == "apply:ok=5, restore:ok=5", warm.summary()

    tdir = rk.open_dir(rr.host("usr/bin"))
    jdir = rk.open_dir(rr.host("var/lib/switchyard/journal"))
    newest, newest_bytes = rr.originals[NAME], rr.data[NAME]
    legit = {newest}
    tally = rk.Tally()
    rng = random.Random(how)
    counts = {"installed": 0, "overlapped": 0, "overlapped, not judged": 0, "restores checked for C": 0}
    writer = rk.Writer(rr.host("usr/bin"), NAME, how, size)
    try:
        for i in range(rk.ITERATIONS):
            version = i + 1
            vhash = hashlib.sha256(rk.version_bytes(version, size)).hexdigest()
            legit.add(vhash)
            writer.start(version, rng.randrange(window_us))
            call(tally, "apply", lambda: engine.apply(settings, link))
            rep, r_start, r_end = call(tally, "restore", lambda: engine.restore(settings, targets=target))
            got, outcome, w_start, w_end = writer.result()
            assert got == version
            wrote = outcome != "skipped"
            if wrote:
                newest, newest_bytes = vhash, rk.version_bytes(version, size)
                counts[outcome] += 1
            if rep is not None and not (wrote and w_start < r_end and w_end > r_start):
                counts["restores checked for C"] += 1
                for r in entries(rep):
                    if r.get("result") == "changed" and r.get("after_hash") != r["backup"].get("payload_hash"):
                        tally.violation("C: restore wrote bytes that differ from the backup's recorded hash",
                                        "cycle %d: after %s, backup %s" % (i, r.get("after_hash"), r["backup"]))
            state = rk.target_state(tdir, NAME)
            repair = False
            if not (state[:2] == ("file", newest) or newest in rk.verified_hashes(tdir, NAME)):
                repair = True
                if outcome == "overlapped":
                    # The inode written was swapped out during the write: the write may have gone through
                    # an fd opened before the swap into what is now the hard-link backup (outside the
                    # model, docs/security.md).  Not judged; repaired like a violation.
                    counts["overlapped, not judged"] += 1
                else:
                    tally.violation("A: the newest bytes of the target are neither in it nor in a verified backup",
                                    "cycle %d: wrote version %d (%s), target is %r" % (i, version, outcome, state[:2]))
            if state[0] == "file" and state[1] not in legit:
                repair = True
                tally.violation("B: the target holds bytes nobody wrote", "cycle %d (%s): %r" % (i, outcome, state))
            if repair:
                # Counted; put the newest bytes back by hand so that every cycle is a fresh trial.
                rk.put_back(tdir, NAME, newest_bytes)
            call(tally, "prune", lambda: engine.prune(settings, target, retention_count=5))
            rk.drop_finished_journals(jdir)
    finally:
        writer.close()
    unverifiable = sum(1 for _s, meta, digest in rk.backups_at(tdir, NAME)
                       if digest is not None and meta.get("payload_hash") != digest)
    os.close(tdir)
    os.close(jdir)
    print("\nwriter %s: %d cycles, %s, %d backups left that no longer verify; %s%s" % (
        how, rk.ITERATIONS, ", ".join("%s %d" % kv for kv in sorted(counts.items())), unverifiable, tally.summary(),
        tally.messages()))
    assert not tally.failures(), "writer %s, %d cycles (%s):\n%s" % (
        how, rk.ITERATIONS, ", ".join("%s %d" % kv for kv in sorted(counts.items())), "\n\n".join(tally.failures()))
    # The race really ran: the writer installed versions, and C was checked on most restores.
    assert counts["installed"] and counts["restores checked for C"] >= rk.ITERATIONS // 2, counts
