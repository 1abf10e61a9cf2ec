"""switchyard.fs.audit_jsonl enabled in a real ansible-playbook run: one JSON line per event."""
import copy
import json
import os

import jsonschema
import pytest

from harness import REPO, run_playbook
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events  # noqa: E402

CONTEXT = ("host", "task", "task_action", "play")

PLAYBOOK = """
- name: Audit sink
  hosts: all
  gather_facts: false
  module_defaults:
    group/switchyard.fs.swap:
      root: "{root}"
  tasks:
    - name: Preflight
      switchyard.fs.safe_preflight:
        links: {links}

    - name: Apply
      switchyard.fs.safe_apply:
        links: {links}
        smoke: resolve

    - name: Apply with a failing smoke check
      switchyard.fs.safe_apply:
        links: {more}
        smoke:
          - argv: ["/usr/bin/head", "--no-such-option"]
            rc: 0
      ignore_errors: true

    - name: Restore
      switchyard.fs.safe_restore:
        targets: {targets}
"""


def event_validator():
    with open(os.path.join(REPO, "schemas", "report.schema.json")) as f:
        schema = json.load(f)
    # The callback writes full audit events (the facts carry them compact, #/$defs/event).
    event_schema = {"$schema": schema.get("$schema"), "$defs": schema["$defs"], "$ref": "#/$defs/audit_event"}
    cls = jsonschema.validators.validator_for(event_schema)
    return cls(event_schema)


def reported_events(run, host):
    """Every event of every switchyard fact of every task result, in run order."""
    out = []
    for play in run.data.get("plays", []):
        for task in play.get("tasks", []):
            res = task["hosts"].get(host)
            if not res:
                continue
            for key, report in sorted((res.get("ansible_facts") or {}).items()):
                if key.startswith("switchyard_"):
                    out.extend((task["task"]["name"], e) for e in expand_events(report))
    return out


@pytest.fixture
def sandbox(tmp_path):
    from sandbox import make_sandbox  # tests/sandbox.py, shared with the other integration tests
    return make_sandbox(tmp_path, tools=("ls", "cat", "head"))


def test_every_event_of_every_task_is_one_valid_json_line(tmp_path, sandbox):
    audit = tmp_path / "controller" / "audit.jsonl"
    links = [sandbox.link("ls"), sandbox.link("cat")]
    yaml = PLAYBOOK.format(root=sandbox.root, links=json.dumps(links), more=json.dumps([sandbox.link("head")]),
                           targets=json.dumps([link["target"] for link in links]))
    run = run_playbook(tmp_path, yaml, env={"ANSIBLE_CALLBACKS_ENABLED": "switchyard.fs.audit_jsonl",
                                            "SWITCHYARD_AUDIT_JSONL": str(audit)})
    assert run.rc == 0, run
    expected = reported_events(run, "localhost")
    stages = set(e["stage"] for _t, e in expected)
    assert {"preflight", "apply.result", "rollback", "restore"} <= stages, stages

    with open(str(audit)) as f:
        raw = f.read()
    lines = raw.splitlines()
    assert raw.endswith("\n")
    records = [json.loads(line) for line in lines]  # each line is one JSON object
    assert all(isinstance(r, dict) for r in records)
    assert len(records) == len(expected)
    assert len(set((r["run_id"], r["event_id"]) for r in records)) == len(records)

    validator = event_validator()
    for record, (task, event) in zip(records, expected):
        assert record["host"] == "localhost"
        assert record["task"] == task
        assert record["play"] == "Audit sink"
        assert record["task_action"].endswith(("safe_preflight", "safe_apply", "safe_restore"))
        bare = dict((k, v) for k, v in record.items() if k not in CONTEXT)
        assert bare == event
        errors = sorted(validator.iter_errors(copy.deepcopy(bare)), key=str)
        assert not errors, "%s: %s" % (record["stage"], errors[0].message)

    failed = [r for r in records if r["task"] == "Apply with a failing smoke check"]
    assert any(r["stage"] == "rollback.summary" for r in failed)


def test_callback_lines_equal_the_host_audit_log_lines(tmp_path, sandbox):
    """The facts carry compact events; the callback expands them and must write exactly what the host wrote."""
    audit = tmp_path / "controller" / "audit.jsonl"
    host_log = sandbox.p("/var/log/switchyard/audit.jsonl")
    links = [sandbox.link("ls"), sandbox.link("cat")]
    yaml = PLAYBOOK.format(root=sandbox.root, links=json.dumps(links), more=json.dumps([sandbox.link("head")]),
                           targets=json.dumps([link["target"] for link in links]))
    yaml = yaml.replace('      root: "%s"\n' % sandbox.root,
                        '      root: "%s"\n      audit_log: "%s"\n' % (sandbox.root, host_log))
    assert "audit_log" in yaml
    run = run_playbook(tmp_path, yaml, env={"ANSIBLE_CALLBACKS_ENABLED": "switchyard.fs.audit_jsonl",
                                            "SWITCHYARD_AUDIT_JSONL": str(audit)})
    assert run.rc == 0, run
    with open(host_log) as f:
        host = [json.loads(line) for line in f.read().splitlines()]
    with open(str(audit)) as f:
        controller = [dict((k, v) for k, v in json.loads(line).items() if k not in CONTEXT)
                      for line in f.read().splitlines()]
    stages = set(e["stage"] for e in host)
    assert {"plan", "preflight", "preflight.summary", "apply.result", "rollback", "rollback.summary", "restore"} <= stages
    assert len(host) > 20 and controller == host
    # and the facts really are compact: per-action events there carry no envelope and reference their entry
    facts = [e for _t, e in reported_events(run, "localhost")]
    assert facts == host
    for play in run.data["plays"]:
        for task in play["tasks"]:
            for key, report in (task["hosts"]["localhost"].get("ansible_facts") or {}).items():
                if key.startswith("switchyard_"):
                    assert all("run_id" not in e and "event_id" not in e for e in report["events"])
                    assert any("a" in e for e in report["events"])


def test_a_second_run_appends(tmp_path, sandbox):
    audit = tmp_path / "audit.jsonl"
    links = [sandbox.link("ls")]
    yaml = """
- name: Audit sink
  hosts: all
  gather_facts: false
  tasks:
    - name: Preflight
      switchyard.fs.safe_preflight:
        root: "{root}"
        links: {links}
""".format(root=sandbox.root, links=json.dumps(links))
    env = {"ANSIBLE_CALLBACKS_ENABLED": "switchyard.fs.audit_jsonl", "SWITCHYARD_AUDIT_JSONL": str(audit)}
    first = run_playbook(tmp_path, yaml, env=env)
    assert first.rc == 0, first
    n = len(open(str(audit)).read().splitlines())
    assert n > 0
    second = run_playbook(tmp_path, yaml, env=env)
    assert second.rc == 0, second
    records = [json.loads(line) for line in open(str(audit)).read().splitlines()]
    assert len(records) == 2 * n
    assert len(set(r["run_id"] for r in records)) == 2
