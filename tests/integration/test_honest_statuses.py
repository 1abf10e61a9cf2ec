"""Issue 16.3 and 13.3 with real ansible-playbook runs: every failure is typed and reported, module attributes
say what the modules do, and the action plugin's report validation is real (and checked before the module runs)."""
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from harness import run_playbook  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tree(sb):
    """Every entry under the sandbox root with what it is (bytes hash, link text, mode)."""
    out = {}
    for d, dirs, files in os.walk(sb.root):
        for n in dirs + files:
            rel = "/" + os.path.relpath(os.path.join(d, n), sb.root)
            out[rel] = sb.snapshot([rel])[rel] if not os.path.isdir(os.path.join(d, n)) or os.path.islink(
                os.path.join(d, n)) else ("directory", oct(os.lstat(os.path.join(d, n)).st_mode))
    return out


def _play(tasks):
    return "- hosts: localhost\n  gather_facts: false\n  tasks:\n" + "\n".join(
        "    " + line for line in tasks.strip("\n").splitlines()) + "\n"


@pytest.mark.parametrize("module,policy", [
    ("safe_apply", {"suid_sgdi": "warn"}),           # unknown key
    ("safe_preflight", {"hardlinks": "maybe"}),       # not one of the choices
    ("safe_restore", {"rescue_min_count": "many"}),   # not an int
    ("safe_prune", {"retention_count": 2, "nope": 1}),
])
def test_every_invalid_policy_carries_e_policy_and_exit_code_10(tmp_path, module, policy):
    sb = make_sandbox(tmp_path)
    before = _tree(sb)
    args = {"root": sb.root, "policy": policy}
    if module in ("safe_apply", "safe_preflight"):
        args["links"] = [sb.link("ls")]
    else:
        args["targets"] = [sb.p("/usr/bin/ls")]
    r = run_playbook(tmp_path, _play("""
- name: run
  switchyard.fs.%s: %s
  ignore_errors: true
""" % (module, json.dumps(args))))
    res = r.result("run")
    assert res["failed"] and res["error_id"] == "E_POLICY" and res["exit_code"] == 10, res
    assert res["summary_error_ids"] == ["E_POLICY"]
    bad = [k for k in policy if k not in ("retention_count",)][0]
    assert bad in res["msg"], res["msg"]
    assert _tree(sb) == before


def test_restore_by_plan_id_with_tampered_backup_or_unknown_plan_returns_the_full_report(tmp_path):
    sb = make_sandbox(tmp_path)
    r = run_playbook(tmp_path, _play("""
- name: apply
  switchyard.fs.safe_apply: {root: %s, links: %s}
""" % (sb.root, json.dumps([sb.link("ls")]))))
    assert r.rc == 0, r
    plan_id = r.result("apply")["plan_id"]
    bak = sb.p("/usr/bin/" + sb.backups("ls")[0])
    with open(bak, "r+b") as f:
        f.seek(10)
        f.write(b"\x00TAMPERED\x00")
    unknown = str(uuid.uuid4())
    r2 = run_playbook(tmp_path, _play("""
- name: tampered
  switchyard.fs.safe_restore: {root: %(root)s, plan_id: "%(plan)s"}
  ignore_errors: true
- name: unknown
  switchyard.fs.safe_restore: {root: %(root)s, plan_id: "%(unknown)s"}
  ignore_errors: true
""" % {"root": sb.root, "plan": plan_id.upper(), "unknown": unknown}))
    res = r2.result("tampered")
    assert res["failed"] and res["error_id"] == "E_RESTORE_FAILED" and res["exit_code"] == 70, res
    rep = res["ansible_facts"]["switchyard_restore"]
    assert validation_errors(rep) == [] and rep["plan_id"] == plan_id == res["plan_id"]
    assert rep["summary"]["decision"] == "failure" and rep["summary"]["error_id"] == "E_RESTORE_FAILED"
    failure = [e for e in expand_events(rep) if e["decision"] == "failure"]
    assert failure and "does not match its sidecar" in failure[-1]["msg"]
    assert os.readlink(sb.p("/usr/bin/ls")) == "/opt/prov/bin/ls"  # nothing was touched
    res = r2.result("unknown")
    assert res["failed"] and res["error_id"] == "E_BACKUP_MISSING" and res["exit_code"] == 60, res
    rep = res["ansible_facts"]["switchyard_restore"]
    assert validation_errors(rep) == [] and rep["plan_id"] == unknown and expand_events(rep)
    assert rep["lock_backend"] == "flock" and rep["lock_attempts"] >= 1


def test_diff_only_where_documented_and_async_refused(tmp_path):
    sb = make_sandbox(tmp_path)
    links = json.dumps([sb.link("ls")])
    r = run_playbook(tmp_path, _play("""
- name: preflight
  switchyard.fs.safe_preflight: {root: %(root)s, links: %(links)s}
- name: apply
  switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s}
- name: prune
  switchyard.fs.safe_prune: {root: %(root)s, targets: ["%(t)s"], retention_count: 1}
- name: async apply
  switchyard.fs.safe_restore: {root: %(root)s, targets: ["%(t)s"]}
  async: 30
  poll: 2
  ignore_errors: true
""" % {"root": sb.root, "links": links, "t": sb.p("/usr/bin/ls")}), extra_args=["--diff"])
    assert "diff" not in r.result("preflight") and "diff" not in r.result("prune")
    assert "/usr/bin/ls" in r.result("apply")["diff"]["after"]
    res = r.result("async apply")
    assert res["failed"] and "async" in res["msg"].lower(), res
    assert os.readlink(sb.p("/usr/bin/ls")) == "/opt/prov/bin/ls"  # the refused restore never ran
    # What the documentation says, as ansible-doc renders it (the attributes come partly from doc fragments).
    out = subprocess.check_output([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "--json", "-t", "module"]
                                  + ["switchyard.fs." + m for m in ("safe_preflight", "safe_apply", "safe_restore", "safe_prune")])
    docs = json.loads(out)
    for name, diff in (("safe_preflight", "none"), ("safe_apply", "full"), ("safe_restore", "full"), ("safe_prune", "none")):
        attributes = docs["switchyard.fs." + name]["doc"]["attributes"]
        assert attributes["diff_mode"]["support"] == diff and attributes["async"]["support"] == "none", name


def _collection_copy(tmp_path):
    """A private copy of the collection (plugins, schema, metadata) whose controller side a test may change."""
    dest = tmp_path / "collections" / "ansible_collections" / "switchyard" / "fs"
    dest.mkdir(parents=True)
    for name in ("plugins", "schemas", "meta", "roles"):
        if os.path.isdir(os.path.join(REPO, name)):
            shutil.copytree(os.path.join(REPO, name), str(dest / name),
                            ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "galaxy.yml"), str(dest / "galaxy.yml"))
    return str(tmp_path / "collections"), dest


def test_action_plugin_fails_a_task_whose_report_does_not_validate(tmp_path):
    sb = make_sandbox(tmp_path)
    colls, dest = _collection_copy(tmp_path)
    schema_path = dest / "schemas" / "report.schema.json"
    schema = json.loads(schema_path.read_text())
    # The module's report is unchanged; the schema on the controller now demands a field it never has.
    schema["$defs"]["summary"].setdefault("required", []).append("not_in_any_report")
    schema_path.write_text(json.dumps(schema))
    r = run_playbook(tmp_path, _play("""
- name: preflight
  switchyard.fs.safe_preflight: {root: %s, links: %s}
  ignore_errors: true
""" % (sb.root, json.dumps([sb.link("ls")]))), env={"ANSIBLE_COLLECTIONS_PATH": colls})
    res = r.result("preflight")
    assert res["failed"] and "does not validate against schemas/report.schema.json" in res["msg"], res
    assert any("not_in_any_report" in e for e in res["schema_errors"]), res["schema_errors"]
