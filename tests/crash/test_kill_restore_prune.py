"""SIGKILL matrix of safe_restore and safe_prune (issue 13.4): killed at every kind of mutating step
(journal write, temp file or temp symlink, rename, unlink, fsync, end record, retirement), at the
first, a middle and the last occurrence.  After each kill the targets are old or restored and every
sidecar parses; the next run of any module finishes the interrupted run: no temp, no unfinished
journal, no orphan sidecar or payload is left, and every original byte is restorable.
"""
import hashlib
import json
import os

import pytest

import crashkit as ck
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

N = 120  # 118 files (t000..t117) and 2 symlinks (t118, t119), restored in that order
# restore after an apply: journal file + directory fsync, per file the temp and the directory, per
# symlink the directory, then the end record.
RESTORE_FSYNCS = 2 + 2 * (N - 2) + 2 + 1
# prune of one old backup per target: journal file + directory, one directory fsync per backup, end record.
PRUNE_FSYNCS = 2 + N + 1

RESTORE_POINTS = (
    ["before_fsync:1", "before_fsync:2", "after_journal"]
    + ["before_fsync:%d" % n for n in (3, 4, 120, 121, RESTORE_FSYNCS - 2, RESTORE_FSYNCS - 1, RESTORE_FSYNCS)]
    + ["before_rename:%d" % n for n in (1, 60, N - 1, N)]  # N - 1, N: a temp *symlink* exists
    + ["after_rename:%d" % n for n in (1, 60, N - 1, N)]
    + ["mid_journal:1", "before_retire"]
)

PRUNE_POINTS = (
    ["before_fsync:1", "before_fsync:2", "after_journal"]
    # payload unlinked, sidecar not yet (odd counts); both gone, directory not yet fsynced (even counts)
    + ["after_unlink:%d" % n for n in (1, 2, 3, 119, 120, 2 * N - 1, 2 * N)]
    + ["before_fsync:%d" % n for n in (3, 62, PRUNE_FSYNCS - 1, PRUNE_FSYNCS)]
    + ["mid_journal:1", "before_retire"]
)
NEXT_RUNS = ("prune", "apply", "restore", "preflight_then_prune")


def orphan_sidecars(sb):
    out = []
    for d, n in ck.walk_names(sb.root):
        if n.endswith(".bak.meta.json") and ck.TEMP_MARKER not in n:
            with open(os.path.join(d, n)) as f:
                meta = json.load(f)
            if meta.get("payload") and not os.path.lexists(os.path.join(d, meta["payload"])):
                out.append(os.path.join(d, n))
    return out


def check_clean(sb, context):
    assert not ck.unfinished(sb), "%s: unfinished journals %s" % (context, ck.unfinished(sb))
    assert not ck.temps(sb), "%s: temps left %s" % (context, ck.temps(sb)[:5])
    assert not ck.orphan_payloads(sb), "%s: payloads without sidecar %s" % (context, ck.orphan_payloads(sb)[:5])
    assert not orphan_sidecars(sb), "%s: sidecars without payload %s" % (context, orphan_sidecars(sb)[:5])


def check_every_byte_restorable(sb, context):
    """Every target has a complete backup that holds exactly its original."""
    bks = ck.backups(sb)
    for rel, orig in sb.originals.items():
        ok = False
        for path, meta in bks.get(rel, []):
            payload = os.path.join(os.path.dirname(path), meta["payload"])
            if orig[0] == "file" and meta.get("payload_hash") == orig[1] and os.path.isfile(payload):
                with open(payload, "rb") as f:
                    ok = hashlib.sha256(f.read()).hexdigest() == orig[1]
            elif orig[0] == "symlink":
                ok = meta.get("prior_link_target") == orig[1] and os.path.islink(payload)
            if ok:
                break
        assert ok, "%s: no complete backup of %s holds its original" % (context, rel)


def next_run(sb, how, context):
    """The next module run recovers whatever the kill left; then everything is clean."""
    interrupted = ck.unfinished(sb)
    if how == "preflight_then_prune":
        before = sorted(ck.walk_names(sb.root))
        pre = ck.run_engine(sb, "preflight")
        assert pre.error_id is None, pre
        assert sorted(ck.walk_names(sb.root)) == before, "%s: preflight mutated" % context
        how = "prune"
    res = ck.run_engine(sb, how)
    assert res.error_id is None, "%s: the next %s failed: %r" % (context, how, res)
    if interrupted:
        assert res.report["recovery"] and all(r["ok"] for r in res.report["recovery"]), context
    check_clean(sb, context)


@pytest.mark.parametrize("point", RESTORE_POINTS)
def test_kill_restore_at_every_mutating_step(sandbox, point):
    assert ck.run_engine(sandbox, "apply").error_id is None
    res = ck.run_engine(sandbox, "restore", kill_at=point)
    assert res.killed, "fault point %s was never reached: %r" % (point, res)
    ck.check_after_kill(sandbox)
    how = NEXT_RUNS[RESTORE_POINTS.index(point) % len(NEXT_RUNS)]
    next_run(sandbox, how, "restore killed at %s, next %s" % (point, how))
    check_every_byte_restorable(sandbox, point)
    res = ck.run_engine(sandbox, "restore")
    assert res.error_id is None, res
    assert ck.check_consistent(sandbox) == "original", point


@pytest.mark.parametrize("point", PRUNE_POINTS)
def test_kill_prune_at_every_mutating_step(sandbox, point):
    for _unused in range(2):  # two complete backups per target; a prune to one deletes N
        assert ck.run_engine(sandbox, "apply").error_id is None
        assert ck.run_engine(sandbox, "restore").error_id is None
    res = ck.run_engine(sandbox, "prune", kill_at=point, retention_count=1)
    assert res.killed, "fault point %s was never reached: %r" % (point, res)
    ck.check_after_kill(sandbox)
    how = NEXT_RUNS[PRUNE_POINTS.index(point) % len(NEXT_RUNS)]
    next_run(sandbox, how, "prune killed at %s, next %s" % (point, how))
    check_every_byte_restorable(sandbox, point)
    if how != "apply":
        assert ck.run_engine(sandbox, "apply").error_id is None
    res = ck.run_engine(sandbox, "restore")
    assert res.error_id is None, res
    assert ck.check_consistent(sandbox) == "original", point


def test_prune_that_fails_halfway_is_finished_by_the_next_run(sandbox):
    """A failed directory fsync (durability required) stops the prune after its first deletion; the
    journal stays unfinished and the next run completes every deletion the prune had decided."""
    for _unused in range(2):
        assert ck.run_engine(sandbox, "apply").error_id is None
        assert ck.run_engine(sandbox, "restore").error_id is None
    res = ck.run_engine(sandbox, "prune", fail_fsync=3, retention_count=1)
    assert not res.raised and res.error_id == "E_ATOMIC_SWAP", res
    # The failure still returns the whole report, and it says what was deleted: the first backup only.
    assert res.report["summary"]["decision"] == "failure" and res.report["summary"]["pruned"] == 1, res.report
    assert [r["pruned"] for r in entries(res.report)] == [1] + [0] * (N - 1)
    assert res.report["changed"] is True and res.events("prune.result")[-1]["decision"] == "failure"
    assert len(ck.unfinished(sandbox)) == 1
    assert sum(len(v) for v in ck.backups(sandbox).values()) == 2 * N - 1
    res = ck.run_engine(sandbox, "apply")
    assert res.error_id is None and res.report["recovery"][0]["ok"], res
    check_clean(sandbox, "after the failed prune")
    # The prune's decision was carried out: one backup per target from before, plus this apply's.
    assert sorted(len(v) for v in ck.backups(sandbox).values()) == [2] * N
    check_every_byte_restorable(sandbox, "after the failed prune")
