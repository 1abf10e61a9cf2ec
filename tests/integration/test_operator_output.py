"""What a fleet operator sees at default verbosity (the default stdout callback, no -v).

The swap playbook prints one summary line per host with the plan id a rollback needs; a
failing host prints the module's short message (error id, plan id, failing targets), not the
report, which stays in the registered result and in ansible_facts.
"""
import json
import os
import re
import subprocess
import textwrap

from harness import VENV_BIN, ansible_env, write_inventory
from test_role_playbooks import build_sandbox

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
MANY = 200


def run_default(tmp_path, playbook, extra_args=()):
    """ansible-playbook with the default stdout callback at default verbosity: (rc, stdout)."""
    pb = tmp_path / ("play-%d.yml" % len(os.listdir(str(tmp_path))))
    pb.write_text(textwrap.dedent(playbook))
    inv = write_inventory(str(tmp_path / "inventory.ini"))
    env = ansible_env({"ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_FORCE_COLOR": "0"})
    env.pop("ANSIBLE_VERBOSITY", None)
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", inv, str(pb)] + list(extra_args),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          cwd=str(tmp_path), timeout=900, check=False)
    return proc.returncode, proc.stdout


def many_links(root, n=MANY):
    """n regular files /usr/bin/tNNN linked to busybox: no such applet, so every `tNNN --help` smoke check fails."""
    links = []
    for i in range(n):
        target = os.path.join(root, "usr/bin/t%03d" % i)
        with open(target, "w") as f:
            f.write("#!/bin/sh\necho tool %d\n" % i)
        os.chmod(target, 0o755)
        links.append({"source": os.path.join(root, "usr/bin/busybox"), "target": target})
    return links


def test_a_200_link_smoke_failure_prints_a_short_message_and_keeps_the_report(tmp_path):
    root = build_sandbox(str(tmp_path / "root"))
    links = many_links(root)
    before = {l["target"]: open(l["target"]).read() for l in links}
    play = """\
        - name: Swap many links and fail the smoke checks
          hosts: all
          gather_facts: false
          tasks:
            - name: Swap
              block:
                - name: Run the role
                  ansible.builtin.include_role:
                    name: switchyard.fs.provider_swap
                  vars:
                    provider_swap_root: %(root)s
                    provider_swap_provider: explicit
                    provider_swap_links: %(links)s
              rescue:
                - name: The report is in the registered result and in the facts
                  ansible.builtin.assert:
                    that:
                      - provider_swap_apply_result.error_id == 'E_SMOKE'
                      - provider_swap_apply_result.ansible_facts.switchyard_apply.smoke | length == %(n)d
                      - ansible_facts.switchyard_apply.summary.error_id == 'E_SMOKE'
                      - ansible_facts.switchyard_apply.rolled_back_paths | length == %(n)d
                      - ansible_facts.switchyard_apply.plan_id == provider_swap_apply_result.plan_id
                    quiet: true
        """ % {"root": json.dumps(root), "links": json.dumps(links), "n": MANY}
    rc, out = run_default(tmp_path, play)
    # The report of this run is several hundred KB of JSON; what the operator reads is a few KB.
    print("bytes printed at default verbosity: %d" % len(out.encode()))
    assert rc == 0, out[-5000:]
    assert re.search(r"failed=0 .* rescued=2", out), out[-3000:]
    assert len(out.encode()) < 16 * 1024, "printed %d bytes:\n%s" % (len(out.encode()), out[:3000])
    fatal = [l for l in out.splitlines() if l.startswith("fatal:")]
    assert len(fatal) == 2, fatal  # the short failure, then the role's rescue message
    assert "E_SMOKE: apply failed (plan_id=" in fatal[0] and "t000" in fatal[0] and "and 190 more" in fatal[0]
    assert re.search(r"plan_id=" + UUID, fatal[0]) and "rolled back %d target(s)" % MANY in fatal[0]
    assert "E_SMOKE" in fatal[1] and "rolled back by the module=True" in fatal[1]
    assert {l["target"]: open(l["target"]).read() for l in links} == before


def test_the_swap_playbook_prints_one_summary_line_per_host(tmp_path):
    root = build_sandbox(str(tmp_path / "root"))
    play = """\
        - name: Swap
          ansible.builtin.import_playbook: switchyard.fs.swap
        """
    extra = ["-e", json.dumps({"provider_swap_root": root, "provider_swap_tools": ["ls", "cat"]})]
    rc, out = run_default(tmp_path, play, extra)
    assert rc == 0, out[-5000:]
    lines = [l for l in out.splitlines() if '"msg": "plan_id=' in l]
    assert len(lines) == 1, out
    m = re.search(r'"msg": "plan_id=(%s) changed=2/2 \[(\S+) (\S+)\] backups=2 smoke=2/2 ok"' % UUID, lines[0])
    assert m and sorted(m.group(2, 3)) == ["cat", "ls"], lines[0]
    plan_id = m.group(1)
    # The task's own message carries the plan id too (seen with -v, and in the registered result).
    rc, out = run_default(tmp_path, play, extra)
    assert rc == 0 and "plan_id=%s changed=0/2 backups=0 smoke=not needed" % plan_id in out, out[-3000:]
    rc, out = run_default(tmp_path, """\
        - name: Roll back
          ansible.builtin.import_playbook: switchyard.fs.rollback
        """, ["-e", json.dumps({"provider_swap_root": root, "plan_id": plan_id})])
    assert rc == 0, out[-3000:]
    assert not os.path.islink(os.path.join(root, "usr/bin/ls"))
