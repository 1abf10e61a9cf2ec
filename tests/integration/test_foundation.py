"""Issue 2 end to end: real ansible-playbook runs on localhost against sandbox roots."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from harness import run_playbook, target_pythons, REPO, VENV_BIN, ansible_env  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import make_sandbox, sha256  # noqa: E402

from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors, redact  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events  # noqa: E402


def _links_yaml(sb, names):
    return json.dumps([sb.link(n) for n in names])


def _report(res, key):
    rep = res["ansible_facts"][key]
    assert validation_errors(rep) == []
    return rep


@pytest.mark.parametrize("python", target_pythons(), ids=lambda p: os.path.basename(os.path.dirname(os.path.dirname(p))))
def test_apply_rerun_check_restore_cycle(tmp_path, python):
    sb = make_sandbox(tmp_path)
    names = ["ls", "cat", "echo"]
    rels = ["/usr/bin/" + n for n in names]
    before = sb.snapshot(rels)
    orig = dict((n, sha256(sb.p("/usr/bin/" + n))) for n in names)
    links = _links_yaml(sb, names)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: dry
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s}
              check_mode: true
              register: dry
            - name: files after dry
              ansible.builtin.stat: {path: %(root)s/usr/bin/ls}
            - name: real
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s, smoke: resolve}
            - name: rerun
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s}
            - name: parity
              ansible.builtin.set_fact:
                parity: "{{ (dry.ansible_facts.switchyard_apply | switchyard.fs.redact) }}"
    """ % {"root": sb.root, "links": links}, python=python)
    assert r.rc == 0, r
    dry, real, rerun = r.result("dry"), r.result("real"), r.result("rerun")
    # check mode changes nothing, says changed, same plan_id as the real run
    assert dry["changed"] is True and dry["plan_id"] == real["plan_id"]
    drep, rrep = _report(dry, "switchyard_apply"), _report(real, "switchyard_apply")
    assert drep["dry_run"] is True and rrep["dry_run"] is False
    assert r.result("files after dry")["stat"]["islnk"] is False
    # parity: check-mode facts equal commit facts after redaction (smoke runs only on commit)
    assert any("smoke" in e for e in expand_events(rrep)) and rrep["smoke"]
    assert redact(drep) == redact(rrep)
    # three links, each with one complete backup whose sidecar hash equals the original bytes
    assert real["changed"] is True
    for n in names:
        assert os.readlink(sb.p("/usr/bin/" + n)) == "/opt/prov/bin/" + n
        baks = sb.backups(n)
        assert len(baks) == 1
        with open(sb.p("/usr/bin/" + baks[0] + ".meta.json")) as f:
            meta = json.load(f)
        assert meta["schema"] == "backup_meta.v2" and meta["payload_hash"] == orig[n] == sha256(sb.p("/usr/bin/" + baks[0]))
    # a rerun changes nothing and creates no backup
    assert rerun["changed"] is False
    assert all(len(sb.backups(n)) == 1 for n in names)
    rr2 = _report(rerun, "switchyard_apply")
    assert rr2["summary"]["unchanged"] == 3

    r2 = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: restore
              switchyard.fs.safe_restore: {root: %(root)s, targets: %(targets)s}
            - name: restore again
              switchyard.fs.safe_restore: {root: %(root)s, targets: %(targets)s}
    """ % {"root": sb.root, "targets": json.dumps([sb.p(x) for x in rels])}, python=python)
    assert r2.rc == 0, r2
    assert r2.result("restore")["changed"] is True
    assert r2.result("restore again")["changed"] is False
    after = sb.snapshot(rels)
    for rel in rels:
        assert after[rel][:5] == before[rel][:5]  # kind, bytes, mode, uid, gid
    _report(r2.result("restore"), "switchyard_restore")


def test_restore_by_plan_id_undoes_whole_apply(tmp_path):
    sb = make_sandbox(tmp_path, synthetic=4)
    names = ["ls", "cat", "f000", "f001", "f002", "f003"]
    rels = ["/usr/bin/" + n for n in names]
    before = sb.snapshot(rels)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          module_defaults:
            group/switchyard.fs.swap: {root: %(root)s}
          tasks:
            - name: apply
              switchyard.fs.safe_apply: {links: %(links)s}
              register: swap
            - name: undo
              switchyard.fs.safe_restore: {plan_id: "{{ swap.plan_id }}"}
            - name: undo again
              switchyard.fs.safe_restore: {plan_id: "{{ swap.plan_id }}"}
    """ % {"root": sb.root, "links": _links_yaml(sb, names)})
    assert r.rc == 0, r
    assert r.result("apply")["changed"] and r.result("undo")["changed"]
    assert r.result("undo again")["changed"] is False
    after = sb.snapshot(rels)
    assert dict((k, v[:5]) for k, v in after.items()) == dict((k, v[:5]) for k, v in before.items())


def test_failing_later_action_rolls_back_everything(tmp_path):
    sb = make_sandbox(tmp_path, synthetic=2)
    os.makedirs(sb.p("/usr/sbin"), exist_ok=True)
    shutil.copy2(sb.p("/usr/bin/f001"), sb.p("/usr/sbin/zz"))
    with open(sb.p("/opt/prov/bin/zz"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(sb.p("/opt/prov/bin/zz"), 0o755)
    rels = ["/usr/bin/ls", "/usr/bin/cat", "/usr/bin/f000", "/usr/sbin/zz"]
    before = sb.snapshot(rels)
    links = [sb.link("ls"), sb.link("cat"), sb.link("f000"),
             {"source": sb.p("/opt/prov/bin/zz"), "target": sb.p("/usr/sbin/zz")}]
    # The directory of the last action (sorted by path) becomes immutable *after* preflight would pass:
    # simulate "its directory is chattr +i" with the immutable gate overridden so the swap itself fails.
    subprocess.run(["chattr", "+i", sb.p("/usr/sbin")], check=True)
    try:
        r = run_playbook(tmp_path, """
            - hosts: localhost
              gather_facts: false
              tasks:
                - name: apply
                  switchyard.fs.safe_apply:
                    root: %(root)s
                    links: %(links)s
                    policy: {override_preflight: true}
                  ignore_errors: true
        """ % {"root": sb.root, "links": json.dumps(links)})
    finally:
        sb.cleanup_flags()
    res = r.result("apply")
    assert res["failed"] is True
    assert res["error_id"] == "E_ATOMIC_SWAP" and res["exit_code"] == 40
    assert res["rolled_back"] is True
    assert sorted(res["rolled_back_paths"]) == ["/usr/bin/cat", "/usr/bin/f000", "/usr/bin/ls"]
    assert sb.snapshot(rels) == before  # same inode, bytes, mode: every original entry exactly as it was
    assert all(sb.backups(n) == [] for n in ("ls", "cat", "f000"))
    rep = _report(res, "switchyard_apply")
    assert rep["summary"]["decision"] == "failure"


def test_immutable_directory_stops_in_preflight_before_any_mutation(tmp_path):
    sb = make_sandbox(tmp_path)
    rels = ["/usr/bin/ls", "/usr/bin/cat"]
    before = sb.snapshot(rels)
    subprocess.run(["chattr", "+i", sb.p("/usr/bin")], check=True)
    try:
        r = run_playbook(tmp_path, """
            - hosts: localhost
              gather_facts: false
              tasks:
                - name: apply
                  switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s}
                  ignore_errors: true
        """ % {"root": sb.root, "links": _links_yaml(sb, ["ls", "cat"])})
    finally:
        sb.cleanup_flags()
    res = r.result("apply")
    assert res["error_id"] == "E_POLICY" and res["exit_code"] == 10 and res["rolled_back"] is False
    assert "immutable" in res["msg"] and "/usr/bin/ls" in res["msg"]
    assert sb.snapshot(rels) == before


BAD_INPUTS = [
    ("relative", lambda sb: [{"source": sb.p("/opt/prov/bin/ls"), "target": "usr/bin/ls"}], "is relative"),
    ("dotdot", lambda sb: [{"source": sb.p("/opt/prov/bin/ls"), "target": sb.p("/usr/bin/../bin/ls")}], "'..'"),
    ("outside", lambda sb: [{"source": sb.p("/opt/prov/bin/ls"), "target": "/usr/bin/ls"}], "outside root"),
    ("missing source", lambda sb: [{"source": sb.p("/opt/prov/bin/nope"), "target": sb.p("/usr/bin/ls")}], "nope"),
    ("directory", lambda sb: [{"source": sb.p("/opt/prov/bin/ls"), "target": sb.p("/usr/bin")}], "is a directory"),
    ("duplicate", lambda sb: [sb.link("ls"), {"source": sb.p("/opt/prov/bin/cat"), "target": sb.p("/usr/bin/ls")}],
     "duplicates"),
]


@pytest.mark.parametrize("case,links,needle", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_fails_before_any_mutation(tmp_path, case, links, needle):
    sb = make_sandbox(tmp_path)
    everything = sorted("/" + os.path.relpath(os.path.join(d, f), sb.root)
                        for d, _ds, fs in os.walk(sb.root) for f in fs)
    before = sb.snapshot(everything)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: apply
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s}
              ignore_errors: true
    """ % {"root": sb.root, "links": json.dumps(links(sb))})
    res = r.result("apply")
    assert res["failed"] and res["error_id"] == "E_POLICY" and res["exit_code"] == 10, res
    assert needle in res["msg"], res["msg"]
    after_all = sorted("/" + os.path.relpath(os.path.join(d, f), sb.root) for d, _ds, fs in os.walk(sb.root) for f in fs)
    assert after_all == everything and sb.snapshot(everything) == before
    assert not os.path.exists(sb.p("/var/lib/switchyard"))


def test_unknown_policy_key_is_named(tmp_path):
    sb = make_sandbox(tmp_path)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: apply
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s, policy: {suid_sgdi: warn}}
              ignore_errors: true
    """ % {"root": sb.root, "links": _links_yaml(sb, ["ls"])})
    res = r.result("apply")
    assert res["failed"] and "suid_sgdi" in res["msg"]
    assert os.path.islink(sb.p("/usr/bin/ls")) is False


def test_tampered_backup_is_refused_and_target_untouched(tmp_path):
    sb = make_sandbox(tmp_path)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: apply
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s}
    """ % {"root": sb.root, "links": _links_yaml(sb, ["ls"])})
    assert r.rc == 0, r
    bak = sb.p("/usr/bin/" + sb.backups("ls")[0])
    with open(bak, "r+b") as f:
        f.seek(100)
        f.write(b"\x00TAMPERED\x00")
    r2 = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: restore
              switchyard.fs.safe_restore: {root: %(root)s, targets: ["%(t)s"]}
              ignore_errors: true
    """ % {"root": sb.root, "t": sb.p("/usr/bin/ls")})
    res = r2.result("restore")
    assert res["failed"] and res["error_id"] == "E_RESTORE_FAILED" and res["exit_code"] == 70
    assert "does not match its sidecar" in res["msg"]
    assert os.readlink(sb.p("/usr/bin/ls")) == "/opt/prov/bin/ls"


def test_smoke_failure_rolls_back_with_e_smoke(tmp_path):
    sb = make_sandbox(tmp_path)
    rels = ["/usr/bin/ls", "/usr/bin/cat"]
    before = sb.snapshot(rels)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: apply
              switchyard.fs.safe_apply:
                root: %(root)s
                links: %(links)s
                smoke:
                  - {argv: [/usr/bin/ls, /], rc: 0, stdout_regex: "^this will not match$"}
              ignore_errors: true
    """ % {"root": sb.root, "links": _links_yaml(sb, ["ls", "cat"])})
    res = r.result("apply")
    assert res["error_id"] == "E_SMOKE" and res["exit_code"] == 80 and res["rolled_back"] is True
    assert res["summary_error_ids"] == ["E_SMOKE"]
    assert sb.snapshot(rels) == before
    rep = _report(res, "switchyard_apply")
    assert [s["ok"] for s in rep["smoke"]] == [False]


def test_prune_keeps_newest(tmp_path):
    sb = make_sandbox(tmp_path)
    yaml = """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: apply
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s}
            - name: restore
              switchyard.fs.safe_restore: {root: %(root)s, targets: ["%(t)s"]}
    """ % {"root": sb.root, "links": _links_yaml(sb, ["ls"]), "t": sb.p("/usr/bin/ls")}
    for _unused in range(3):
        assert run_playbook(tmp_path, yaml).rc == 0
    assert len(sb.backups("ls")) == 3
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: prune
              switchyard.fs.safe_prune: {root: %(root)s, targets: ["%(t)s"], retention_count: 1}
            - name: prune again
              switchyard.fs.safe_prune: {root: %(root)s, targets: ["%(t)s"], retention_count: 1}
    """ % {"root": sb.root, "t": sb.p("/usr/bin/ls")})
    assert r.rc == 0, r
    assert r.result("prune")["changed"] and not r.result("prune again")["changed"]
    assert len(sb.backups("ls")) == 1


def test_collection_builds_installs_and_docs_render(tmp_path):
    env = ansible_env()
    out = tmp_path / "dist"
    subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", REPO, "--output-path", str(out)],
                   check=True, env=env, stdout=subprocess.PIPE)
    tarball = next(out.glob("switchyard-fs-*.tar.gz"))
    dest = tmp_path / "installed"
    env["ANSIBLE_COLLECTIONS_PATH"] = str(dest)  # an empty path: the checkout link must not satisfy the install
    subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(dest)],
                   check=True, env=env, stdout=subprocess.PIPE)
    installed = dest / "ansible_collections" / "switchyard" / "fs"
    assert (installed / "plugins" / "modules" / "safe_apply.py").exists()
    assert not (installed / ".venv").exists() and not (installed / ".build").exists()
    for m in ("safe_preflight", "safe_apply", "safe_restore", "safe_prune"):
        p = subprocess.run([os.path.join(VENV_BIN, "ansible-doc"), "switchyard.fs." + m], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
        assert p.returncode == 0, p.stderr
        assert "root" in p.stdout and "policy" in p.stdout and "EXAMPLES" in p.stdout
