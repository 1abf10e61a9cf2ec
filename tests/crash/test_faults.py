"""Injected fsync failures, full and read-only filesystems, a backup directory on another
filesystem, live plans, and what recovery reports -- each on real tmpfs mounts."""
import json
import os
import shutil

import pytest

import crashkit as ck
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

SMALL = 10
# The syncs of a first apply of SMALL links on a fresh root (group commit), in order: one syncfs for the four new state directories (it also
# covers the journal file on that filesystem), the journal directory, the backups' syncfs, the backup directory,
# the backups-durable record, the target directory, the commit record.
NEW_DIRS_SYNCFS, JOURNAL_DIR = 1, 2
BACKUPS_SYNCFS, BACKUP_DIR, BACKUPS_RECORD, SWAP_DIR, COMMIT_RECORD = 3, 4, 5, 6, 7


@pytest.fixture
def small(scratch, request):
    root = os.path.join(scratch, "small-" + request.node.name.replace("[", "-").replace("]", "").replace("/", "_"))
    shutil.rmtree(root, ignore_errors=True)
    yield ck.Sandbox(root, SMALL, seed=request.node.name, big=(3,))
    shutil.rmtree(root, ignore_errors=True)


def assert_untouched(sb, backup_root=None):
    assert ck.check_consistent(sb, backup_root) == "original"
    assert not [n for n in os.listdir(sb.bin) if ".bak" in n], "backups of a rolled-back plan were left"


# -- require_backup_durability --------------------------------------------------------------------

@pytest.mark.parametrize("nth", [NEW_DIRS_SYNCFS, JOURNAL_DIR])
def test_failed_fsync_before_the_first_mutation_fails_with_nothing_changed(small, nth):
    res = ck.run_engine(small, "apply", fail_fsync=nth)
    assert res.error_id == "E_ATOMIC_SWAP", res
    assert "nothing was changed" in res.data["msg"]
    assert res.report["summary"]["backup_durable"] is False
    assert_untouched(small)
    assert ck.journals(small) == []


@pytest.mark.parametrize("nth", [BACKUPS_SYNCFS, BACKUP_DIR, BACKUPS_RECORD, SWAP_DIR, COMMIT_RECORD])
def test_failed_fsync_with_durability_required_rolls_back(small, nth):
    res = ck.run_engine(small, "apply", fail_fsync=nth)
    assert res.error_id == "E_ATOMIC_SWAP", res
    assert "fsync" in res.data["msg"] or "journal" in res.data["msg"]
    summary = res.report["summary"]
    assert summary["backup_durable"] is False and summary["decision"] == "failure"
    assert [e for e in res.events("rollback.summary") if e["decision"] == "success"]
    assert_untouched(small)
    assert [recs[-1].get("state") for _n, recs in ck.journals(small)] == ["rolled_back"]
    # Nothing half-made is left behind: the same plan now applies cleanly (no extra hard link to STOP on).
    again = ck.run_engine(small, "apply")
    assert again.error_id is None, again
    assert again.report["summary"]["backup_durable"] is True


def test_durability_not_required_skips_every_fsync_and_says_not_durable(small):
    """require_backup_durability: false really skips the fsyncs: a kill armed at the first fsync never fires."""
    res = ck.run_engine(small, "apply", kill_at="before_fsync:1", policy={"require_backup_durability": False})
    assert not res.killed and res.error_id is None, res
    assert res.report["summary"]["backup_durable"] is False
    assert [a["backup_durable"] for a in entries(res.report)] == [False] * SMALL
    assert all(e["backup_durable"] is False for e in res.events("apply.result") if e.get("action_id"))
    assert ck.check_consistent(small) == "link"
    # The same kill point does fire when durability is required (the test can fail).
    assert ck.run_engine(small, "restore").error_id is None
    assert ck.run_engine(small, "apply", kill_at="before_fsync:1").killed


def test_backup_durable_is_true_per_action_and_in_summary_when_every_fsync_succeeds(small):
    res = ck.run_engine(small, "apply")
    assert res.report["summary"]["backup_durable"] is True
    assert [a["backup_durable"] for a in entries(res.report)] == [True] * SMALL


# -- full disk ------------------------------------------------------------------------------------

def _fill(path, leave_bytes):
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(os.path.join(path, "filler"), "wb") as f:
        remaining = max(0, free - leave_bytes)
        while remaining:
            chunk = min(remaining, 1 << 20)
            try:
                f.write(b"\0" * chunk)
                f.flush()
            except OSError:
                break
            remaining -= chunk


def test_full_root_tmpfs_fails_mid_plan_and_loses_nothing(tmp_path):
    """The root fills up after a few sidecars: the plan fails, every target is back, nothing is left."""
    root = tmp_path / "root"
    with ck.tmpfs(root, size="8m"):
        sb = ck.Sandbox(root, 30, seed="full", big=())
        state = root / "var" / "lib" / "switchyard"
        with ck.tmpfs(state, size="1m"):  # the journal has room; the backups do not
            _fill(str(root), 5 * 4096)
            res = ck.run_engine(sb, "apply")
            assert res.error_id == "E_ATOMIC_SWAP", res
            assert "No space left" in res.data["msg"], res.data["msg"]
            assert res.report["summary"]["rolled_back"] >= 1
            assert_untouched(sb)
            assert not ck.unfinished(sb)


def test_full_root_tmpfs_without_room_for_the_journal_fails_before_any_mutation(tmp_path):
    root = tmp_path / "root"
    with ck.tmpfs(root, size="4m"):
        sb = ck.Sandbox(root, 20, seed="full-journal", big=())
        _fill(str(root), 0)
        res = ck.run_engine(sb, "apply")
        assert res.error_id == "E_ATOMIC_SWAP", res
        assert "journal" in res.data["msg"] and "nothing was changed" in res.data["msg"]
        assert_untouched(sb)


def test_backup_that_does_not_fit_on_the_backup_filesystem_fails_cleanly(tmp_path):
    """Copy path: a 200 KiB binary onto a 96 KiB tmpfs backup directory."""
    sb = ck.Sandbox(tmp_path / "root", SMALL, seed="exdev-full", big=(4,))
    broot = tmp_path / "root" / "var" / "backups"
    with ck.tmpfs(broot, size="96k"):
        res = ck.run_engine(sb, "apply", policy={"backup_dir": "/var/backups", "allow_degraded_fs": True})
        assert res.error_id == "E_ATOMIC_SWAP", res
        assert "No space left" in res.data["msg"], res.data["msg"]
        assert_untouched(sb, str(broot))
        assert not ck.temps(sb) and not ck.orphan_payloads(sb, str(broot))
        assert not [n for _d, n in ck.walk_names(str(broot)) if n.endswith(".bak") or ".meta.json" in n]


# -- read-only filesystem -------------------------------------------------------------------------

def test_read_only_root_stops_in_preflight_and_fails_cleanly_when_overridden(tmp_path):
    root = tmp_path / "root"
    with ck.tmpfs(root, size="16m"):
        sb = ck.Sandbox(root, SMALL, seed="ro", big=())
        ck.remount(root, "ro")
        try:
            res = ck.run_engine(sb, "apply")
            assert res.error_id == "E_POLICY", res
            assert "read-only" in res.data["msg"] or "rw" in res.data["msg"], res.data["msg"]
            res = ck.run_engine(sb, "apply", policy={"override_preflight": True})
            assert res.error_id == "E_ATOMIC_SWAP", res
            assert "nothing was changed" in res.data["msg"], res.data["msg"]
            assert_untouched(sb)
        finally:
            ck.remount(root, "rw")


def test_crash_then_read_only_root_fails_clearly_then_recovers_once_writable(tmp_path):
    root = tmp_path / "root"
    with ck.tmpfs(root, size="16m"):
        sb = ck.Sandbox(root, SMALL, seed="ro-crash", big=())
        assert ck.run_engine(sb, "apply", kill_at="after_rename:5").killed
        ck.remount(root, "ro")
        try:
            res = ck.run_engine(sb, "prune")
            # safe_prune returns its full report with the error (issue 16.3): the recovery entry says what failed.
            assert not res.raised and res.error_id == "E_RESTORE_FAILED", res
            assert res.report["summary"]["decision"] == "failure" and not res.report["recovery"][0]["ok"]
            assert "Read-only" in res.data["msg"] and "safe_restore plan_id=" in res.data["msg"]
            ck.check_after_kill(sb)
        finally:
            ck.remount(root, "rw")
        assert ck.unfinished(sb), "a recovery that could not finish must be retried"
        res = ck.run_engine(sb, "prune")
        assert res.error_id is None and res.report["recovery"][0]["ok"], res
        assert_untouched(sb)


# -- backup directory on another filesystem -------------------------------------------------------

def test_backup_dir_on_another_filesystem_needs_allow_degraded_fs(tmp_path):
    sb = ck.Sandbox(tmp_path / "root", SMALL, seed="exdev", big=())
    with ck.tmpfs(tmp_path / "root" / "var" / "backups", size="16m"):
        res = ck.run_engine(sb, "apply", policy={"backup_dir": "/var/backups"})
        assert res.error_id == "E_EXDEV", res
        assert "allow_degraded_fs" in res.data["msg"]
        assert_untouched(sb)


def test_backup_dir_on_another_filesystem_copies_fsyncs_and_restores(tmp_path):
    sb = ck.Sandbox(tmp_path / "root", SMALL, seed="copy", big=(2,))
    broot = str(tmp_path / "root" / "var" / "backups")
    with ck.tmpfs(broot, size="16m"):
        policy = {"backup_dir": "/var/backups", "allow_degraded_fs": True}
        res = ck.run_engine(sb, "apply", policy=policy)
        assert res.error_id is None, res
        files = [a for a in entries(res.report) if a["before"]["kind"] == "file"]
        assert files and all(a["backup"]["backup_method"] == "copy" for a in files)
        assert res.report["summary"]["backup_durable"] is True
        for rel, metas in ck.backups(sb, broot).items():
            (path, meta), = metas
            if meta["prior_kind"] == "file":
                payload = os.path.join(os.path.dirname(path), meta["payload"])
                assert ck.sha256_file(payload) == sb.originals[rel][1]
                assert os.stat(payload).st_dev != os.stat(sb.bin).st_dev
        res = ck.run_engine(sb, "restore", policy=policy)
        assert res.error_id is None, res
        assert ck.check_consistent(sb, broot) == "original"


@pytest.mark.parametrize("point", ["after_backup_payload:4", "after_sidecar:7", "backups_durable",
                                   "after_rename:6"])
def test_kill_on_the_copy_path_is_recovered_from_the_journaled_backup_dir(tmp_path, point):
    """Recovery finds the backups where the interrupted run put them, even if the next run's policy
    names no backup_dir."""
    sb = ck.Sandbox(tmp_path / "root", SMALL, seed=point, big=(1,))
    broot = str(tmp_path / "root" / "var" / "backups")
    with ck.tmpfs(broot, size="16m"):
        res = ck.run_engine(sb, "apply", kill_at=point, policy={"backup_dir": "/var/backups", "allow_degraded_fs": True})
        assert res.killed, res
        ck.check_after_kill(sb, broot)
        res = ck.run_engine(sb, "prune")
        assert res.error_id is None and res.report["recovery"][0]["ok"], res
        assert ck.check_consistent(sb, broot) == "original"


# -- live plans, restore plan_id, on_unfinished_plan, failed recovery ------------------------------

def test_a_plan_whose_writer_is_alive_is_not_recovered(small):
    from ansible_collections.switchyard.fs.plugins.module_utils._fs import durable as _fsdurable, journal as _journal
    jdir = os.path.join(small.root, "var", "lib", "switchyard", "journal")
    os.makedirs(jdir)
    fd = os.open(jdir, os.O_RDONLY | os.O_DIRECTORY)
    run_id = "0b6e7c1e-0000-4000-8000-000000000001"
    plan_id = "0b6e7c1e-0000-5000-8000-000000000002"
    try:
        live = _journal.Journal.begin(fd, run_id, {"kind": "apply", "plan_id": plan_id, "run_id": run_id,
                                                   "tag": "switchyard", "ts_ms": 1, "actions": []},
                                      _fsdurable.Durability(True))
        try:
            res = ck.run_engine(small, "prune")
            assert res.error_id is None, res
            assert res.report["recovery"] == []
            warn = res.events("recovery")
            assert warn and warn[0]["decision"] == "warn" and "still running" in warn[0]["msg"]
            assert ck.unfinished(small) == [run_id + ".journal"]
        finally:
            live.close()  # as if its process died: the flock goes with it
        res = ck.run_engine(small, "prune")
        assert res.report["recovery"][0]["ok"] and not ck.unfinished(small), res
    finally:
        os.close(fd)


def test_restore_plan_id_of_an_interrupted_plan_rolls_it_back_once(small):
    assert ck.run_engine(small, "apply", kill_at="after_rename:6").killed
    plan_id = ck.journals(small)[0][1][0]["plan_id"]
    res = ck.run_engine(small, "restore", plan_id=plan_id)
    assert res.error_id is None, res
    assert res.report["changed"] is True  # this run's recovery put 6 targets back
    assert len(res.report["recovery"][0]["paths"]) == 6
    assert all(r["result"] == "unchanged" for r in entries(res.report))
    assert_untouched(small)
    again = ck.run_engine(small, "restore", plan_id=plan_id)
    assert again.error_id is None and again.report["changed"] is False and again.report["recovery"] == []


def test_on_unfinished_plan_stop_blocks_every_module_but_restore_of_that_plan(small):
    assert ck.run_engine(small, "apply", kill_at="after_rename:3").killed
    plan_id = ck.journals(small)[0][1][0]["plan_id"]
    stop = {"on_unfinished_plan": "stop"}
    for op in ("apply", "prune"):
        res = ck.run_engine(small, op, policy=stop)
        assert res.error_id == "E_POLICY", res
        if op == "prune":  # safe_prune returns its full report with the error (issue 16.3)
            assert not res.raised and res.report["summary"]["decision"] == "failure", res
        assert "safe_restore plan_id=%s" % plan_id in res.data["msg"]
    ck.check_after_kill(small)
    res = ck.run_engine(small, "restore", plan_id=plan_id, policy=stop)
    assert res.error_id is None and res.report["changed"] is True, res
    assert_untouched(small)


def test_recovery_that_cannot_restore_a_target_stops_the_run_and_names_it(small):
    assert ck.run_engine(small, "apply", kill_at="after_rename:4").killed
    victim = os.path.join(small.bin, "t002")
    (sidecar,) = [n for n in os.listdir(small.bin) if n.startswith(".t002.") and n.endswith(".meta.json")]
    os.unlink(os.path.join(small.bin, sidecar))
    res = ck.run_engine(small, "apply")
    assert res.raised and res.error_id == "E_RESTORE_FAILED", res
    assert "/usr/bin/t002" in res.data["msg"] and "nothing else was done" in res.data["msg"]
    assert os.readlink(victim) == small.sources["/usr/bin/t002"]
    assert [small.state_of("/usr/bin/t%03d" % i)[0] for i in (0, 1, 3)] == ["original"] * 3
    (_name, recs), = ck.journals(small)
    assert recs[-1] == dict(recs[-1], record="end", state="failed_rollback")
    # The payload (the original bytes) is still there for a restore by hand.
    (payload,) = [n for n in os.listdir(small.bin) if n.startswith(".t002.") and n.endswith(".bak")]
    assert ck.sha256_file(os.path.join(small.bin, payload)) == small.originals["/usr/bin/t002"][1]
    assert json.dumps(res.data)  # and the next run carries on
    assert ck.run_engine(small, "prune").error_id is None


@pytest.mark.parametrize("point", ["after_sidecar:3", "after_backup_payload:3"])
def test_recovery_keeps_the_backup_of_a_target_replaced_after_the_crash(small, point):
    """Action 3 was backed up but never swapped; then someone replaced its target.  The plan's
    backup of it is now the only copy of the original: recovery must not discard it."""
    assert ck.run_engine(small, "apply", kill_at=point).killed
    victim = os.path.join(small.bin, "t002")
    with open(victim + ".new", "wb") as f:
        f.write(b"replaced by hand after the crash\n")
    os.chmod(victim + ".new", 0o755)
    os.rename(victim + ".new", victim)
    res = ck.run_engine(small, "prune")
    assert res.error_id is None and res.report["recovery"][0]["ok"], res
    assert [small.state_of("/usr/bin/t%03d" % i)[0] for i in (0, 1)] == ["original"] * 2
    with open(victim, "rb") as f:
        assert f.read() == b"replaced by hand after the crash\n"
    (payload,) = [n for n in os.listdir(small.bin) if n.startswith(".t002.") and n.endswith(".bak")]
    assert ck.sha256_file(os.path.join(small.bin, payload)) == small.originals["/usr/bin/t002"][1]
