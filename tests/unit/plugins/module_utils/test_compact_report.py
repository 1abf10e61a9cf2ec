"""Issue 14, compact report: one entry per action, plan-level facts once, events compact and lossless.

The facts state each fact once; entries()/expand_events() must give back exactly the verbose entries and
exactly the events the host wrote to audit_log.  The property test attacks the elisions with entries whose
values differ from the plan's and from what the derivation rules would guess."""
import copy
import json
import os
import sys
import uuid

from hypothesis import given, settings, strategies as st, HealthCheck

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils._report import entries as _rentries, events as _revents  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils.engine import (  # noqa: E402
    Settings, apply, preflight, restore, prune)
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import (  # noqa: E402
    entries, expand_events, validation_errors, redact)

LOG = "/var/log/switchyard/audit.jsonl"


def _host_log(sb):
    with open(sb.p(LOG)) as f:
        return [json.loads(line) for line in f.read().splitlines()]


def _run(sb, fn, *args, **kw):
    before = len(_host_log(sb)) if os.path.exists(sb.p(LOG)) else 0
    rep, err, _w = fn(*args, **kw)
    rep = json.loads(json.dumps(rep))  # as the module returns it
    assert validation_errors(rep) == [], validation_errors(rep)[:3]
    assert expand_events(rep) == _host_log(sb)[before:], rep["stage"]
    return rep, err


def test_every_stage_expands_to_exactly_the_host_audit_log(tmp_path):
    sb = make_sandbox(tmp_path, tools=("ls", "cat", "head"), synthetic=4)
    links = [sb.link(n) for n in ("ls", "cat", "head", "f000", "f001", "f002", "f003")]

    def S(**kw):
        return Settings(root=sb.root, audit_log=sb.p(LOG), **kw)
    _run(sb, preflight, S(), links)
    _run(sb, apply, S(check_mode=True), links)
    app, err = _run(sb, apply, S(), links)
    assert err is None
    _run(sb, apply, S(), links)  # all unchanged
    _run(sb, restore, S(), targets=[sb.p("/usr/bin/ls"), sb.p("/usr/bin/f001")])
    _run(sb, apply, S(), links)  # mixed: two changed, five unchanged
    _run(sb, restore, S(), plan_id=app["plan_id"])
    _run(sb, prune, S(), [sb.p("/usr/bin/ls")], retention_count=1)
    _run(sb, preflight, S(), links, restores=[sb.p("/usr/bin/cat")])
    # a failing apply: its rollback events too
    bad = [sb.link("ls"), {"source": sb.p("/opt/prov/bin/cat"), "target": sb.p("/usr/bin/cat")}]
    rep, err = _run(sb, apply, S(), bad, smoke=[{"argv": ["/usr/bin/ls", "--no-such-option"], "rc": 0}])
    assert err is not None and any(e["stage"] == "rollback" for e in expand_events(rep))


def test_event_ids_are_derived_from_run_id_and_seq(tmp_path):
    sb = make_sandbox(tmp_path, tools=("ls",))
    rep, _err = _run(sb, apply, Settings(root=sb.root, audit_log=sb.p(LOG)), [sb.link("ls")])
    for i, e in enumerate(_host_log(sb)):
        assert e["seq"] == i and e["event_id"] == str(uuid.uuid5(uuid.UUID(rep["run_id"]), "event/%d" % i))
    assert all(k not in e for e in rep["events"] for k in ("event_id", "seq", "run_id", "plan_id", "ts"))


def test_two_hundred_links_stay_under_400_bytes_per_link_with_one_entry_each(tmp_path):
    sb = make_sandbox(tmp_path, tools=(), synthetic=200)
    links = [sb.link("f%03d" % i) for i in range(200)]
    rep, err, _w = apply(Settings(root=sb.root), links)
    assert err is None
    size = len(json.dumps(rep))
    print("apply report of 200 links: %d bytes, %.0f per link" % (size, size / 200.0))
    assert size <= 400 * 200
    assert "rows" not in rep and len(rep["actions"]) == 200 and validation_errors(rep) == []
    # plan-level facts once: no entry repeats the mount, the immutable probe or the preservation tier
    assert rep["plan"]["mounts"] and all(k not in a for a in rep["actions"]
                                         for k in ("mount", "immutable_detection_method", "preservation"))
    full = entries(rep)
    for a, link in zip(full, sorted(links, key=lambda l: l["target"])):
        assert a["path"] == link["target"][len(sb.root):] and a["result"] == "changed" and a["policy_ok"]
        assert a["after"] == {"kind": "symlink", "link_target": a["source"], "mode": "0777", "owner": "0:0"}
        assert a["before"]["sha256"] == a["before_hash"] == a["backup"]["payload_hash"]
        assert a["mount"]["mountpoint"] and a["immutable_check"]["reliable"] is True
        assert a["stops"] == [] and a["link_text"] == a["source"]


def test_an_after_state_that_is_not_the_plain_link_is_kept(tmp_path):
    """Owner 0:0 is part of the derived after state: a link owned by someone else is reported as it is."""
    sb = make_sandbox(tmp_path, tools=("ls", "cat"))
    rep, _e, _w = apply(Settings(root=sb.root), [sb.link("ls"), sb.link("cat")])
    v = copy.deepcopy(rep)
    full = entries(v)
    full[1]["after"]["owner"] = "1000:1000"
    verbose = dict(v, actions=full, events=expand_events(v))
    verbose.pop("plan", None)
    _revents.compact_report(verbose)
    assert verbose["actions"][1]["after"]["owner"] == "1000:1000"
    assert entries(verbose)[1]["after"]["owner"] == "1000:1000" and entries(verbose)[0] == entries(rep)[0]


def test_redact_keeps_check_mode_and_commit_equal(tmp_path):
    sb = make_sandbox(tmp_path, tools=("ls", "cat"), synthetic=3)
    links = [sb.link(n) for n in ("ls", "cat", "f000", "f001", "f002")]
    dry, _e, _w = apply(Settings(root=sb.root, check_mode=True), links)
    real, _e, _w = apply(Settings(root=sb.root), links)
    assert redact(dry) == redact(real)


# -- the elisions are exact whatever the entries say -----------------------------------------------

_mount = st.fixed_dictionaries({"mountpoint": st.sampled_from(["/", "/usr", "/opt"]),
                                "fstype": st.sampled_from(["ext4", "tmpfs"]), "rw": st.booleans(),
                                "exec": st.booleans(), "method": st.just("statvfs")})
_sha = st.one_of(st.none(), st.sampled_from(["a" * 64, "b" * 64]))
_state = st.one_of(st.none(), st.fixed_dictionaries(
    {"kind": st.sampled_from(["file", "symlink", "absent"])},
    optional={"mode": st.sampled_from(["0755", "0777"]), "owner": st.sampled_from(["0:0", "1:1"]),
              "sha256": _sha, "link_target": st.sampled_from(["/opt/p/a", "/opt/p/b"]), "size": st.integers(0, 3)}))
_backup = st.fixed_dictionaries({}, optional={
    "backup_name": st.sampled_from([".a.switchyard.1.bak", ".a.switchyard.1.bak.meta.json", "x"]),
    "sidecar": st.sampled_from([".a.switchyard.1.bak.meta.json", "y"]), "created_ms": st.sampled_from([1, 2]),
    "prior_kind": st.sampled_from(["file", "absent"]), "payload_hash": _sha, "backup_method": st.just("hardlink")})
_entry = st.fixed_dictionaries(
    {"action_id": st.uuids().map(str), "path": st.sampled_from(["/usr/bin/a", "/usr/bin/b", "/bin/c"])},
    optional={"source": st.sampled_from(["/opt/p/a", "/opt/p/b"]), "link_text": st.sampled_from(["/opt/p/a", "x"]),
              "op": st.sampled_from(["link", "restore"]), "policy_ok": st.booleans(),
              "stops": st.lists(st.fixed_dictionaries({"msg": st.just("m"), "knob": st.just("k"),
                                                       "error_id": st.just("E_POLICY")}), max_size=1),
              "warnings": st.lists(st.just("w"), max_size=1), "notes": st.lists(st.just("n"), max_size=1),
              "current_kind": st.sampled_from(["file", "symlink"]), "mount": _mount, "source_mount": _mount,
              "immutable_detection_method": st.sampled_from(["ioctl", "lsattr"]),
              "result": st.sampled_from(["changed", "unchanged", "skipped"]), "hash_alg": st.just("sha256"),
              "before_hash": _sha, "after_hash": _sha, "before": _state, "after": _state, "backup": _backup,
              "swap_method": st.sampled_from(["exchange", None]), "absent": st.just(["op"])})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stage=st.sampled_from(["preflight", "apply", "restore"]), items=st.lists(_entry, max_size=6))
def test_compact_then_expand_gives_back_every_entry_exactly(stage, items):
    key = _rentries.ENTRY_KEYS[stage]
    for e in items:
        e.pop("absent", None)  # a real entry never has the marker; it is the plan's to write
    rep = {"stage": stage, "run_id": str(uuid.uuid4()), "ts": "2026-12-01T10:00:00.000000Z", key: copy.deepcopy(items),
           "events": []}
    _revents.compact_report(rep)
    assert entries(rep) == items
