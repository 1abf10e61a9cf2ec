"""Issue 16.3: statuses say what they mean, and the schema enforces exactly that."""
import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply, preflight, restore  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs.lock import acquire_lock  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events  # noqa: E402


def test_apply_attempt_event_carries_the_real_lock_attempts(tmp_path):
    sb = make_sandbox(tmp_path)
    rep, err, _w = apply(Settings(root=sb.root), [sb.link("ls")])
    assert err is None and validation_errors(rep) == []
    ev = [e for e in expand_events(rep) if e["stage"] == "apply.attempt"]
    assert len(ev) == 1 and ev[0]["decision"] == "success"
    assert ev[0]["lock_attempts"] == rep["lock_attempts"] >= 1 and ev[0]["lock_backend"] == "flock"
    # A held lock: the failure event counts every attempt made while waiting.
    holder = acquire_lock(sb.p("/run/lock/switchyard.lock"), 0, "11111111-2222-5333-8444-555555555555")
    try:
        rep, err, _w = apply(Settings(root=sb.root, lock_timeout=0.4), [sb.link("cat")])
    finally:
        holder.release()
    assert err is not None and err.error_id == "E_LOCKING" and validation_errors(rep) == []
    ev = [e for e in expand_events(rep) if e["stage"] == "apply.attempt"]
    assert len(ev) == 1 and ev[0]["decision"] == "failure"
    assert ev[0]["lock_attempts"] == rep["lock_attempts"] > 1


def test_schema_allows_unknown_immutable_only_when_unreliable(tmp_path):
    sb = make_sandbox(tmp_path)
    rep, err, _w = preflight(Settings(root=sb.root), links=[sb.link("ls")])
    assert err is None and validation_errors(rep) == []
    check = rep["rows"][0]["immutable_check"]
    assert check["reliable"] is True and check["immutable"] is False
    lying = copy.deepcopy(rep)
    lying["rows"][0]["immutable_check"]["immutable"] = None  # null while the probe says it is reliable
    assert any("immutable_check" in e for e in validation_errors(lying))
    unknown = copy.deepcopy(rep)
    unknown["rows"][0]["immutable_check"].update(immutable=None, append_only=None, reliable=False)
    assert validation_errors(unknown) == []
    unknown["rows"][0]["immutable_check"]["immutable"] = "unknown"
    assert validation_errors(unknown) != []


def test_preservation_statuses_use_spec_vocabulary_and_old_sidecars_are_translated(tmp_path):
    sb = make_sandbox(tmp_path)
    target = sb.p("/usr/bin/ls")
    assert apply(Settings(root=sb.root), [sb.link("ls")])[1] is None
    # A sidecar written by 0.1.0 for a copy backup recorded its statuses as "unsupported".
    sidecar = sb.backups("ls")[0] + ".meta.json"
    path = sb.p("/usr/bin/" + sidecar)
    meta = json.load(open(path))
    meta["backup_preservation"] = {"mode": "applied", "uid": "unsupported"}
    with open(path, "w") as f:
        json.dump(meta, f)
    os.unlink(target)  # the link is gone; restore puts the file back
    rep, err, _w = restore(Settings(root=sb.root, policy={"preservation_tier": "extended"}), targets=[target])
    assert err is None and validation_errors(rep) == []
    res = rep["results"][0]
    assert res["backup"]["backup_preservation"] == {"mode": "applied", "uid": "skipped-unsupported"}
    assert set(res["preservation_applied"].values()) <= {"applied", "skipped-unsupported", "failed"}
    bad = copy.deepcopy(rep)
    bad["results"][0]["preservation_applied"] = {"mode": "unsupported"}
    assert validation_errors(bad) != []
