"""Issue 12 point 2 through real playbooks: the attacks on backup sidecars that were reproduced with 0.1.0.

A user who can write in the backup directory edits a sidecar.  Before the fix the "payload" field was
used as a path (prune deleted files outside root; restore copied an outside 0600 file into usr/bin/ls
as 4755) and a string mode gave a "successful" restore at 0600.  Now each such sidecar makes its
backup unusable with an error naming the sidecar file and the field; nothing outside root is touched.
"""
import hashlib
import json
import os
import stat
import sys

from harness import run_playbook  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import make_sandbox  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402


def _outside(tmp_path, name, data):
    d = os.path.join(str(tmp_path), "outside")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path


def _sidecars(sb, name="ls"):
    d = sb.p("/usr/bin")
    return sorted(os.path.join(d, e) for e in os.listdir(d) if e.startswith(".%s." % name) and e.endswith(".meta.json"))


def _edit(path, **fields):
    with open(path) as f:
        meta = json.load(f)
    meta.update(fields)
    with open(path, "w") as f:
        json.dump(meta, f)


def _apply_restore_cycles(tmp_path, sb, applies):
    steps = []
    for i in range(applies):
        steps.append("""
            - name: apply %(i)d
              switchyard.fs.safe_apply: {root: %(root)s, links: [%(link)s]}""" % {
            "i": i, "root": sb.root, "link": json.dumps(sb.link("ls"))})
        if i < applies - 1:
            steps.append("""
            - name: restore %(i)d
              switchyard.fs.safe_restore: {root: %(root)s, targets: ["%(t)s"]}""" % {
                "i": i, "root": sb.root, "t": sb.p("/usr/bin/ls")})
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:%s
    """ % "".join(steps))
    assert r.rc == 0, r
    assert len(_sidecars(sb)) == applies


def test_prune_never_deletes_outside_root_through_a_sidecar_payload(tmp_path):
    sb = make_sandbox(tmp_path, tools=("ls",))
    _apply_restore_cycles(tmp_path, sb, 3)
    victim1 = _outside(tmp_path, "victim1", b"absolute payload victim\n")
    victim2 = _outside(tmp_path, "victim2", b"dot-dot payload victim\n")
    oldest, older, _newest = _sidecars(sb)
    _edit(oldest, payload=victim1)
    _edit(older, payload="../../../outside/victim2")
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: prune
              switchyard.fs.safe_prune: {root: %(root)s, targets: ["%(t)s"], retention_count: 1}
    """ % {"root": sb.root, "t": sb.p("/usr/bin/ls")})
    assert r.rc == 0, r
    res = r.result("prune")
    with open(victim1, "rb") as f:
        assert f.read() == b"absolute payload victim\n"
    with open(victim2, "rb") as f:
        assert f.read() == b"dot-dot payload victim\n"
    assert entries(res["ansible_facts"]["switchyard_prune"])[0]["pruned"] == 0
    warnings = " ".join(res.get("warnings", []))
    for sidecar in (oldest, older):
        assert os.path.basename(sidecar) in warnings and "field payload" in warnings, warnings
        assert os.path.exists(sidecar)  # an unusable sidecar is reported, never deleted by prune


def test_restore_never_copies_an_outside_file_into_root_as_setuid(tmp_path):
    sb = make_sandbox(tmp_path, tools=("ls",))
    _apply_restore_cycles(tmp_path, sb, 1)
    secret = _outside(tmp_path, "secret", b"root-only data outside the image\n")
    (sidecar,) = _sidecars(sb)
    # The attacker even knows the hash (0.1.0 printed it in the failed first attempt).
    _edit(sidecar, payload=secret, payload_hash=hashlib.sha256(open(secret, "rb").read()).hexdigest(), mode=0o4755)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: restore
              switchyard.fs.safe_restore: {root: %(root)s, targets: ["%(t)s"]}
              ignore_errors: true
    """ % {"root": sb.root, "t": sb.p("/usr/bin/ls")})
    res = r.result("restore")
    assert res["failed"] and res["error_id"] == "E_BACKUP_MISSING", res.get("msg")
    assert os.path.basename(sidecar) in res["msg"] and "field payload" in res["msg"], res["msg"]
    assert os.readlink(sb.p("/usr/bin/ls")) == "/opt/prov/bin/ls"
    for dirpath, _dirs, files in os.walk(sb.root):
        for n in files:
            st = os.lstat(os.path.join(dirpath, n))
            assert not (stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID)), n


def test_a_string_mode_is_refused_not_restored_at_0600(tmp_path):
    sb = make_sandbox(tmp_path, tools=("ls",))
    _apply_restore_cycles(tmp_path, sb, 1)
    (sidecar,) = _sidecars(sb)
    _edit(sidecar, mode="0755")
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: restore
              switchyard.fs.safe_restore: {root: %(root)s, targets: ["%(t)s"]}
              ignore_errors: true
            - name: restore by plan
              switchyard.fs.safe_restore: {root: %(root)s, plan_id: "%(plan)s"}
              ignore_errors: true
    """ % {"root": sb.root, "t": sb.p("/usr/bin/ls"), "plan": json.load(open(sidecar))["plan_id"]})
    res = r.result("restore")
    assert res["failed"] and res["error_id"] == "E_BACKUP_MISSING", res.get("msg")
    assert os.path.basename(sidecar) in res["msg"] and "field mode" in res["msg"], res["msg"]
    res = r.result("restore by plan")
    assert res["failed"] and res["error_id"] == "E_RESTORE_FAILED", res.get("msg")
    assert os.path.basename(sidecar) in res["msg"] and "field mode" in res["msg"], res["msg"]
    assert os.readlink(sb.p("/usr/bin/ls")) == "/opt/prov/bin/ls"
