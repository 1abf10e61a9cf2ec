"""Issue 13.3: the action plugin checks that it can validate the report before it runs the module."""
import json
import os
import sys

from harness import default_python, run_playbook  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import make_sandbox  # noqa: E402

from test_honest_statuses import _play, _tree  # noqa: E402


def test_controller_without_jsonschema_fails_before_the_module_runs(tmp_path):
    """Issue 13.3: the check runs first, so the host is never swapped behind a task that then fails."""
    sb = make_sandbox(tmp_path)
    shim = tmp_path / "no-jsonschema"
    (shim / "jsonschema").mkdir(parents=True)
    (shim / "jsonschema" / "__init__.py").write_text("raise ImportError('jsonschema hidden by the test shim')\n")
    before = _tree(sb)
    r = run_playbook(tmp_path, _play("""
- name: apply
  switchyard.fs.safe_apply: {root: %s, links: %s}
  ignore_errors: true
""" % (sb.root, json.dumps([sb.link("ls"), sb.link("cat")]))), env={"PYTHONPATH": str(shim)})
    res = r.result("apply")
    assert res["failed"] and "jsonschema" in res["msg"] and "was not run" in res["msg"], res
    assert res["error_id"] == "E_POLICY" and "ansible_facts" not in res
    assert _tree(sb) == before  # no swap, no backup, no journal, no lock file
    assert not os.path.exists(sb.p("/var/lib/switchyard")) and not os.path.islink(sb.p("/usr/bin/ls"))
    # The shim really is what made the difference: without it the same play swaps.
    r2 = run_playbook(tmp_path, _play("""
- name: apply
  switchyard.fs.safe_apply: {root: %s, links: %s}
""" % (sb.root, json.dumps([sb.link("ls")]))))
    assert r2.rc == 0, r2
    assert os.path.islink(sb.p("/usr/bin/ls"))


def test_jsonschema_is_imported_once_per_run_not_once_per_host(tmp_path):
    """Issue 14 (fleet path): the main process builds the validator when it first loads the action class, so the
    worker forked for each host inherits jsonschema instead of importing it again (about 70 ms of CPU per host per
    task). Python's import-time log (PYTHONPROFILEIMPORTTIME) of the main process, on the run's stderr, names
    jsonschema exactly once; before this change it did not name it at all (only the workers imported it)."""
    sbs = [make_sandbox(tmp_path / ("h%d" % i)) for i in range(4)]
    inv = tmp_path / "four.json"  # a YAML inventory, written as JSON
    inv.write_text(json.dumps({"four": {"hosts": dict(
        ("h%d" % i, {"ansible_connection": "local", "ansible_python_interpreter": default_python(),
                     "sb_root": sb.root, "sb_links": [sb.link("ls")]}) for i, sb in enumerate(sbs))}}))
    r = run_playbook(tmp_path, """
- hosts: four
  gather_facts: false
  tasks:
    - name: apply
      switchyard.fs.safe_apply: {root: "{{ sb_root }}", links: "{{ sb_links }}"}
""", extra_args=["--forks", "4"], inventory=str(inv), env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.rc == 0, r
    assert all(os.path.islink(sb.p("/usr/bin/ls")) for sb in sbs)
    loads = [line for line in r.stderr.splitlines()
             if line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == "jsonschema"]
    assert len(loads) == 1, loads
