"""One plan, one id: preflight, check mode and apply give the same links the same plan_id and action_ids."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils.engine import (  # noqa: E402
    Settings, apply, plan, preflight, restore)
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries, expand_events  # noqa: E402

PINNED = "3c6becf8-ea2d-5597-a6e6-df617407157b"  # Plan("apply", [link /usr/bin/ls -> /opt/p/ls]), tests/.../test_plan.py


def _ok(result):
    report, err, _w = result
    assert err is None, err and err.msg
    assert validation_errors(report) == []
    return report


def _sandbox(tmp_path):
    sb = make_sandbox(tmp_path)
    os.makedirs(sb.p("/opt/p"))
    with open(sb.p("/opt/p/ls"), "wb") as f:
        f.write(b"#!/bin/sh\nexit 0\n")
    os.chmod(sb.p("/opt/p/ls"), 0o755)
    return sb, [{"source": sb.p("/opt/p/ls"), "target": sb.p("/usr/bin/ls")}]


def test_pinned_vector_is_the_same_in_preflight_check_mode_and_apply(tmp_path):
    sb, links = _sandbox(tmp_path)
    pre = _ok(preflight(Settings(root=sb.root), links=links))
    chk = _ok(apply(Settings(root=sb.root, check_mode=True), links))
    app = _ok(apply(Settings(root=sb.root), links))
    assert plan(Settings(root=sb.root), links).plan_id == PINNED
    assert pre["plan_id"] == chk["plan_id"] == app["plan_id"] == PINNED
    ids = set(r["action_id"] for r in entries(pre))
    assert ids == set(a["action_id"] for a in entries(chk)) == set(a["action_id"] for a in entries(app))
    assert ids == set(r["action_id"] for r in entries(app))
    # Every event of the preflight carries the same plan id as the apply's events.
    assert set(e["plan_id"] for e in expand_events(pre)) == set(e["plan_id"] for e in expand_events(app)) == {PINNED}


def test_several_links_join_row_by_row(tmp_path):
    sb = make_sandbox(tmp_path)
    links = [sb.link("ls"), sb.link("cat")]
    pre = _ok(preflight(Settings(root=sb.root), links=list(reversed(links))))
    app = _ok(apply(Settings(root=sb.root), links))
    assert pre["plan_id"] == app["plan_id"]
    assert (dict((r["path"], r["action_id"]) for r in entries(pre))
            == dict((a["path"], a["action_id"]) for a in entries(app)))


def test_links_and_restores_report_the_apply_plan_id_and_restore_rows_keep_restore_ids(tmp_path):
    sb, links = _sandbox(tmp_path)
    _ok(apply(Settings(root=sb.root), [sb.link("cat")]))
    cat = sb.p("/usr/bin/cat")
    both = _ok(preflight(Settings(root=sb.root), links=links, restores=[cat], fail_on_stop=False))
    assert both["plan_id"] == PINNED
    only_restore = _ok(preflight(Settings(root=sb.root), restores=[cat], which="latest"))
    res = _ok(restore(Settings(root=sb.root, check_mode=True), targets=[cat], which="latest"))
    assert only_restore["plan_id"] == res["plan_id"] != PINNED
    restore_row = [r for r in entries(both) if r["op"] == "restore"][0]
    assert restore_row["action_id"] == entries(only_restore)[0]["action_id"] == entries(res)[0]["action_id"]
    # `which` is part of the restore plan, as in safe_restore.
    prev = _ok(preflight(Settings(root=sb.root), restores=[cat], which="previous", fail_on_stop=False))
    assert prev["plan_id"] != only_restore["plan_id"]
