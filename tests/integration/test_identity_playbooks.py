"""Issue 12 through real playbooks on a merged-/usr root: aliased targets, looping sources, setuid on restore."""
import json
import os
import stat
import sys

from harness import run_playbook  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import make_sandbox, sha256  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries as report_entries  # noqa: E402


def merged_usr(tmp_path):
    sb = make_sandbox(tmp_path)
    os.rmdir(sb.p("/bin"))
    os.symlink("usr/bin", sb.p("/bin"))
    return sb


def entries(sb):
    out = {}
    for n in sorted(os.listdir(sb.p("/usr/bin"))):
        p = sb.p("/usr/bin/" + n)
        out[n] = os.readlink(p) if os.path.islink(p) else (sha256(p), os.lstat(p).st_ino)
    return out


def test_one_plan_naming_usr_bin_ls_and_bin_ls_is_refused_and_nothing_is_lost(tmp_path):
    """The 0.1.0 data loss: both actions picked one backup name and the cleanup deleted the only copy."""
    sb = merged_usr(tmp_path)
    before = entries(sb)
    links = [{"source": sb.p("/opt/prov/bin/ls"), "target": sb.p("/usr/bin/ls")},
             {"source": sb.p("/opt/prov/bin/cat"), "target": sb.p("/bin/ls")}]
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: aliased
              switchyard.fs.safe_apply: {root: %s, links: %s}
              ignore_errors: true
    """ % (sb.root, json.dumps(links)))
    res = r.result("aliased")
    assert res["failed"] and res["error_id"] == "E_POLICY" and res["exit_code"] == 10, res
    assert sb.p("/usr/bin/ls") in res["msg"] and sb.p("/bin/ls") in res["msg"]
    assert entries(sb) == before  # no backup, no temp, no swap


def test_a_source_spelled_as_its_own_target_is_refused(tmp_path):
    """0.1.0 committed a self-loop (/usr/bin/ls -> /bin/ls) and reported success."""
    sb = merged_usr(tmp_path)
    before = entries(sb)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: loop
              switchyard.fs.safe_apply:
                root: %(root)s
                links: [{source: %(root)s/bin/ls, target: %(root)s/usr/bin/ls}]
              ignore_errors: true
    """ % {"root": sb.root})
    res = r.result("loop")
    assert res["failed"] and res["error_id"] == "E_POLICY", res
    assert "link loop" in res["msg"]
    assert entries(sb) == before


def test_restore_of_a_user_owned_setuid_file_is_not_setuid_root(tmp_path):
    """suid_sgid: warn swapped a 4242-owned setuid file; 0.1.0 restored it as uid 0 mode 4755."""
    sb = make_sandbox(tmp_path)
    p = sb.p("/usr/bin/ls")
    os.chown(p, 4242, 4343)
    os.chmod(p, 0o4755)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: swap
              switchyard.fs.safe_apply:
                root: %(root)s
                policy: {suid_sgid: warn}
                links: [{source: %(root)s/opt/prov/bin/ls, target: %(p)s}]
            - name: back
              switchyard.fs.safe_restore: {root: %(root)s, targets: ["%(p)s"]}
    """ % {"root": sb.root, "p": p})
    assert r.rc == 0, r
    st = os.lstat(p)
    assert stat.S_ISREG(st.st_mode) and not (st.st_mode & stat.S_ISUID), oct(st.st_mode)
    applied = report_entries(r.result("back")["ansible_facts"]["switchyard_restore"])[0]["preservation_applied"]
    assert applied["mode"] != "applied"
