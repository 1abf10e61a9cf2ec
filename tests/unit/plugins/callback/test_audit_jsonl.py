"""Unit tests for the switchyard.fs.audit_jsonl callback with synthetic task results."""
import json
import os
import stat

import pytest

from ansible.plugins.loader import callback_loader, init_plugin_loader

# tests/conftest.py links the checkout in as <repo>/.build/collections/ansible_collections/switchyard/fs.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
init_plugin_loader([os.path.join(REPO, ".build", "collections")])

ENVELOPE = ("schema_version", "ts", "plan_id", "run_id", "event_id", "seq", "stage",
            "decision", "dry_run", "collection_version")


class FakeHost(object):
    def __init__(self, name):
        self.name = name

    def get_name(self):
        return self.name


class FakeTask(object):
    def __init__(self, name, action="switchyard.fs.safe_apply"):
        self.name = name
        self.action = action

    def get_name(self):
        return self.name


class FakePlay(object):
    def get_name(self):
        return "Swap play"


class FakeResult(object):
    def __init__(self, host, task, result):
        self._host = FakeHost(host)
        self._task = FakeTask(task)
        self._result = result


def make_event(seq, stage="apply.result", decision="success", run_id="run-1", **extra):
    event = {
        "schema_version": 1,
        "ts": "2025-01-01T00:00:%02dZ" % seq,
        "plan_id": "plan-1",
        "run_id": run_id,
        "event_id": "%s-ev-%d" % (run_id, seq),
        "seq": seq,
        "stage": stage,
        "decision": decision,
        "dry_run": False,
        "collection_version": "0.1.0",
    }
    event.update(extra)
    return event


def facts(key, events):
    return {"ansible_facts": {key: {"plan_id": "plan-1", "events": events}}}


def load_callback(path, fsync=True):
    cb = callback_loader.get("switchyard.fs.audit_jsonl")
    assert cb is not None, "callback switchyard.fs.audit_jsonl not found"
    cb.set_options(direct={"path": str(path), "fsync": fsync})
    cb.v2_playbook_on_play_start(FakePlay())
    return cb


def read_lines(path):
    with open(str(path)) as f:
        raw = f.read()
    assert raw.endswith("\n") or raw == ""
    return [json.loads(line) for line in raw.splitlines()]


def test_callback_metadata_is_an_opt_in_notification():
    cb = callback_loader.get("switchyard.fs.audit_jsonl")
    assert cb.CALLBACK_TYPE == "notification"
    assert cb.CALLBACK_NEEDS_ENABLED is True


def test_path_option_is_read_from_switchyard_audit_jsonl_env(tmp_path, monkeypatch):
    target = tmp_path / "env.jsonl"
    monkeypatch.setenv("SWITCHYARD_AUDIT_JSONL", str(target))
    cb = callback_loader.get("switchyard.fs.audit_jsonl")
    cb.set_options()
    assert cb.get_option("path") == str(target)


def test_ok_result_writes_one_line_per_event_with_host_and_task(tmp_path):
    out = tmp_path / "audit.jsonl"
    cb = load_callback(out)
    events = [make_event(1, "plan"), make_event(2, "apply.attempt"), make_event(3, "apply.result")]
    cb.v2_runner_on_ok(FakeResult("web01", "Swap ls", facts("switchyard_apply", events)))
    lines = read_lines(out)
    assert len(lines) == 3
    for line, event in zip(lines, events):
        assert line["host"] == "web01"
        assert line["task"] == "Swap ls"
        assert line["task_action"] == "switchyard.fs.safe_apply"
        assert line["play"] == "Swap play"
        for key in ENVELOPE:
            assert line[key] == event[key]


def test_failed_result_events_are_written(tmp_path):
    out = tmp_path / "audit.jsonl"
    cb = load_callback(out)
    result = facts("switchyard_apply", [make_event(1, "apply.result", "failure"),
                                        make_event(2, "rollback"), make_event(3, "rollback.summary")])
    result.update({"failed": True, "error_id": "E_SMOKE", "rolled_back": True})
    cb.v2_runner_on_failed(FakeResult("db01", "Swap", result), ignore_errors=False)
    lines = read_lines(out)
    assert [line["stage"] for line in lines] == ["apply.result", "rollback", "rollback.summary"]
    assert lines[0]["decision"] == "failure"


def test_events_of_every_stage_key_and_every_host_are_written(tmp_path):
    out = tmp_path / "audit.jsonl"
    cb = load_callback(out)
    result = {"ansible_facts": {
        "switchyard_preflight": {"events": [make_event(1, "preflight", run_id="r-pre")]},
        "switchyard_apply": {"events": [make_event(1, "apply.result", run_id="r-app")]},
        "unrelated": {"events": [make_event(9, "plan", run_id="not-ours")]},
    }}
    cb.v2_runner_on_ok(FakeResult("h1", "t", result))
    cb.v2_runner_on_ok(FakeResult("h2", "t", result))
    lines = read_lines(out)
    assert sorted((line["host"], line["stage"]) for line in lines) == [
        ("h1", "apply.result"), ("h1", "preflight"), ("h2", "apply.result"), ("h2", "preflight")]


def test_events_are_read_from_exactly_the_fact_keys_of_the_table(tmp_path):
    """Every report key of _facts.FACT_KEY is read; another switchyard_* fact (a role's, a user's) is not a report."""
    from ansible_collections.switchyard.fs.plugins.module_utils._facts import FACT_KEY
    out = tmp_path / "audit.jsonl"
    cb = load_callback(out)
    result = {"ansible_facts": dict((key, {"events": [make_event(1, run_id="r-" + stage)]})
                                    for stage, key in FACT_KEY.items())}
    result["ansible_facts"]["switchyard_last_run"] = {"events": [make_event(1, run_id="not-a-report")]}
    cb.v2_runner_on_ok(FakeResult("h1", "t", result))
    assert sorted(line["run_id"] for line in read_lines(out)) == sorted("r-" + stage for stage in FACT_KEY)


def test_loop_items_and_summary_result_do_not_duplicate_events(tmp_path):
    out = tmp_path / "audit.jsonl"
    cb = load_callback(out)
    item1 = facts("switchyard_restore", [make_event(1, "restore", run_id="r1")])
    item2 = facts("switchyard_restore", [make_event(1, "restore", run_id="r2")])
    cb.v2_runner_item_on_ok(FakeResult("h1", "Restore", item1))
    cb.v2_runner_item_on_failed(FakeResult("h1", "Restore", item2))
    cb.v2_runner_on_failed(FakeResult("h1", "Restore", {"results": [item1, item2], "failed": True}))
    lines = read_lines(out)
    assert sorted(line["run_id"] for line in lines) == ["r1", "r2"]


def test_event_keys_clashing_with_context_are_preserved(tmp_path):
    out = tmp_path / "audit.jsonl"
    cb = load_callback(out)
    cb.v2_runner_on_ok(FakeResult("inv-name", "t", facts("switchyard_apply", [make_event(1, host="fqdn.example")])))
    line = read_lines(out)[0]
    assert line["host"] == "inv-name"
    assert line["event_host"] == "fqdn.example"


def test_results_without_switchyard_facts_write_nothing(tmp_path):
    out = tmp_path / "audit.jsonl"
    cb = load_callback(out)
    cb.v2_runner_on_ok(FakeResult("h1", "t", {"changed": False}))
    cb.v2_runner_on_ok(FakeResult("h1", "t", {"ansible_facts": {"switchyard_apply": "not a dict"}}))
    cb.v2_runner_on_ok(FakeResult("h1", "t", {"ansible_facts": {"switchyard_apply": {"events": None}}}))
    assert not out.exists()


def test_appends_to_existing_file_and_creates_new_file_private(tmp_path):
    out = tmp_path / "sub" / "audit.jsonl"
    cb = load_callback(out)
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_prune", [make_event(1, "prune.result", run_id="a")])))
    cb.v2_playbook_on_stats(None)
    assert stat.S_IMODE(os.stat(str(out)).st_mode) == 0o600
    cb2 = load_callback(out)
    cb2.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_prune", [make_event(1, "prune.result", run_id="b")])))
    cb2.v2_playbook_on_stats(None)
    assert [line["run_id"] for line in read_lines(out)] == ["a", "b"]


def test_file_is_opened_append_only_and_fsynced(tmp_path, monkeypatch):
    out = tmp_path / "audit.jsonl"
    opened_flags = []
    fsynced = []
    real_open, real_fsync = os.open, os.fsync

    def spy_open(path, flags, *args):
        if str(path) == str(out):
            opened_flags.append(flags)
        return real_open(path, flags, *args)

    def spy_fsync(fd):
        fsynced.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    cb = load_callback(out)
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_apply", [make_event(1), make_event(2)])))
    assert len(opened_flags) == 1
    assert opened_flags[0] & os.O_APPEND
    assert not opened_flags[0] & os.O_TRUNC
    # The file after the batch, and the directory once for the new entry.
    assert len(fsynced) >= 2


def test_fsync_can_be_disabled(tmp_path, monkeypatch):
    out = tmp_path / "audit.jsonl"
    calls = []
    monkeypatch.setattr(os, "fsync", calls.append)
    cb = load_callback(out, fsync=False)
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_apply", [make_event(1)])))
    assert calls == []
    assert len(read_lines(out)) == 1


def test_unset_path_warns_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("SWITCHYARD_AUDIT_JSONL", raising=False)
    cb = callback_loader.get("switchyard.fs.audit_jsonl")
    cb.set_options()
    warnings = []
    monkeypatch.setattr(cb._display, "warning", lambda msg, *a, **k: warnings.append(msg))
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_apply", [make_event(1)])))
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_apply", [make_event(2)])))
    assert len(warnings) == 1
    assert "SWITCHYARD_AUDIT_JSONL" in warnings[0]


def test_write_failure_is_reported_not_raised(tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    cb = load_callback(blocker / "audit.jsonl")
    errors = []
    monkeypatch.setattr(cb._display, "error", lambda msg, *a, **k: errors.append(msg))
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_apply", [make_event(1)])))
    assert len(errors) == 1
    assert "could not append 1 audit event" in errors[0]


@pytest.mark.parametrize("value", [{"a", "b"}, b"bytes", object()])
def test_non_json_values_are_stringified_not_dropped(tmp_path, value):
    out = tmp_path / "audit.jsonl"
    cb = load_callback(out)
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_apply", [make_event(1, odd=value)])))
    assert "odd" in read_lines(out)[0]


def _record_errors(cb, monkeypatch):
    errors = []
    monkeypatch.setattr(cb._display, "error", lambda msg, *a, **k: errors.append(msg))
    return errors


def test_planted_symlink_at_path_is_refused_and_its_target_untouched(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("root-only content\n")
    out = tmp_path / "audit.jsonl"
    os.symlink(str(victim), str(out))
    cb = load_callback(out)
    errors = _record_errors(cb, monkeypatch)
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_apply", [make_event(1)])))
    assert victim.read_text() == "root-only content\n"
    assert len(errors) == 1 and "symlink" in errors[0]


def test_dangling_symlink_at_path_creates_nothing_where_it_points(tmp_path, monkeypatch):
    out = tmp_path / "audit.jsonl"
    os.symlink(str(tmp_path / "created-through-link"), str(out))
    cb = load_callback(out)
    errors = _record_errors(cb, monkeypatch)
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_apply", [make_event(1)])))
    assert not os.path.lexists(str(tmp_path / "created-through-link"))
    assert len(errors) == 1


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_non_regular_file_at_path_is_refused_without_blocking(tmp_path, monkeypatch, kind):
    out = tmp_path / "audit.jsonl"
    if kind == "fifo":
        os.mkfifo(str(out))  # a blocking open for writing would hang here forever: nobody reads it
    else:
        out.mkdir()
    cb = load_callback(out)
    errors = _record_errors(cb, monkeypatch)
    cb.v2_runner_on_ok(FakeResult("h1", "t", facts("switchyard_apply", [make_event(1)])))
    assert len(errors) == 1 and "could not append 1 audit event" in errors[0]
