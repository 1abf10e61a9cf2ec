"""Package upgrades on a real Debian host: dpkg writes GNU coreutils back over swapped links.

One bookworm host of its own (an overlay of the session's base, so the session fleet is never
touched), reached over SSH. The swap playbook runs with ``provider_swap_apt_hook: true``; then
``apt-get install --reinstall`` of the host's own coreutils .deb (fetched on the controller with
``apt-get download`` at the exact version the host has, copied over SSH: the host needs no network
and no apt lists) runs a real dpkg, whose DPkg::Post-Invoke hook swaps the targets back with the
standard library alone. An "upgrade" (the same package rebuilt as version +switchyard1 with a
marker appended to ``ls``, so its bytes differ from the original) shows that the backup the hook
keeps holds the upgraded bytes: the rollback playbook by plan id brings back the upgraded GNU
``ls``, not the stale one, and removes the hook first, so the next dpkg run re-swaps nothing.

    pytest tests/fleet/test_fleet_apt_hook.py [--fleet-bases-from WORKDIR]
"""
import hashlib
import json
import os
import re
import shlex
import subprocess

import pytest

import fleet as fleetlib

pytestmark = pytest.mark.xdist_group("fleet")

TOOLS = ("ls", "cat", "date")
UUTILS_DIR = "/usr/lib/cargo/bin/coreutils"
SNIPPET = "/etc/apt/apt.conf.d/80switchyard-reapply"
HOOK_DIR = "/usr/local/lib/switchyard"
HOOK_LOG = "/var/log/switchyard/apt-hook.log"
MARKER = b"\nswitchyard-upgrade-marker\n"


@pytest.fixture(scope="module")
def host(fleet_bases, fleet_workdir, fleet_port):
    """A one-host bookworm fleet of this module's own."""
    workdir = os.path.join(fleet_workdir, "apt-hook")
    os.makedirs(workdir, exist_ok=True)
    f = fleetlib.start_fleet(workdir, 1, fleet_port + 150, bases={"bookworm": fleet_bases.paths["bookworm"]})
    try:
        yield f, f.hosts[0]
    finally:
        f.stop()


def _run(cmd, cwd):
    res = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                         check=False, timeout=300)
    assert res.returncode == 0, "%s failed (rc=%d):\n%s" % (" ".join(cmd), res.returncode, res.stdout[-2000:])
    return res.stdout


@pytest.fixture(scope="module")
def debs(host, tmp_path_factory):
    """(original .deb, upgraded .deb, sha256 of the upgraded ls) built on the controller."""
    _fleet, h = host
    version = h.ssh("dpkg-query -W -f '${Version}' coreutils").stdout.strip()
    d = str(tmp_path_factory.mktemp("debs"))
    # apt-get download from the Debian registry this machine's apt uses, at the host's exact version.
    _run(["apt-get", "download", "-o", "APT::Sandbox::User=root", "coreutils=%s" % version], d)
    orig = [os.path.join(d, n) for n in os.listdir(d) if n.endswith(".deb")]
    assert len(orig) == 1, orig
    tree = os.path.join(d, "tree")
    _run(["dpkg-deb", "-R", orig[0], tree], d)
    # bookworm's coreutils ships /bin/ls (/bin -> usr/bin on the host); later releases ship /usr/bin/ls.
    member = [m for m in ("bin/ls", "usr/bin/ls") if os.path.isfile(os.path.join(tree, m))]
    assert len(member) == 1, member
    member = member[0]
    with open(os.path.join(tree, member), "ab") as f:
        f.write(MARKER)  # trailing bytes after an ELF image: ls still runs, its bytes differ
    with open(os.path.join(tree, member), "rb") as f:
        data = f.read()
    control = os.path.join(tree, "DEBIAN", "control")
    with open(control) as f:
        text = f.read()
    with open(control, "w") as f:
        f.write(re.sub(r"(?m)^Version: .*$", "Version: %s+switchyard1" % version, text))
    md5 = os.path.join(tree, "DEBIAN", "md5sums")
    with open(md5) as f:
        lines = f.read().splitlines()
    with open(md5, "w") as f:
        for line in lines:
            if line.endswith("  " + member):
                line = "%s  %s" % (hashlib.md5(data).hexdigest(), member)
            f.write(line + "\n")
    upgraded = os.path.join(d, "coreutils_upgraded.deb")
    _run(["dpkg-deb", "--root-owner-group", "-b", tree, upgraded], d)
    return orig[0], upgraded, hashlib.sha256(data).hexdigest()


def copy_to(h, local, remote):
    with open(local, "rb") as f:
        data = f.read()
    res = subprocess.run(h.ssh_argv("cat > %s" % shlex.quote(remote)), input=data, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=120, check=False)
    assert res.returncode == 0, res.stderr


def state(h):
    """{tool: link text or sha256} of every target, by lstat over SSH."""
    out = {}
    for t in TOOLS:
        res = h.ssh("if [ -L /usr/bin/{0} ]; then echo link $(readlink /usr/bin/{0}); "
                    "else echo file $(sha256sum < /usr/bin/{0} | cut -d' ' -f1); fi".format(t))
        out[t] = tuple(res.stdout.split())
    return out


def hook_log(h):
    res = h.ssh("cat %s" % HOOK_LOG, check=False)
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def play(f, name, extra):
    ev = {"target_hosts": "fleet", "tools": " ".join(TOOLS)}
    ev.update(extra)
    run = f.playbook("switchyard.fs.%s" % name, extra_vars=ev, json_output=True)
    assert run.returncode == 0, "rc=%d\n%s\n%s" % (run.returncode, run.stdout[-4000:], run.stderr[-2000:])
    return run


def task_result(run, suffix, host):
    for p in (run.json or {}).get("plays", []):
        for task in p["tasks"]:
            name = task["task"]["name"]
            if (name == suffix or name.endswith(" : " + suffix)) and host in task["hosts"]:
                return task["hosts"][host]
    raise AssertionError("no result for %s" % suffix)


def test_dpkg_reinstall_and_upgrade_are_reswapped_by_the_hook_and_restore_to_the_upgrade(host, debs):
    f, h = host
    orig_deb, upgraded_deb, upgraded_ls = debs
    copy_to(h, orig_deb, "/root/coreutils.deb")
    copy_to(h, upgraded_deb, "/root/coreutils-upgraded.deb")
    pristine = state(h)
    assert all(kind == "file" for kind, _v in pristine.values())

    # Swap with the hook on: the snippet, the runner, the engine copy and the plan are installed.
    run = play(f, "swap", {"provider_swap_apt_hook": True})
    plan_id = task_result(run, "Swap the targets to the provider", h.name)["plan_id"]
    swapped = state(h)
    assert swapped == dict((t, ("link", "%s/%s" % (UUTILS_DIR, t))) for t in TOOLS)
    files = h.ssh("ls %s %s/reapply.py %s/plan.json %s/ansible_collections/switchyard/fs/plugins/module_utils/"
                  "_stages/apply.py" % (SNIPPET, HOOK_DIR, HOOK_DIR, HOOK_DIR), check=False)
    assert files.returncode == 0, files.stderr
    assert h.ssh("test ! -e %s/ansible_collections/switchyard/fs/plugins/module_utils/_module.py" % HOOK_DIR,
                 check=False).returncode == 0
    recorded = json.loads(h.ssh("cat %s/plan.json" % HOOK_DIR).stdout)
    assert recorded["plan_id"] == plan_id and recorded["settings"]["preset"] == "production"

    # 1. A real reinstall: dpkg writes GNU coreutils over the links; the hook swaps them back.
    res = h.ssh("apt-get install -y --reinstall /root/coreutils.deb", timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "switchyard apt hook: swapped %d target(s) back to plan %s" % (len(TOOLS), plan_id) in res.stderr, \
        res.stdout[-2000:] + res.stderr[-2000:]
    assert state(h) == swapped
    entry = hook_log(h)[-1]
    assert entry["decision"] == "success" and entry["plan_id"] == plan_id == entry["recorded_plan_id"]
    assert sorted(entry["changed"]) == sorted("/usr/bin/%s" % t for t in TOOLS)
    assert entry["backups"]["/usr/bin/ls"]["payload_hash"] == pristine["ls"][1]
    assert all(s.endswith(": ok") for s in entry["smoke"]) and len(entry["smoke"]) == len(TOOLS)

    # 2. An upgrade with different bytes: swapped back again, and its ls is the newest backup.
    res = h.ssh("apt-get install -y /root/coreutils-upgraded.deb", timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "+switchyard1" in h.ssh("dpkg-query -W -f '${Version}' coreutils").stdout
    assert state(h) == swapped
    entry = hook_log(h)[-1]
    assert entry["decision"] == "success" and entry["backups"]["/usr/bin/ls"]["payload_hash"] == upgraded_ls

    # Check mode of the same swap: nothing drifted, nothing to do.
    check = f.playbook("switchyard.fs.swap", extra_vars={"target_hosts": "fleet", "tools": " ".join(TOOLS),
                                                         "provider_swap_apt_hook": True},
                       check=True, json_output=True)
    assert check.returncode == 0
    assert task_result(check, "Swap the targets to the provider", h.name)["changed"] is False

    # 3. Roll back by the plan id: the hook goes first, then the upgraded GNU ls comes back (not the stale one).
    play(f, "rollback", {"plan_id": plan_id})
    now = state(h)
    assert now["ls"] == ("file", upgraded_ls) and now["cat"] == pristine["cat"] and now["date"] == pristine["date"]
    assert h.ssh("/usr/bin/ls / >/dev/null && test ! -e %s && test ! -e %s" % (SNIPPET, HOOK_DIR),
                 check=False).returncode == 0
    # With the hook gone, dpkg's next run leaves the restored files alone.
    res = h.ssh("apt-get install -y --reinstall /root/coreutils-upgraded.deb", timeout=300, check=False)
    assert res.returncode == 0 and "switchyard apt hook" not in res.stderr
    assert state(h) == now


def test_the_hook_is_removed_by_default_and_refuses_another_root(host, tmp_path):
    """provider_swap_apt_hook false (the default) removes a hook left installed; with another root the role
    refuses the hook before anything changes."""
    f, h = host
    h.ssh("mkdir -p %s && touch %s/plan.json && echo '// stale' > %s" % (HOOK_DIR, HOOK_DIR, SNIPPET))
    run = play(f, "preflight", {})  # the preflight entry point leaves the hook alone
    assert h.ssh("test -e %s" % SNIPPET, check=False).returncode == 0
    run = play(f, "swap", {})
    assert task_result(run, "Remove the DPkg::Post-Invoke snippet", h.name)["changed"] is True
    assert h.ssh("test ! -e %s && test ! -e %s" % (SNIPPET, HOOK_DIR), check=False).returncode == 0
    play(f, "rollback", {"plan_id": task_result(run, "Swap the targets to the provider", h.name)["plan_id"]})
    bad = f.playbook("switchyard.fs.swap", extra_vars={"target_hosts": "fleet", "tools": "ls",
                                                       "provider_swap_apt_hook": True,
                                                       "provider_swap_root": "/srv/image"}, json_output=True)
    assert bad.returncode != 0 and "provider_swap_apt_hook installs a hook into the host's own apt" in bad.stdout
    assert state(h)["ls"][0] == "file"
