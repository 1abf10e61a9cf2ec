"""SIGKILL matrix: a 120-link apply killed at every fault point the engine exposes, during its own
rollback, during recovery and during restore, and at random moments.

After each kill: every target is the original entry or a link to its source, every sidecar
parses, every swapped target has a complete backup of its original bytes.  Then the next run of
some module (apply, prune, restore plan_id, preflight + prune, in rotation) recovers by itself,
leaving no unfinished journal, temp name or incomplete backup, and every original byte is
restored by safe_restore.

SWITCHYARD_CRASH_SEED fixes the random kill times (printed in every failure message).
"""
import os
import random
import time

import pytest

import crashkit as ck

N = 120  # targets per sandbox (conftest.N_TARGETS): 118 files, 2 symlinks
# syncs of a first apply of N links (group commit, all targets in one directory): one syncfs for the
# 4 new state directories (covering the journal file too), the journal directory, one syncfs of the
# backups, the backup directory, the backups-durable journal record, the target directory after all
# renames, the commit record.
FSYNCS = 1 + 1 + 1 + 1 + 1 + 1 + 1

FAULT_POINTS = (
    ["after_journal"]
    + ["after_backup_payload:%d" % n for n in (1, 2, 59, 118, 120)]
    + ["after_sidecar:%d" % n for n in (1, 60, 120)]
    + ["before_rename:%d" % n for n in (1, 61, 120)]
    + ["after_rename:%d" % n for n in (1, 2, 60, 119, 120)]
    + ["backups_durable"]  # every backup durable and recorded, no swap yet
    # 1: the backups-durable record; 2..N + 1: progress records; N + 2: the commit record itself
    + ["mid_journal:%d" % n for n in (1, 2, 60, 120, N + 2)]
    + ["before_fsync:%d" % n for n in range(1, FSYNCS + 1)]
)

SEED = int(os.environ.get("SWITCHYARD_CRASH_SEED", int(time.time()) % 100000))
RECOVERERS = ("apply", "prune", "restore_plan", "preflight_then_prune")


def _plan_id_of_journal(sb):
    for _name, recs in ck.journals(sb):
        if recs and recs[0].get("record") == "begin":
            return recs[0]["plan_id"]
    return None


def recover_and_verify(sb, how, context):
    """Run the next module, check the root is consistent, and that every original byte comes back."""
    interrupted = ck.unfinished(sb)
    if how == "preflight_then_prune":
        before = sorted(ck.walk_names(sb.root))
        pre = ck.run_engine(sb, "preflight")
        if interrupted:
            rec = pre.events("recovery")
            assert rec and all(e["dry_run"] for e in rec), context
        assert sorted(ck.walk_names(sb.root)) == before, "preflight must not mutate (%s)" % context
        how = "prune"
    if how == "restore_plan":
        plan_id = _plan_id_of_journal(sb)
        res = ck.run_engine(sb, "restore", plan_id=plan_id) if plan_id else ck.run_engine(sb, "prune")
    else:
        res = ck.run_engine(sb, how)
    assert res.error_id is None, "%s: the recovering %s failed: %r" % (context, how, res)
    if interrupted:
        rec = res.events("recovery")
        assert [e for e in rec if e["decision"] == "success"], "%s: no recovery event after %s" % (context, how)
        assert res.report["recovery"] and all(r["ok"] for r in res.report["recovery"]), context
    kind = ck.check_consistent(sb)
    if how == "apply":
        assert kind == "link", context
    if kind == "link":
        res = ck.run_engine(sb, "restore")
        assert res.error_id is None, "%s: restore after recovery failed: %r" % (context, res)
        assert ck.check_consistent(sb) == "original", context
    return kind


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_at_fault_point_leaves_old_or_new_and_next_run_recovers(sandbox, point):
    res = ck.run_engine(sandbox, "apply", kill_at=point)
    assert res.killed, "fault point %s was never reached: %r" % (point, res)
    ck.check_after_kill(sandbox)
    recover_and_verify(sandbox, RECOVERERS[FAULT_POINTS.index(point) % len(RECOVERERS)], point)


# A failed fsync of the target directory after all N swaps starts a rollback; the kill lands inside it.
# after_rename counts the N swaps first, then one per rollback restore; mid_journal counts the
# backups-durable record and N progress records, then the rollback's end record.
FAIL_AT_SWAP_FLUSH = FSYNCS - 1


@pytest.mark.parametrize("point", ["after_rename:%d" % (N + 1), "after_rename:158", "mid_journal:%d" % (N + 2)])
def test_kill_during_rollback_is_recovered(sandbox, point):
    res = ck.run_engine(sandbox, "apply", kill_at=point, fail_fsync=FAIL_AT_SWAP_FLUSH)
    assert res.killed, "%s not reached during rollback: %r" % (point, res)
    ck.check_after_kill(sandbox)
    assert recover_and_verify(sandbox, "prune", point) == "original"


@pytest.mark.parametrize("second", ["after_rename:30", "mid_journal:1", "before_fsync:5"])
def test_kill_during_recovery_is_recovered_by_the_run_after(sandbox, second):
    assert ck.run_engine(sandbox, "apply", kill_at="after_rename:60").killed
    res = ck.run_engine(sandbox, "prune", kill_at=second)
    assert res.killed, "recovery never reached %s: %r" % (second, res)
    ck.check_after_kill(sandbox)
    assert recover_and_verify(sandbox, "apply", "recovery killed at %s" % second) == "link"


@pytest.mark.parametrize("point", ["before_rename:40", "after_rename:40", "before_fsync:100"])
def test_kill_during_restore_leaves_old_or_new(sandbox, point):
    assert ck.run_engine(sandbox, "apply").error_id is None
    res = ck.run_engine(sandbox, "restore", kill_at=point)
    assert res.killed, res
    ck.check_after_kill(sandbox)
    res = ck.run_engine(sandbox, "restore")
    assert res.error_id is None, res
    assert ck.check_consistent(sandbox) == "original", point


def _journal_dir(sb):
    return os.path.join(sb.root, "var", "lib", "switchyard", "journal")


def _calibrate(sb):
    """(seconds until the first journal appears, seconds until the process exits) of a whole apply."""
    jdir = _journal_dir(sb)
    before = set(os.listdir(jdir)) if os.path.isdir(jdir) else set()
    t0 = time.monotonic()
    proc = ck.start_engine(sb, "apply", quiet=True)
    t_journal = None
    while proc.poll() is None:
        if t_journal is None and os.path.isdir(jdir) and set(os.listdir(jdir)) - before:
            t_journal = time.monotonic() - t0
        time.sleep(0.002)
    t_exit = time.monotonic() - t0
    proc.communicate()
    assert proc.returncode == 0
    assert ck.run_engine(sb, "restore").error_id is None
    return (t_journal or t_exit * 0.5), t_exit


def _kill_at_random(proc, sb, rng, window):
    """SIGKILL proc at a random instant: a quarter anywhere in its life (imports included), the rest
    within the mutation phase, timed from the moment its journal appears."""
    t_journal, t_exit = window
    if rng.random() < 0.25:
        time.sleep(rng.uniform(0.0, t_exit * 1.1))
    else:
        jdir = _journal_dir(sb)
        before = set(os.listdir(jdir)) if os.path.isdir(jdir) else set()
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if os.path.isdir(jdir) and [n for n in set(os.listdir(jdir)) - before if n[0] != "."]:
                break  # the journal has its real name: mutations are starting
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, max(0.01, t_exit - t_journal)))
    proc.kill()
    proc.communicate()


@pytest.mark.parametrize("batch", range(3))
def test_random_kills_of_apply(sandbox, batch):
    """10 kills per batch at random instants of a whole apply process.  At least one must land inside a plan
    (leave an unfinished journal); on a loaded machine the calibrated window drifts, so up to 20 more kills are
    made until one has (each of them is checked and recovered like the first 10)."""
    rng = random.Random(SEED * 10 + batch)
    window = _calibrate(sandbox)
    landed = 0
    for i in range(30):
        if i >= 10 and landed:
            break
        ctx = "seed=%d batch=%d kill=%d" % (SEED, batch, i)
        proc = ck.start_engine(sandbox, "apply", quiet=True)
        _kill_at_random(proc, sandbox, rng, window)
        ck.check_after_kill(sandbox)
        landed += bool(ck.unfinished(sandbox))
        recover_and_verify(sandbox, RECOVERERS[i % len(RECOVERERS)], ctx)
    assert landed >= 1, "no random kill landed inside a plan (seed=%d)" % SEED


def test_random_kills_of_apply_and_of_its_recovery(sandbox):
    """8 plans killed at a random action, each recovery killed at a random instant too."""
    rng = random.Random(SEED * 10 + 9)
    window = _calibrate(sandbox)
    for i in range(8):
        ctx = "seed=%d kill=%d" % (SEED, i)
        assert ck.run_engine(sandbox, "apply", kill_at="after_rename:%d" % rng.randint(1, N)).killed
        proc = ck.start_engine(sandbox, "prune", quiet=True)
        time.sleep(rng.uniform(0.0, window[1] * 0.8))
        proc.kill()
        proc.communicate()
        ck.check_after_kill(sandbox)
        recover_and_verify(sandbox, RECOVERERS[i % len(RECOVERERS)], ctx)
