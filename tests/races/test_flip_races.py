"""A separate process flips a directory inside root between the real directory and a symlink out of
root, in a tight loop, while this process runs apply / restore / prune cycles through the engine
facade.  SPEC section 10: nothing outside root is opened, written or removed (an inotify watch and a
byte/stat comparison of the decoy tree the symlinks point to); SPEC 4.7: every original byte stays
recoverable.  Engine calls may fail with a typed error under the race, never with anything else.

SWITCHYARD_RACE_ITERATIONS sets the cycles per mode (default 1000; docs/security.md has the long run).
"""
import os
import shutil

import pytest

import racekit as rk
from ansible_collections.switchyard.fs.plugins.module_utils import engine
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

pytestmark = pytest.mark.xdist_group("races")

BACKUP_DIR = "/var/backups/sy"

# mode -> (the directory the flipper flips, policy)
MODES = {
    "target_parent": ("usr/bin", {}),
    "intermediate": ("usr", {}),
    "backup_dir": (BACKUP_DIR, {"backup_dir": BACKUP_DIR}),
    "source_dir": ("opt/prov/bin", {}),
    "state_dir": ("var/lib/switchyard", {}),
    "lock_dir": ("run/lock", {}),  # the side path of the default lock_path
}


def run_op(settings, rr, op, tally):
    """One engine call; returns its report (None when it raised)."""
    try:
        if op == "apply":
            rep, err, _w = engine.apply(settings, rr.links)
        elif op == "restore":
            rep, err, _w = engine.restore(settings, targets=rr.targets)
        else:
            rep, err, _w = engine.prune(settings, rr.targets, retention_count=2)
    except engine.SwitchyardError as e:
        tally.outcome(op, e.error_id + "(raised)", e.msg)
        return None
    except Exception as e:  # noqa: broad-except -- exactly what this suite looks for
        tally.exception(op, e)
        return None
    tally.outcome(op, err.error_id if err is not None else None, err.msg if err is not None else None)
    if op == "restore":
        for r in entries(rep):
            if r.get("result") == "changed" and r.get("after_hash") != r["backup"].get("payload_hash"):
                tally.violation("restore wrote bytes that differ from the backup's recorded hash",
                                "%s: after %s, backup %s" % (r["path"], r.get("after_hash"), r["backup"]))
    return rep


def cycle(settings, rr, tally):
    for op in ("apply", "restore", "prune"):
        run_op(settings, rr, op, tally)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_directory_flipped_out_of_root(base, mode):
    rel, policy = MODES[mode]
    rr = rk.RaceRoot(os.path.join(base, "root"))
    settings = engine.Settings(root=rr.root, policy=policy, lock_timeout=30)
    warm = rk.Tally()
    cycle(settings, rr, warm)
    cycle(settings, rr, warm)
    assert warm.summary() == "apply:ok=2, prune:ok=2, restore:ok=2" and not warm.failures(), warm.failures()

    # The decoy is a copy of the directory about to be flipped: a plausible tree, so following a
    # flipped link would find names to open, hash, link or delete there.
    flipped = rr.host(rel)
    decoy = os.path.join(base, "decoy")
    shutil.copytree(flipped, decoy, symlinks=True)
    parent, name = os.path.split(flipped)
    evil = [".%s.evil-abs" % name, ".%s.evil-rel" % name]
    os.symlink(decoy, os.path.join(parent, evil[0]))                       # absolute host path
    os.symlink(os.path.relpath(decoy, parent), os.path.join(parent, evil[1]))  # ../../decoy, above root

    bdir_rel = (BACKUP_DIR + "/usr/bin") if "backup_dir" in policy else "usr/bin"
    tdir = rk.open_dir(rr.host("usr/bin"))
    bdir = rk.open_dir(rr.host(bdir_rel))
    jdir = rk.open_dir(rr.host("var/lib/switchyard/journal"))
    before = rk.snapshot(decoy)
    watch = rk.Watch(decoy)
    tally = rk.Tally()
    flipper = rk.Flipper(parent, name, evil, seed=hash(mode) & 0xffff)
    try:
        for i in range(rk.ITERATIONS):
            cycle(settings, rr, tally)
            for p in rk.recoverable_problems(rr, tdir, bdir):
                tally.violation("original bytes not recoverable during the race", "cycle %d: %s" % (i, p))
            rk.drop_finished_journals(jdir)
            if i % 64 == 0:
                watch.drain()
        flips = flipper.stop()
    finally:
        flipper.kill()

    # The flipper has stopped with the real directory in place: one ordinary restore puts every
    # original back (recovering any plan the race left unfinished), and nothing is left behind.
    # Every broken promise is collected, so one run reports all of them with their counts.
    problems = []
    final = rk.Tally()
    run_op(settings, rr, "restore", final)
    if final.outcomes != {"restore:ok": 1} or final.failures():
        problems.append("the restore after the race did not succeed: %s%s %s"
                        % (final.summary(), final.messages(), final.failures()))
    for n in rr.NAMES:
        state = rk.target_state(tdir, n)
        if state != ("file", rr.originals[n], 0o755):
            problems.append("after the race and a restore, %s is %r, not its original" % (n, state[:2]))
        if rr.originals[n] not in rk.verified_hashes(bdir, n):
            problems.append("after the race no verified backup holds %s's original bytes" % n)
    if rk.unfinished_journals(jdir):
        problems.append("unfinished journals after the race: %s" % rk.unfinished_journals(jdir))
    if rk.temps_under(rr.root):
        problems.append("temps left after the race: %s" % rk.temps_under(rr.root)[:5])
    for fd in (tdir, bdir, jdir):
        os.close(fd)

    watch.close()
    after = rk.snapshot(decoy)
    print("\n%s: %d cycles, %d exchanges; %s%s" % (mode, rk.ITERATIONS, flips, tally.summary(), tally.messages()))
    if watch.events:
        problems.append("%d accesses to the decoy outside root, e.g.:\n%s" % (
            len(watch.events), "\n".join(watch.events[:20])))
    if rk.snapshot_diff(before, after):
        problems.append("decoy changed:\n" + "\n".join(rk.snapshot_diff(before, after)[:20]))
    problems.extend(tally.failures())
    assert not problems, "%s, %d cycles:\n%s" % (mode, rk.ITERATIONS, "\n\n".join(problems))
    # The race really ran: the flipper kept flipping, some calls lost it and some got through.
    assert flips >= 2 * rk.ITERATIONS, flips
    ok = sum(v for k, v in tally.outcomes.items() if k.endswith(":ok"))
    failed = sum(tally.outcomes.values()) - ok
    assert ok and failed, "the race never %s: %s" % ("let a call through" if not ok else "hit a call", tally.summary())


def test_the_watch_sees_an_engine_that_walks_paths(base):
    """The detector itself: code that looks paths up by name (instead of through directory handles)
    while usr/bin is a symlink out of root shows up in the inotify watch and in the snapshot."""
    rr = rk.RaceRoot(os.path.join(base, "root"))
    decoy = os.path.join(base, "decoy")
    shutil.copytree(rr.host("usr/bin"), decoy, symlinks=True)
    before = rk.snapshot(decoy)
    watch = rk.Watch(decoy)
    os.rename(rr.host("usr/bin"), rr.host("usr/.bin.real"))
    os.symlink(os.path.relpath(decoy, rr.host("usr")), rr.host("usr/bin"))
    with open(rr.host("usr/bin/a"), "rb") as f:  # hashing the target by its path
        f.read()
    os.chmod(rr.host("usr/bin/b"), 0o700)  # restoring metadata by path
    watch.close()
    assert any(e.startswith("IN_OPEN ") and e.endswith("/decoy/a") for e in watch.events), watch.events
    assert any(e.startswith("IN_ACCESS ") and e.endswith("/decoy/a") for e in watch.events), watch.events
    assert any(e.startswith("IN_ATTRIB ") and e.endswith("/decoy/b") for e in watch.events), watch.events
    diff = rk.snapshot_diff(before, rk.snapshot(decoy))
    assert len(diff) == 1 and diff[0].startswith(os.path.join(decoy, "b") + ":"), diff
