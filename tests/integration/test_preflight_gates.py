# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet-style `--check` through real ansible-playbook: one bad target is reported, and nothing else."""
from __future__ import absolute_import, division, print_function

import os
import shutil
import subprocess

import pytest

from harness import run_playbook
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries, expand_events  # noqa: E402

CHATTR = shutil.which("chattr")

NAMES = ("alpha", "bravo", "charlie", "delta")
RESCUE = ("cp", "mv", "rm", "ln", "stat", "ls")


def _file(path, data=b"#!/bin/sh\nexit 0\n", mode=0o755):
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


@pytest.fixture
def sandbox(tmp_path):
    """Four swappable targets, one of them immutable (+i, cleared in teardown), and a rescue dir."""
    assert os.geteuid() == 0, "chattr +i needs root: run the tests as root"
    assert CHATTR, "chattr missing: run scripts/install-system-deps.sh (e2fsprogs)"
    root = str(tmp_path / "root")
    for n in NAMES:
        _file(os.path.join(root, "usr/bin", n), b"#!/bin/sh\necho old\n")
        _file(os.path.join(root, "opt/prov/bin", n))
    for n in RESCUE:
        _file(os.path.join(root, "rescue", n))
    bad = os.path.join(root, "usr/bin/charlie")
    subprocess.run([CHATTR, "+i", bad], check=True)
    yield root
    subprocess.run([CHATTR, "-i", bad], check=False)


def _links_yaml(root):
    return "[%s]" % ", ".join("{source: %s/opt/prov/bin/%s, target: %s/usr/bin/%s}" % (root, n, root, n)
                              for n in NAMES)


def test_check_over_a_sandbox_with_one_bad_target_reports_exactly_that_target(tmp_path, sandbox):
    root = sandbox
    before = dict((n, open(os.path.join(root, "usr/bin", n), "rb").read()) for n in NAMES)
    run = run_playbook(tmp_path, """
    - hosts: sandbox
      gather_facts: false
      tasks:
        - name: Preflight
          switchyard.fs.safe_preflight:
            root: %(root)s
            links: %(links)s
          ignore_errors: true
        - name: Apply in check mode
          switchyard.fs.safe_apply:
            root: %(root)s
            links: %(links)s
          ignore_errors: true
        - name: Rescue with the default PATH
          switchyard.fs.safe_preflight:
            root: %(root)s
            policy: {require_rescue: true}
            links: [{source: %(root)s/opt/prov/bin/alpha, target: %(root)s/usr/bin/alpha}]
            fail_on_stop: false
        - name: Rescue with the module PATH
          switchyard.fs.safe_preflight:
            root: %(root)s
            policy: {require_rescue: true}
            links: [{source: %(root)s/opt/prov/bin/alpha, target: %(root)s/usr/bin/alpha}]
            fail_on_stop: false
          environment:
            PATH: /rescue:/usr/sbin:/usr/bin:/sbin:/bin
    """ % {"root": root, "links": _links_yaml(root)}, extra_args=["--check"])
    assert run.rc == 0, run  # ignore_errors keeps the play going; schema validation failures would fail it

    bad = "/usr/bin/charlie"
    pre = run.result("Preflight")
    assert pre["failed"] is True and pre["error_id"] == "E_POLICY" and pre["exit_code"] == 10
    assert bad in pre["msg"] and not any("/usr/bin/%s" % n in pre["msg"] for n in NAMES if n != "charlie")
    rows = entries(pre["ansible_facts"]["switchyard_preflight"])
    assert [r["path"] for r in rows] == sorted("/usr/bin/" + n for n in NAMES)
    assert [r["path"] for r in rows if r["stops"]] == [bad]
    assert [r["path"] for r in rows if not r["policy_ok"]] == [bad]
    assert all(r["warnings"] == [] for r in rows)
    bad_row = [r for r in rows if r["path"] == bad][0]
    assert bad_row["immutable_detection_method"] == "ioctl" and bad_row["immutable_check"]["immutable"] is True
    summary = [e for e in expand_events(pre["ansible_facts"]["switchyard_preflight"]) if e["stage"] == "preflight.summary"]
    assert summary[0]["stop_paths"] == [bad] and summary[0]["stops"] == 1

    app = run.result("Apply in check mode")
    assert app["failed"] is True and app["error_id"] == "E_POLICY" and bad in app["msg"]
    assert [r["path"] for r in entries(app["ansible_facts"]["switchyard_apply"]) if r["stops"]] == [bad]

    default_path = entries(run.result("Rescue with the default PATH")["ansible_facts"]["switchyard_preflight"])[0]
    assert default_path["rescue"]["ok"] is False and [s["knob"] for s in default_path["stops"]] == ["require_rescue"]
    module_path = entries(run.result("Rescue with the module PATH")["ansible_facts"]["switchyard_preflight"])[0]
    assert module_path["rescue"]["ok"] is True and module_path["rescue"]["path"][0] == "/rescue"
    assert module_path["policy_ok"] is True

    for n in NAMES:  # --check and preflight changed nothing
        p = os.path.join(root, "usr/bin", n)
        assert not os.path.islink(p) and open(p, "rb").read() == before[n]
    assert not [e for e in os.listdir(os.path.join(root, "usr/bin")) if e.startswith(".")]
