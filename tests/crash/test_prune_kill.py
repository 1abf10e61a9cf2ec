"""Prune never loses the original: retention keeps the newest regular-file backup, and a prune SIGKILLed at
any of its syscalls leaves at most a sidecar whose payload is gone, which the next prune removes
(issue 12, point 5).

Each target goes GNU file -> provider 1 link -> provider 2 link, with a restore in between, so it has
three backups: b1 (file), b2 (file, the newest copy of the original), b3 (symlink to provider 1, the
newest).  `retention_count: 1` deletes b1 only (b2 is the last copy of the original's bytes); with
`prune_keep_original: false` it deletes b1 and b2.  The kill points are every unlink of a backup
entry (fault point before_unlink_backup) and every fsync the prune makes.
"""
import os
import shutil

import pytest

import crashkit as ck
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

N = 6  # targets, all regular files (prune_keep_original protects regular-file bytes)
UNLINKS = 2 * N  # the payload and the sidecar of each target's b1


def _sidecars_without_payload(sb):
    out = []
    for rel, items in ck.backups(sb).items():
        for path, meta in items:
            if meta.get("prior_kind") != "absent" and not os.path.lexists(path[:-len(".meta.json")]):
                out.append(path)
    return out


@pytest.fixture
def three_backups(scratch, request):
    root = os.path.join(scratch, request.node.name.replace("/", "_").replace("[", "-").replace("]", ""))
    shutil.rmtree(root, ignore_errors=True)
    sb = ck.Sandbox(root, N, symlinks=0, seed=request.node.name, big=())
    prov2 = os.path.join(sb.root, "opt", "prov2", "bin")
    os.makedirs(prov2)
    links2 = []
    for link in sb.links:
        src = os.path.join(prov2, os.path.basename(link["target"]))
        with open(src, "wb") as f:
            f.write(b"#!/bin/sh\n# provider 2\n")
        os.chmod(src, 0o755)
        links2.append({"source": src, "target": link["target"]})
    for step, kw in (("apply", {}), ("restore", {}), ("apply", {}), ("apply", {"links": links2})):
        res = ck.run_engine(sb, step, **kw)
        assert res.error_id is None, res
    for rel, items in ck.backups(sb).items():
        kinds = sorted((m["created_ms"], m["prior_kind"]) for _p, m in items)
        assert [k for _ms, k in kinds] == [sb.originals[rel][0], sb.originals[rel][0], "symlink"], (rel, kinds)
    yield sb
    shutil.rmtree(root, ignore_errors=True)


def _assert_originals_restorable(sb, context):
    """restore which=previous brings every original entry back, byte for byte."""
    res = ck.run_engine(sb, "restore", which="previous")
    assert res.error_id is None, "%s: %r" % (context, res)
    for rel in sb.originals:
        assert sb.state_of(rel)[0] == "original", "%s: %s is %s" % (context, rel, sb.state_of(rel))


def test_retention_count_1_keeps_the_only_copy_of_the_original(three_backups):
    sb = three_backups
    res = ck.run_engine(sb, "prune", retention_count=1)
    assert res.error_id is None, res
    for r in entries(res.report):
        assert r["pruned"] == 1 and r["kept"] == 2, r
        assert "prune_keep_original" in r["note"], r
    bks = ck.backups(sb)
    assert all(sorted(m["prior_kind"] for _p, m in bks[rel]) == sorted([sb.originals[rel][0], "symlink"])
               for rel in sb.originals), bks
    _assert_originals_restorable(sb, "after prune")


def test_prune_keep_original_false_deletes_down_to_the_newest(three_backups):
    sb = three_backups
    res = ck.run_engine(sb, "prune", retention_count=1, policy={"prune_keep_original": False})
    assert res.error_id is None, res
    assert all(r["pruned"] == 2 and r["kept"] == 1 for r in entries(res.report)), entries(res.report)
    assert all(len(v) == 1 and v[0][1]["prior_kind"] == "symlink" for v in ck.backups(sb).values())


@pytest.mark.parametrize("point", ["before_unlink_backup:%d" % n for n in range(1, UNLINKS + 1)]
                         + ["before_fsync:%d" % n for n in range(1, N + 1)])
def test_prune_killed_at_each_syscall_leaves_nothing_half_deleted_after_the_next_run(three_backups, point):
    sb = three_backups
    res = ck.run_engine(sb, "prune", kill_at=point, retention_count=1)
    assert res.killed, "fault point %s was never reached: %r" % (point, res)
    # The instant after the kill: never a payload without its sidecar (it could be the last copy).
    assert not ck.orphan_payloads(sb), ck.orphan_payloads(sb)
    half = _sidecars_without_payload(sb)
    assert len(half) <= 1, half
    res = ck.run_engine(sb, "prune", retention_count=1)
    assert res.error_id is None, res
    assert not ck.orphan_payloads(sb) and not _sidecars_without_payload(sb), (point, _sidecars_without_payload(sb))
    assert not ck.temps(sb), ck.temps(sb)
    for rel in sb.originals:
        assert len(ck.backups(sb)[rel]) == 2, (point, rel, ck.backups(sb)[rel])
    _assert_originals_restorable(sb, point)


def test_an_orphan_payload_is_never_pruned(three_backups):
    """A payload whose sidecar is gone may be the last copy of an original: prune warns and keeps it."""
    sb = three_backups
    (path, meta), = [(p, m) for p, m in ck.backups(sb)["/usr/bin/t000"] if m["prior_kind"] == "file"][:1]
    os.unlink(path)
    payload = path[:-len(".meta.json")]
    res = ck.run_engine(sb, "prune", retention_count=1)
    assert res.error_id is None, res
    assert os.path.exists(payload) and ck.sha256_file(payload) == sb.originals["/usr/bin/t000"][1]
