"""The engine in-process: topologies (file, symlink, absent), backup selection, audit log, refusals."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils.engine import (  # noqa: E402
    Settings, apply, restore, preflight, PolicyError, BackupMissingError, RestoreFailedError)
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries, expand_events  # noqa: E402


def ok(result):
    report, err, _warnings = result
    assert err is None, err and err.msg
    assert validation_errors(report) == []
    return report


def test_absent_target_becomes_link_and_restore_removes_it(tmp_path):
    sb = make_sandbox(tmp_path, synthetic=1)
    link = {"source": sb.p("/opt/prov/bin/f000"), "target": sb.p("/usr/bin/newtool")}
    rep = ok(apply(Settings(root=sb.root), [link]))
    assert entries(rep)[0]["before"] == {"kind": "absent"}
    assert os.readlink(link["target"]) == "/opt/prov/bin/f000"
    rep = ok(restore(Settings(root=sb.root), targets=[link["target"]]))
    assert entries(rep)[0]["result"] == "changed" and not os.path.lexists(link["target"])
    assert entries(ok(restore(Settings(root=sb.root), targets=[link["target"]])))[0]["result"] == "unchanged"


def test_symlink_target_is_restored_as_the_same_symlink(tmp_path):
    sb = make_sandbox(tmp_path, synthetic=1)
    os.symlink("f000", sb.p("/usr/bin/alias"))
    link = {"source": sb.p("/opt/prov/bin/f000"), "target": sb.p("/usr/bin/alias")}
    ok(apply(Settings(root=sb.root), [link]))
    assert os.readlink(sb.p("/usr/bin/alias")) == "/opt/prov/bin/f000"
    ok(restore(Settings(root=sb.root), targets=[link["target"]]))
    assert os.readlink(sb.p("/usr/bin/alias")) == "f000"


def test_latest_and_previous_select_by_age(tmp_path):
    sb = make_sandbox(tmp_path, synthetic=1)
    target = sb.p("/usr/bin/f000")
    link = {"source": sb.p("/opt/prov/bin/f000"), "target": target}
    first = open(target, "rb").read()
    ok(apply(Settings(root=sb.root), [link]))
    ok(restore(Settings(root=sb.root), targets=[target]))
    os.unlink(target)
    with open(target, "wb") as f:
        f.write(b"second version\n")
    os.chmod(target, 0o755)
    ok(apply(Settings(root=sb.root), [link]))
    ok(restore(Settings(root=sb.root), targets=[target], which="latest"))
    assert open(target, "rb").read() == b"second version\n"
    ok(apply(Settings(root=sb.root), [link]))
    ok(restore(Settings(root=sb.root), targets=[target], which="previous"))
    assert open(target, "rb").read() == b"second version\n"  # newest-but-one is the second apply's backup


def test_restore_without_backup_fails_before_touching(tmp_path):
    sb = make_sandbox(tmp_path)
    before = sb.snapshot(["/usr/bin/ls"])
    rep, err, _w = restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/ls")])
    assert isinstance(err, BackupMissingError) and err.exit_code == 60 and "/usr/bin/ls" in err.msg
    assert entries(rep)[0]["restore_ready"] is False and validation_errors(rep) == []
    assert sb.snapshot(["/usr/bin/ls"]) == before


def test_restore_refuses_to_destroy_a_changed_regular_file(tmp_path):
    sb = make_sandbox(tmp_path)
    target = sb.p("/usr/bin/ls")
    ok(apply(Settings(root=sb.root), [sb.link("ls")]))
    os.unlink(target)
    with open(target, "wb") as f:
        f.write(b"local edit\n")
    _rep, err, _w = restore(Settings(root=sb.root), targets=[target])
    assert isinstance(err, RestoreFailedError) and "refuses to replace it" in err.msg
    assert open(target, "rb").read() == b"local edit\n"


def test_backup_dir_on_same_filesystem_keeps_backups_there(tmp_path):
    sb = make_sandbox(tmp_path)
    rep = ok(apply(Settings(root=sb.root, policy={"backup_dir": "/var/backups/sy"}), [sb.link("ls")]))
    assert entries(rep)[0]["backup"]["backup_method"] == "hardlink"
    d = sb.p("/var/backups/sy/usr/bin")
    assert sorted(os.listdir(d))[0].startswith(".ls.switchyard.")
    assert sb.backups("ls") == []
    ok(restore(Settings(root=sb.root, policy={"backup_dir": "/var/backups/sy"}), targets=[sb.p("/usr/bin/ls")]))
    assert not os.path.islink(sb.p("/usr/bin/ls"))


def test_audit_log_gets_one_json_object_per_event(tmp_path):
    sb = make_sandbox(tmp_path)
    log = sb.p("/var/log/switchyard/events.jsonl")  # inside root: an outside path needs a knob (test_sidepaths.py)
    rep = ok(apply(Settings(root=sb.root, audit_log=log), [sb.link("ls")]))
    lines = open(log).read().splitlines()
    assert [json.loads(x)["event_id"] for x in lines] == [e["event_id"] for e in expand_events(rep)]


def test_backup_tag_isolates_sets_and_is_validated(tmp_path):
    sb = make_sandbox(tmp_path)
    ok(apply(Settings(root=sb.root, backup_tag="teamA"), [sb.link("ls")]))
    assert sb.backups("ls", tag="teamA") and not sb.backups("ls")
    assert isinstance(restore(Settings(root=sb.root, backup_tag="teamB"), targets=[sb.p("/usr/bin/ls")])[1],
                      BackupMissingError)
    with pytest.raises(PolicyError, match="backup_tag"):
        Settings(root=sb.root, backup_tag="../x")


def test_preflight_changes_nothing_even_outside_check_mode(tmp_path):
    sb = make_sandbox(tmp_path)
    before = sorted(os.listdir(sb.p("/usr/bin")))
    rep = ok(preflight(Settings(root=sb.root), links=[sb.link("ls")], restores=[sb.p("/usr/bin/cat")],
                       fail_on_stop=False))
    assert sorted(os.listdir(sb.p("/usr/bin"))) == before
    assert not os.path.exists(sb.p("/run/lock/switchyard.lock"))
    rows = dict((r["op"], r) for r in entries(rep))
    assert rows["link"]["policy_ok"] is True and rows["restore"]["restore_ready"] is False


def test_backup_rehashes_when_the_file_changed_after_it_was_first_read(tmp_path):
    """The apply's earlier hash is reused only while (inode, size, mtime, ctime) prove the bytes unchanged."""
    from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
    from ansible_collections.switchyard.fs.plugins.module_utils._fs.atoms import sha256_at
    from ansible_collections.switchyard.fs.plugins.module_utils._fs.durable import Durability
    from ansible_collections.switchyard.fs.plugins.module_utils._policy import resolve_policy
    from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import resolve_beneath
    sb = make_sandbox(tmp_path, synthetic=1)
    target = resolve_beneath(sb.root, sb.p("/usr/bin/f000"))
    try:
        st_before = target.lstat()
        stale = (bk.content_key(st_before), "0" * 64)
        with open(sb.p("/usr/bin/f000"), "ab") as f:
            f.write(b"changed in place\n")
        ids = {"plan_id": "3c6becf8-ea2d-5597-a6e6-df617407157b", "action_id": "3c6becf8-ea2d-5597-a6e6-df617407157b"}
        b = bk.create_backup(target, target.lstat(), target.parent_fd, 1, "switchyard", ids, resolve_policy(),
                             Durability(True), "0" * 36, True, known_hash=stale)
        assert b.meta["payload_hash"] == sha256_at(target.parent_fd, b.payload) != "0" * 64
        allow = resolve_policy("default", {"hardlinks": "allow"})  # the first backup is a hard link of it
        # Changed within the timestamp granularity: a matching content key proves nothing, so it is hashed.
        recent = (bk.content_key(target.lstat()), "f" * 64)
        b2 = bk.create_backup(target, target.lstat(), target.parent_fd, 2, "switchyard", ids, allow,
                              Durability(True), "0" * 36, True, known_hash=recent)
        assert b2.meta["payload_hash"] == sha256_at(target.parent_fd, b2.payload) != "f" * 64
        old = target.lstat().st_mtime_ns - 10 ** 10
        os.utime(sb.p("/usr/bin/f000"), ns=(old, old))
        fresh = (bk.content_key(target.lstat()), "f" * 64)
        b3 = bk.create_backup(target, target.lstat(), target.parent_fd, 3, "switchyard", ids, allow,
                              Durability(True), "0" * 36, True, known_hash=fresh)
        assert b3.meta["payload_hash"] == "f" * 64  # reused: an old mtime and the same key prove it unchanged
    finally:
        target.close()
