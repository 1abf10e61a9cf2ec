"""Issue 13 point 2 through real playbooks: smoke checks that cannot lie or leak."""
import json
import os
import sys

import pytest

from harness import run_playbook, target_pythons  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402


def _report(res, key="switchyard_apply"):
    rep = res["ansible_facts"][key]
    assert validation_errors(rep) == []
    return rep


def test_nul_in_argv_is_e_policy_before_anything_is_touched(tmp_path):
    """0.1.0 accepted it, swapped, then raised in the runner: ls stayed swapped and the task said changed: false."""
    sb = make_sandbox(tmp_path)
    rels = ["/usr/bin/ls"]
    before = sb.snapshot(rels)
    smoke = [{"argv": ["/usr/bin/ls", "a\x00b"], "name": "list with a nul"}]
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: apply
              switchyard.fs.safe_apply: {root: %(root)s, links: %(links)s, smoke: %(smoke)s}
              ignore_errors: true
    """ % {"root": sb.root, "links": json.dumps([sb.link("ls")]), "smoke": json.dumps(smoke)})
    res = r.result("apply")
    assert res["failed"] is True and res["changed"] is False, r
    assert res["error_id"] == "E_POLICY" and res["exit_code"] == 10, res["msg"]
    assert "smoke[0] (list with a nul).argv[1]" in res["msg"] and "NUL byte" in res["msg"], res["msg"]
    assert sb.snapshot(rels) == before and sb.backups("ls") == []
    # refused before the lock and the journal: neither was created
    assert not os.path.exists(sb.p("/var/lib/switchyard")) and os.listdir(sb.p("/run/lock")) == []


MULTICALL = """#!/bin/sh
case "$(basename "$0")" in
  hello) echo "hello from $0 with $*" ;;
  *) echo "unknown applet $(basename "$0")" >&2; exit 127 ;;
esac
"""


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except (IOError, OSError):
        return False
    return state != "Z" and cmd.startswith(b"sleep\x00300")


def _read_pid(path):
    with open(path) as f:
        return int(f.read().strip())


@pytest.mark.parametrize("python", target_pythons(), ids=lambda p: os.path.basename(os.path.dirname(os.path.dirname(p))))
def test_root_slash_runs_the_link_bounds_output_and_leaves_nothing_running(tmp_path, python):
    """root: / with targets in a scratch directory (state and lock there too; the host's /usr/bin is untouched)."""
    base = tmp_path / "host"
    for d in ("bin", "prov", "state", "lock"):
        os.makedirs(str(base / d))
    for name in ("hello", "other"):
        (base / "bin" / name).write_text("#!/bin/sh\necho original %s\n" % name)
        os.chmod(str(base / "bin" / name), 0o755)
    (base / "prov" / "multicall").write_text(MULTICALL)
    os.chmod(str(base / "prov" / "multicall"), 0o755)
    hello, other, prov = str(base / "bin" / "hello"), str(base / "bin" / "other"), str(base / "prov" / "multicall")
    pid1, pid2 = str(tmp_path / "pid1"), str(tmp_path / "pid2")
    common = {"root": "/", "state_dir": str(base / "state"), "lock_path": str(base / "lock" / "switchyard.lock")}
    apply1 = dict(common, links=[{"source": prov, "target": hello}], smoke=[
        {"argv": [hello, "x"], "stdout_regex": "^hello from %s with x$" % hello, "name": "multicall by name"},
        {"argv": ["/bin/sh", "-c", "sleep 300 & echo $! > %s; exit 0" % pid1], "name": "background child",
         "timeout": 60},
        {"argv": ["/bin/sh", "-c", "(setsid sh -c 'sleep 300 & echo $! > %s.tmp; mv %s.tmp %s' &); "
                  "while [ ! -s %s ]; do sleep 0.05; done; exit 0" % (pid2, pid2, pid2, pid2)],
         "name": "escaped child", "timeout": 60},
    ])
    apply2 = dict(common, links=[{"source": prov, "target": other}],
                  smoke=[{"argv": ["/usr/bin/yes"], "timeout": 2, "name": "endless output"}])
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: multicall
              switchyard.fs.safe_apply: %s
            - name: endless
              switchyard.fs.safe_apply: %s
              ignore_errors: true
    """ % (json.dumps(apply1), json.dumps(apply2)), python=python)
    res = r.result("multicall")
    assert res.get("failed") is not True and res["changed"] is True, r
    smoke = _report(res)["smoke"]
    assert [(s["name"], s["ok"], s["mode"], s["rc"]) for s in smoke] == [
        ("multicall by name", True, "host", 0), ("background child", True, "host", 0),
        ("escaped child", True, "host", 0)], smoke
    assert os.readlink(hello) == prov
    # the module has returned (the whole playbook has): neither sleep runs any more
    for path in (pid1, pid2):
        pid = _read_pid(path)
        assert not _alive(pid), "sleep %d from %s still runs after the module returned" % (pid, path)

    res = r.result("endless")
    assert res["failed"] is True and res["error_id"] == "E_SMOKE" and res["rolled_back"] is True, res.get("msg")
    s = _report(res)["smoke"][0]
    assert s["ok"] is False and s["rc"] is None and "timed out after 2.0s" in s["detail"]
    assert s["stdout_truncated"] is True and s["stderr_truncated"] is False
    assert s["stdout_bytes"] > 65536 and "stdout truncated: kept the first 32768 and last 32768" in s["detail"]
    assert not os.path.islink(other)


def test_host_fallback_is_by_descriptor_and_only_when_policy_allows(tmp_path):
    """The sandbox root holds busybox but not its loader: a chroot cannot run it."""
    sb = make_sandbox(tmp_path, tools=("ls", "cat"))
    rels = ["/usr/bin/ls", "/usr/bin/cat"]
    before = sb.snapshot(rels)
    r = run_playbook(tmp_path, """
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: fallback off
              switchyard.fs.safe_apply:
                root: %(root)s
                links: %(ls)s
                policy: {smoke_host_fallback: false}
                smoke: [{argv: [/usr/bin/ls, /], name: ls}]
              ignore_errors: true
            - name: fallback on
              switchyard.fs.safe_apply:
                root: %(root)s
                links: %(cat)s
                smoke: [{argv: [/usr/bin/cat, /dev/null], name: cat}]
    """ % {"root": sb.root, "ls": json.dumps([sb.link("ls")]), "cat": json.dumps([sb.link("cat")])})
    off = r.result("fallback off")
    assert off["failed"] is True and off["error_id"] == "E_SMOKE" and off["rolled_back"] is True
    s = _report(off)["smoke"][0]
    assert s["mode"] == "chroot" and s["rc"] is None and "policy.smoke_host_fallback is false" in s["detail"], s
    assert sb.snapshot(["/usr/bin/ls"]) == {"/usr/bin/ls": before["/usr/bin/ls"]}
    on = r.result("fallback on")
    assert on.get("failed") is not True and on["changed"] is True, r
    s = _report(on)["smoke"][0]
    assert (s["mode"], s["ok"], s["rc"]) == ("host_fd", True, 0), s
    assert os.readlink(sb.p("/usr/bin/cat")) == "/opt/prov/bin/cat"
