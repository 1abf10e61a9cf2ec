"""Issue 6 with real ansible-playbook runs: a held lock, and four concurrent runs on one root."""
import json
import os
import subprocess
import sys
import time

from harness import VENV_BIN, ansible_env, write_inventory, run_playbook  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import make_sandbox, sha256  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils._fs.lock import acquire_lock  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events  # noqa: E402


def test_held_lock_fails_apply_with_e_locking_naming_the_holder(tmp_path):
    sb = make_sandbox(tmp_path)
    before = sb.snapshot(["/usr/bin/ls"])
    holder = acquire_lock(sb.p("/run/lock/switchyard.lock"), 0, "11111111-2222-5333-8444-555555555555")
    try:
        r = run_playbook(tmp_path, """
            - hosts: localhost
              gather_facts: false
              tasks:
                - name: apply
                  switchyard.fs.safe_apply: {root: %s, links: %s, lock_timeout: 1.5}
                  ignore_errors: true
        """ % (sb.root, json.dumps([sb.link("ls")])))
    finally:
        holder.release()
    res = r.result("apply")
    assert res["error_id"] == "E_LOCKING" and res["exit_code"] == 30, res
    assert str(os.getpid()) in res["msg"] and "11111111-2222-5333-8444-555555555555" in res["msg"]
    rep = res["ansible_facts"]["switchyard_apply"]
    # The module waits in a blocking flock until the alarm at the deadline: the immediate
    # try, the interrupted wait and one last try (docs/locking.md, "lock_attempts").
    assert rep["lock_backend"] == "flock" and rep["lock_attempts"] == 3, rep["lock_attempts"]
    assert 1500 * 0.9 <= rep["lock_wait_ms"] <= 1500 * 1.5, rep["lock_wait_ms"]
    attempt = [e for e in expand_events(rep) if e["stage"] == "apply.attempt"]
    assert [(e["decision"], e["lock_attempts"], e["lock_wait_ms"]) for e in attempt] == \
        [("failure", 3, rep["lock_wait_ms"])], attempt
    assert sb.snapshot(["/usr/bin/ls"]) == before and sb.backups("ls") == []


def _start(tmp_path, name, yaml_text, inventory):
    pb = tmp_path / ("%s.yml" % name)
    pb.write_text(yaml_text)
    env = ansible_env({"ANSIBLE_STDOUT_CALLBACK": "default"})
    return subprocess.Popen([os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, str(pb)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)


def _play(root, links):
    return """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: apply
      switchyard.fs.safe_apply: {root: %s, links: %s, lock_timeout: 120}
""" % (root, json.dumps(links))


def _fatal_lines(outs):
    return [line for out in outs for line in out.splitlines() if "fatal:" in line or '"msg"' in line]


def _backups(sb, name):
    metas = []
    for b in sb.backups(name):
        with open(sb.p("/usr/bin/" + b + ".meta.json")) as f:
            metas.append(json.load(f))
    return metas


def test_four_concurrent_runs_with_distinct_targets_all_succeed(tmp_path):
    sb = make_sandbox(tmp_path, tools=(), synthetic=8)
    inv = write_inventory(str(tmp_path / "inv.ini"))
    orig = dict(("f%03d" % i, sha256(sb.p("/usr/bin/f%03d" % i))) for i in range(8))
    procs = [_start(tmp_path, "p%d" % k, _play(sb.root, [sb.link("f%03d" % (2 * k)), sb.link("f%03d" % (2 * k + 1))]), inv)
             for k in range(4)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], _fatal_lines(outs)
    for name, digest in orig.items():
        assert os.readlink(sb.p("/usr/bin/" + name)) == "/opt/prov/bin/" + name
        metas = _backups(sb, name)
        assert len(metas) == 1 and metas[0]["payload_hash"] == digest
        assert sha256(sb.p("/usr/bin/" + metas[0]["payload"])) == digest


def test_four_concurrent_runs_on_the_same_targets_end_consistent_and_lose_no_backup(tmp_path):
    sb = make_sandbox(tmp_path, tools=(), synthetic=3)
    names = ["f000", "f001", "f002"]
    for k in range(4):  # four providers, each wanting the same three targets
        os.makedirs(sb.p("/opt/prov%d/bin" % k))
        for n in names:
            path = sb.p("/opt/prov%d/bin/%s" % (k, n))
            with open(path, "w") as f:
                f.write("#!/bin/sh\n# provider %d\n" % k)
            os.chmod(path, 0o755)
    inv = write_inventory(str(tmp_path / "inv.ini"))
    orig = dict((n, sha256(sb.p("/usr/bin/" + n))) for n in names)
    t0 = time.time()
    procs = [_start(tmp_path, "p%d" % k, _play(sb.root, [sb.link(n, "/opt/prov%d/bin" % k) for n in names]), inv)
             for k in range(4)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], _fatal_lines(outs)
    assert time.time() - t0 < 600
    for n in names:
        final = os.readlink(sb.p("/usr/bin/" + n))
        assert final in ["/opt/prov%d/bin/%s" % (k, n) for k in range(4)]
        metas = sorted(_backups(sb, n), key=lambda m: m["created_ms"])
        # Every run changed the target once: four backups, the oldest is the original bytes,
        # each later one is the link the previous run left; the chain ends at the final link's predecessor.
        assert len(metas) == 4
        assert metas[0]["prior_kind"] == "file" and metas[0]["payload_hash"] == orig[n]
        assert sha256(sb.p("/usr/bin/" + metas[0]["payload"])) == orig[n]
        assert all(m["prior_kind"] == "symlink" for m in metas[1:])
        links = [m["prior_link_target"] for m in metas[1:]] + [final]
        assert len(set(links)) == 4  # each provider's link was in place once, in lock order
    # Restoring `latest` puts back what the last run replaced: the previous provider's link.
    expected = dict((n, sorted(_backups(sb, n), key=lambda m: m["created_ms"])[-1]["prior_link_target"]) for n in names)
    rep = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: restore latest
              switchyard.fs.safe_restore: {root: %s, targets: %s}
    """ % (sb.root, json.dumps([sb.p("/usr/bin/" + n) for n in names])))
    assert rep.rc == 0, rep
    for n in names:
        assert os.readlink(sb.p("/usr/bin/" + n)) == expected[n]
