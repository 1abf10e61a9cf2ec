"""Backup metadata is untrusted input (issue 12, point 2): one attack per defence, deterministic.

The property-based suite (test_metadata_fuzz.py) covers the space; these pin each reproduced attack."""
import hashlib
import json
import os
import shutil
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply, restore, prune  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import sidecar as sc  # noqa: E402


@pytest.fixture
def swapped(tmp_path):
    """f000 swapped for a link (one file backup); returns (sandbox, sidecar path, journal dir)."""
    sb = make_sandbox(tmp_path, tools=(), synthetic=1)
    _rep, err, _w = apply(Settings(root=sb.root), [{"source": sb.p("/opt/prov/bin/f000"), "target": sb.p("/usr/bin/f000")}])
    assert err is None, err.msg
    (sidecar,) = [os.path.join(sb.p("/usr/bin"), n) for n in os.listdir(sb.p("/usr/bin")) if n.endswith(".meta.json")]
    return sb, sidecar, sb.p("/var/lib/switchyard/journal")


def _rewrite(path, **fields):
    with open(path) as f:
        meta = json.load(f)
    meta.update(fields)
    with open(path, "w") as f:
        json.dump(meta, f)


def _unfinished_copy(jdir, **fields):
    """The committed apply's journal (retired to journal/done/), made unfinished again with `fields` changed."""
    done = os.path.join(jdir, "done")
    (name,) = [n for n in os.listdir(done) if n.endswith(".journal")]
    with open(os.path.join(done, name), "rb") as f:
        begin = json.loads(f.read().splitlines()[0])
    begin.update(fields)
    begin["run_id"] = str(uuid.uuid4())
    new = begin["run_id"] + ".journal"
    os.unlink(os.path.join(done, name))
    with open(os.path.join(jdir, new), "w") as f:
        f.write(json.dumps(begin) + "\n")
    return new, begin


def test_journal_backup_dir_with_dotdot_cannot_make_recovery_touch_outside_root(swapped, tmp_path):
    """0.1.0: recovery opened <root>/../decoy/usr/bin as the backup directory, moved the planted payload into
    root and deleted the planted sidecar there."""
    sb, sidecar, jdir = swapped
    planted = os.path.join(str(tmp_path), "decoy", "usr", "bin")
    os.makedirs(planted)
    for n in (sidecar, sidecar[:-len(".meta.json")]):
        shutil.copy(n, planted)
    before = sorted(os.listdir(planted))
    name, _begin = _unfinished_copy(jdir, backup_dir_rel="/../decoy")
    _rep, raised, _w = prune(Settings(root=sb.root), [sb.p("/usr/bin/f000")], retention_count=5)
    assert sorted(os.listdir(planted)) == before  # nothing moved out of (or deleted in) the planted directory
    assert os.readlink(sb.p("/usr/bin/f000")) == "/opt/prov/bin/f000"
    assert raised is not None and raised.error_id == "E_RESTORE_FAILED"
    assert name in raised.msg and "field backup_dir_rel" in raised.msg
    # Reported once, marked failed_rollback: the next run carries on.
    _rep, err, _w = prune(Settings(root=sb.root), [sb.p("/usr/bin/f000")], retention_count=5)
    assert err is None


@pytest.mark.parametrize("field,value", [("target", "/../../decoy/x"), ("target", "usr/bin/f000"),
                                         ("tag", "../x"), ("actions", {"a": 1}), ("backup_ms", 1.5)])
def test_bad_journal_fields_are_named_and_nothing_is_undone(swapped, field, value):
    sb, _sidecar, jdir = swapped
    if field in ("target", "backup_ms"):
        done = os.path.join(jdir, "done")
        (name,) = [n for n in os.listdir(done) if n.endswith(".journal")]
        with open(os.path.join(done, name), "rb") as f:
            acts = json.loads(f.read().splitlines()[0])["actions"]
        acts[0][field] = value
        name, _b = _unfinished_copy(jdir, actions=acts)
        want = "field actions[0].%s" % field
    else:
        name, _b = _unfinished_copy(jdir, **{field: value})
        want = "field %s" % field
    _rep, err, _w = prune(Settings(root=sb.root), [sb.p("/usr/bin/f000")], retention_count=5)
    assert err is not None and err.error_id == "E_RESTORE_FAILED"
    assert name in err.msg and want in err.msg, err.msg
    assert os.readlink(sb.p("/usr/bin/f000")) == "/opt/prov/bin/f000"


def test_garbage_journal_lines_never_crash_listing(swapped):
    sb, _sidecar, jdir = swapped
    for i, line in enumerate([b"[" * 100000, b"[1, 2]", b'"begin"', b'{"record": "begin", "ts_ms": "soon"}',
                              b'{"record": "begin", "ts_ms": [1]}']):
        with open(os.path.join(jdir, "%s.journal" % uuid.uuid4()), "wb") as f:
            f.write(line + b"\n")
    fd = os.open(jdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        listed = jr.list_journals(fd)
    finally:
        os.close(fd)
    assert len(listed) == 2  # the two begin objects with bad ts_ms (the committed apply is retired to done/)
    _rep, err, _w = restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/f000")])
    assert err is not None and err.error_id == "E_RESTORE_FAILED" and "field plan_id" in err.msg


def test_a_payload_that_does_not_verify_is_never_described(swapped):
    sb, sidecar, _jdir = swapped
    payload = sidecar[:-len(".meta.json")]
    with open(payload, "r+b") as f:
        f.write(b"TAMPERED")
    with open(payload, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    rep, err, _w = restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/f000")])
    assert err is not None and err.error_id == "E_RESTORE_FAILED"
    assert digest not in err.msg and digest not in json.dumps(rep)
    assert "field payload_hash" in err.msg


@pytest.mark.parametrize("make,field", [
    (lambda p: (os.unlink(p), os.mkdir(p)), "prior_kind"),  # payload is a directory
    (lambda p: (os.unlink(p), os.symlink("/etc/shadow", p)), "prior_kind"),  # payload is a symlink out of root
])
def test_a_payload_of_the_wrong_kind_is_unusable(swapped, make, field):
    sb, sidecar, _jdir = swapped
    make(sidecar[:-len(".meta.json")])
    _rep, err, _w = restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/f000")])
    assert err is not None and err.error_id == "E_BACKUP_MISSING"
    assert os.path.basename(sidecar) in err.msg and "field %s" % field in err.msg
    assert os.readlink(sb.p("/usr/bin/f000")) == "/opt/prov/bin/f000"


@pytest.mark.parametrize("make,why", [
    (lambda p: (os.unlink(p), os.symlink("/etc/passwd", p)), "regular file"),
    (lambda p: (os.unlink(p), os.mkfifo(p)), "not a regular file"),
    (lambda p: open(p, "wb").write(b'{"schema": "backup_meta.v2", "x": ' + b"[" * 600000 + b"]" * 600000 + b"}"),
     "larger than"),
    (lambda p: open(p, "wb").write(b'{"schema": "backup_meta.v2", "x": ' + b"[" * 50000 + b"]" * 50000 + b"}"),
     "nested too deeply"),
    (lambda p: _rewrite(p, mode=True), "must be an integer"),
    (lambda p: _rewrite(p, mode=0o10000), "out of range"),
    (lambda p: _rewrite(p, mode=493.0), "must be an integer"),
    (lambda p: _rewrite(p, uid=-1), "out of range"),
    (lambda p: _rewrite(p, payload_hash="A" * 64), "64 lowercase hex"),
    (lambda p: _rewrite(p, prior_kind="directory"), "must be one of"),
    (lambda p: _rewrite(p, tag="other"), "does not match"),
    (lambda p: _rewrite(p, xattrs=dict(("user.k%d" % i, "") for i in range(200))), "more than"),
])
def test_each_bad_sidecar_is_unusable_with_file_and_field(swapped, make, why):
    sb, sidecar, _jdir = swapped
    make(sidecar)
    _rep, err, _w = restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/f000")])
    assert err is not None and err.error_id == "E_BACKUP_MISSING", err
    assert os.path.basename(sidecar) in err.msg and "field " in err.msg and why in err.msg, err.msg
    assert os.readlink(sb.p("/usr/bin/f000")) == "/opt/prov/bin/f000"


def test_duplicate_keys_are_refused():
    data = b'{"schema": "backup_meta.v2", "mode": 493, "mode": 2541}'
    with pytest.raises(sc.SidecarInvalid) as info:
        sc.parse_sidecar(data, ".ls.switchyard.1.bak.meta.json")
    assert info.value.field == "mode" and "more than once" in info.value.reason
