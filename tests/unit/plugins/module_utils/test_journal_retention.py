"""Issue 13.4: finished journals are retired out of the journal directory and expired, so the journals a
run reads do not grow with history.  Counts files read, never time."""
import json
import os
import shutil
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply, preflight, prune, restore  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

KEEP = 10


def _ok(result):
    rep, err, _w = result
    assert err is None, err.msg
    assert validation_errors(rep) == []
    return rep


def _reads(monkeypatch):
    count = [0]
    real = jr.read_journal

    def counting(dir_fd, name):
        count[0] += 1
        return real(dir_fd, name)
    monkeypatch.setattr(jr, "read_journal", counting)
    return count


def test_journals_read_per_run_stay_bounded_after_many_finished_plans(tmp_path, monkeypatch):
    monkeypatch.setattr(jr, "JOURNAL_RETENTION", KEEP)
    sb = make_sandbox(tmp_path)
    jdir = sb.p("/var/lib/switchyard/journal")
    plan_ids = []
    for i in range(15):  # 45 finished journals: apply, restore and prune each write one
        plan_ids.append(_ok(apply(Settings(root=sb.root), [sb.link("ls")]))["plan_id"])
        _ok(restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/ls")]))
        _ok(prune(Settings(root=sb.root), [sb.p("/usr/bin/ls")], retention_count=1))
    assert os.listdir(jdir) == ["done"]
    assert len(os.listdir(os.path.join(jdir, "done"))) == KEEP
    reads = _reads(monkeypatch)
    _ok(preflight(Settings(root=sb.root), links=[sb.link("ls"), sb.link("cat")]))
    assert reads[0] == 0
    _ok(apply(Settings(root=sb.root), [sb.link("cat")]))
    assert reads[0] == 0
    # safe_restore plan_id reads only the retired journals of that plan.
    reads[0] = 0
    rep = _ok(restore(Settings(root=sb.root), plan_id=plan_ids[-1]))
    assert entries(rep) and reads[0] <= 4


def test_finished_journals_left_by_an_older_version_are_retired_by_the_next_mutating_run(tmp_path, monkeypatch):
    monkeypatch.setattr(jr, "JOURNAL_RETENTION", KEEP)
    sb = make_sandbox(tmp_path)
    jdir = sb.p("/var/lib/switchyard/journal")
    for _i in range(4):
        _ok(apply(Settings(root=sb.root), [sb.link("ls")]))
        _ok(restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/ls")]))
    # 0.1.0 kept every finished journal in the journal directory under its run id.
    done = os.path.join(jdir, "done")
    legacy = 0
    for n in sorted(os.listdir(done)):
        with open(os.path.join(done, n)) as f:
            lines = [json.loads(x) for x in f.read().splitlines()]
        for _copy in range(5):
            run_id = str(uuid.uuid4())
            lines[0]["run_id"] = run_id
            with open(os.path.join(jdir, run_id + ".journal"), "w") as f:
                f.write("".join(json.dumps(x) + "\n" for x in lines))
            legacy += 1
    shutil.rmtree(done)
    reads = _reads(monkeypatch)
    _ok(preflight(Settings(root=sb.root), links=[sb.link("ls")]))
    assert reads[0] == legacy  # check mode never moves anything
    _ok(apply(Settings(root=sb.root), [sb.link("cat")]))
    assert os.listdir(jdir) == ["done"] and len(os.listdir(done)) == KEEP
    reads[0] = 0
    _ok(preflight(Settings(root=sb.root), links=[sb.link("ls")]))
    assert reads[0] == 0


def test_restore_by_plan_id_of_an_expired_plan_fails_with_its_report(tmp_path, monkeypatch):
    monkeypatch.setattr(jr, "JOURNAL_RETENTION", 2)
    sb = make_sandbox(tmp_path)
    first = _ok(apply(Settings(root=sb.root), [sb.link("ls")]))["plan_id"]
    _ok(restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/ls")]))
    _ok(apply(Settings(root=sb.root), [sb.link("cat")]))
    rep, err, _w = restore(Settings(root=sb.root), plan_id=first)
    assert err is not None and err.error_id == "E_BACKUP_MISSING" and validation_errors(rep) == []
    assert rep["plan_id"] == first and rep["summary"]["decision"] == "failure"
