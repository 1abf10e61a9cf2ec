"""Issue 13 with real ansible-playbook runs: side paths confined beneath root, and an audit log that cannot be
written is a warning -- never a failed task after a committed apply."""
import errno
import json
import os
import subprocess
import sys

import pytest

from harness import VENV_BIN, PlaybookRun, ansible_env, run_playbook, write_inventory  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import make_sandbox  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events  # noqa: E402

SETPRIV = "/usr/bin/setpriv"


def _apply_play(sb, audit_log):
    return """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: apply
              switchyard.fs.safe_apply: {root: %s, links: %s, audit_log: %s}
    """ % (sb.root, json.dumps([sb.link("ls")]), audit_log)


def _run_without_dac_override(tmp_path, playbook_yaml):
    """Like harness.run_playbook, with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped from the bounding set:
    root then gets EACCES from a file whose mode denies it, as on a root-squashed or read-only-mode log."""
    pb = os.path.join(str(tmp_path), "playbook-eacces.yml")
    with open(pb, "w") as f:
        f.write(playbook_yaml)
    inv = write_inventory(os.path.join(str(tmp_path), "inventory.ini"))
    cmd = [SETPRIV, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search",
           os.path.join(VENV_BIN, "ansible-playbook"), "-i", inv, pb]
    proc = subprocess.run(cmd, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600, cwd=str(tmp_path), check=False)
    start = proc.stdout.find("{")
    return PlaybookRun(proc, json.loads(proc.stdout[start:]) if start >= 0 else {})


def _fill(path):
    """Write to a file on the (small) filesystem of `path` until it is full: the next write gets ENOSPC."""
    fd = os.open(os.path.join(path, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)


@pytest.mark.parametrize("cause", ["EISDIR", "ENOSPC", "EACCES"])
def test_failing_audit_log_write_is_a_warning_and_the_committed_apply_stands(tmp_path, cause):
    sb = make_sandbox(tmp_path)
    log_dir = sb.p("/var/log/sw")
    os.makedirs(log_dir)
    log = os.path.join(log_dir, "audit.jsonl")
    mounted = False
    try:
        if cause == "EISDIR":
            os.mkdir(log)
        elif cause == "ENOSPC":
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", log_dir], check=True)
            mounted = True
            with open(log, "w"):
                pass
            _fill(log_dir)
        else:
            with open(log, "w"):
                pass
            os.chmod(log, 0o400)  # root may not write it once CAP_DAC_OVERRIDE is gone
        play = _apply_play(sb, log)
        r = _run_without_dac_override(tmp_path, play) if cause == "EACCES" else run_playbook(tmp_path, play)
        res = r.result("apply")
    finally:
        if mounted:
            subprocess.run(["umount", log_dir], check=False)
    assert not res.get("failed") and res["changed"] is True, r
    assert os.readlink(sb.p("/usr/bin/ls")) == "/opt/prov/bin/ls"  # the commit stands
    rep = res["ansible_facts"]["switchyard_apply"]
    assert rep["summary"]["decision"] == "success" and rep["summary"]["changed"] == 1
    warn = [e for e in expand_events(rep) if e["decision"] == "warn" and e.get("audit_log") == log]
    assert len(warn) == 1 and warn[0]["stage"] == "apply.result", expand_events(rep)
    assert os.strerror(getattr(errno, cause)) in warn[0]["msg"], warn[0]
    assert [w for w in res["warnings"] if w.startswith("audit_log %s:" % log)], res["warnings"]  # a module warning too


def test_planted_side_path_symlinks_through_playbooks(tmp_path):
    """A plain safe_preflight does not append to a root-only file outside root through a planted audit_log
    symlink; a lock_path outside root and a state_dir that is a file fail with E_POLICY before anything is
    touched; the knob lets an operator put the audit log outside root on purpose."""
    sb = make_sandbox(tmp_path)
    victim = tmp_path / "shadow"
    victim.write_text("root:*:19000:0:99999:7:::\n")
    os.chmod(str(victim), 0o600)
    os.makedirs(sb.p("/var/log"))
    os.symlink(str(victim), sb.p("/var/log/audit.jsonl"))
    with open(sb.p("/var/lib/state-file"), "w") as f:
        f.write("x\n")
    outside_log = str(tmp_path / "host-logs" / "audit.jsonl")
    links = json.dumps([sb.link("ls")])
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: preflight with planted audit_log symlink
              switchyard.fs.safe_preflight: {root: %(root)s, links: %(links)s, audit_log: %(root)s/var/log/audit.jsonl}
            - name: lock outside root
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s, lock_path: %(tmp)s/outside.lock}
              ignore_errors: true
            - name: state_dir is a file
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s, state_dir: %(root)s/var/lib/state-file}
              ignore_errors: true
            - name: audit log outside root on purpose
              switchyard.fs.safe_preflight:
                root: %(root)s
                links: %(links)s
                audit_log: %(outside)s
                policy: {allow_side_paths_outside_root: true}
    """ % {"root": sb.root, "links": links, "tmp": str(tmp_path), "outside": outside_log})
    pre = r.result("preflight with planted audit_log symlink")
    assert not pre.get("failed"), r
    events = expand_events(pre["ansible_facts"]["switchyard_preflight"])
    assert [e for e in events if e["decision"] == "warn" and "symlink" in e.get("msg", "")], events
    assert victim.read_text() == "root:*:19000:0:99999:7:::\n"

    lock = r.result("lock outside root")
    assert lock["failed"] and lock["error_id"] == "E_POLICY", lock
    assert "lock_path" in lock["msg"] and "allow_side_paths_outside_root" in lock["msg"]
    assert not os.path.exists(str(tmp_path / "outside.lock"))

    state = r.result("state_dir is a file")
    assert state["failed"] and state["error_id"] == "E_POLICY" and "state_dir" in state["msg"], state
    assert "not a directory" in state["msg"]

    assert not os.path.islink(sb.p("/usr/bin/ls"))  # nothing was swapped by the refused runs
    events = expand_events(r.result("audit log outside root on purpose")["ansible_facts"]["switchyard_preflight"])
    with open(outside_log) as f:
        assert len(f.read().splitlines()) == len(events)
