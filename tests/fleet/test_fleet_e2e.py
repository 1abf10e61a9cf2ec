"""End to end over SSH: the switchyard.fs playbooks swap real coreutils on a fleet.

Every host of the session fleet (tests/fleet/conftest.py) is a Debian system reached over
SSH on loopback; the playbooks run with ``root: /`` inside each host, on its real
``/usr/bin``, with the role's default ``production`` preset (lock required, rescue toolset
checked and executed, smoke checks that run the swapped tools, automatic rollback).

Providers per host:

- bookworm hosts: ``rust-coreutils`` (Debian's uutils), the role's default provider: each
  ``/usr/bin/<tool>`` becomes a link to ``/usr/lib/cargo/bin/coreutils/<tool>``.
- the bullseye host (Python 3.9): rust-coreutils is not packaged in bullseye, and bullseye
  is not merged-/usr (``ls cat cp mv rm ln readlink date`` live in ``/bin``, ``stat sort`` in
  ``/usr/bin``), so it takes part with ``provider_swap_provider: explicit`` links to
  ``/bin/busybox`` set as host vars in an extra inventory: the same playbook run, the same
  preset and smoke checks, another provider. Its plan id differs from the bookworm hosts'
  (another plan), which the rollback tests account for.

The fleet is shared by the whole session: every test leaves each host as it found it
(targets byte-identical, no backups, no switchyard state) and a fixture checks that.
"""
import json
import os
import shlex

import pytest

from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries, redact

pytestmark = pytest.mark.xdist_group("fleet")

TOOLS = ("ls", "cat", "cp", "mv", "rm", "ln", "stat", "readlink", "sort", "date")
UUTILS_DIR = "/usr/lib/cargo/bin/coreutils"
BUSYBOX = "/bin/busybox"
STATE_DIR = "/var/lib/switchyard"
LOCK = "/run/lock/switchyard.lock"
APPLY = "Swap the targets to the provider"
PREFLIGHT = "Preflight the swap"
RESTORE = "Restore the previous files"
FAIL = "Fail the host with the original error"
SHORT_FAIL = "Fail the host when the swap failed"
PREFLIGHT_FAIL = "Fail the host when the preflight found a STOP"


# --------------------------------------------------------------------------- helpers

# Runs on the host (Python 3.9 on bullseye): lstat + sha256 of paths, and what switchyard
# leaves behind (backups and sidecars next to the targets, its state dir, its lock).
_STATE_PY = r"""
import glob, hashlib, json, os, stat, sys
paths, dirs = json.loads(sys.argv[1])
info = {}
for p in paths:
    try:
        st = os.lstat(p)
    except OSError:
        info[p] = None
        continue
    d = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
         "link": os.readlink(p) if stat.S_ISLNK(st.st_mode) else None, "sha256": None}
    try:
        with open(p, "rb") as f:
            d["sha256"] = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        pass
    info[p] = d
left = sorted(p for d in dirs for p in glob.glob(os.path.join(d, ".*.switchyard.*.bak*")))
left += [p for p in (%r, %r) if os.path.lexists(p)]
print(json.dumps({"info": info, "left": left}))
""" % (STATE_DIR, LOCK)


def task_results(run, suffix):
    """{host: result} of the task whose name is ``suffix`` (with or without role prefix),
    over every play (the swap playbook runs one play per batch)."""
    out = {}
    for play in (run.json or {}).get("plays", []):
        for task in play["tasks"]:
            name = task["task"]["name"]
            if name == suffix or name.endswith(" : " + suffix):
                out.update(task["hosts"])
    return out


def hosts_that_ran(run):
    return {h for play in (run.json or {}).get("plays", []) for t in play["tasks"] for h in t["hosts"]}


def explain(run):
    lines = ["rc=%d recap=%s" % (run.returncode, run.recap)]
    for play in (run.json or {}).get("plays", []):
        for task in play["tasks"]:
            for host, res in task["hosts"].items():
                if res.get("failed"):
                    lines.append("%s | %s: %s %s" % (host, task["task"]["name"],
                                                     res.get("error_id", ""), res.get("msg", "")))
    if len(lines) == 1 or run.json is None:
        lines.append(run.stdout[-3000:] + run.stderr[-3000:])
    return "\n".join(lines)


def diff_paths(result):
    """Paths named in a module's diff (``<path>: kind=...`` lines, before and after)."""
    diff = result.get("diff") or {}
    out = set()
    for side in ("before", "after"):
        for line in (diff.get(side) or "").splitlines():
            if line.startswith("/") and ": " in line:
                out.add(line.split(": ", 1)[0])
    return out


def without_smoke(report):
    """A redacted apply report without what only a commit can have: the smoke checks run
    the swapped tools, which do not exist yet in check mode."""
    r = redact(report)
    r.pop("smoke", None)
    r["events"] = [e for e in r.get("events", []) if "smoke" not in e]
    return r


class Swap(object):
    """The fleet, its per-host targets and providers, and a pristine snapshot."""

    def __init__(self, fleet, workdir):
        self.fleet = fleet
        self.workdir = workdir
        layout = fleet.file_info(["/bin"] + ["/bin/%s" % t for t in TOOLS])
        self.targets, self.sources, hostvars = {}, {}, {}
        for h in fleet:
            merged = layout[h.name]["/bin"]["link"] is not None
            if merged:
                self.targets[h.name] = ["/usr/bin/%s" % t for t in TOOLS]
                self.sources[h.name] = ["%s/%s" % (UUTILS_DIR, t) for t in TOOLS]
            else:
                self.targets[h.name] = [("/bin/%s" % t) if layout[h.name]["/bin/%s" % t] else ("/usr/bin/%s" % t)
                                        for t in TOOLS]
                self.sources[h.name] = [BUSYBOX] * len(TOOLS)
                hostvars[h.name] = {
                    "provider_swap_provider": "explicit",
                    "provider_swap_links": [{"source": s, "target": t} for s, t in
                                            zip(self.sources[h.name], self.targets[h.name])],
                }
        self.explicit = set(hostvars)
        self.inventory = self.write_inventory("providers.json", hostvars)
        self.pristine = self.snapshot()
        for h in fleet:
            for path in self.targets[h.name]:
                info = self.pristine[h.name][path]
                assert info is not None and info["link"] is None, (h, path, info)

    def write_inventory(self, name, hostvars):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            json.dump({"all": {"hosts": hostvars}}, f)
        return path

    def paths(self, host):
        return self.targets[host] + sorted(set(self.sources[host]))

    def state(self, unlock=False):
        """One parallel SSH round: {host: {"info": {path: {mode, uid, gid, link, sha256}}
        of every target and source, "left": backups, sidecars, state dir and lock}}.
        ``unlock`` first clears the immutable flag of every target."""
        cmds = {}
        for h in self.fleet:
            arg = json.dumps([self.paths(h.name), sorted({os.path.dirname(t) for t in self.targets[h.name]})])
            cmds[h.name] = "%s/usr/bin/python3 -c %s %s" % (
                ("chattr -i %s 2>/dev/null; " % " ".join(self.targets[h.name])) if unlock else "",
                shlex.quote(_STATE_PY), shlex.quote(arg))
        return {n: json.loads(r.stdout) for n, r in self.fleet.run_each(cmds).items()}

    def snapshot(self):
        return {n: st["info"] for n, st in self.state().items()}

    def backups(self):
        """{host: sorted backup and sidecar paths next to the targets}."""
        return {n: [p for p in st["left"] if ".bak" in p] for n, st in self.state().items()}

    def play(self, name, extra_vars=None, inventories=(), **kw):
        args = ["-i", self.inventory]
        for inv in inventories:
            args += ["-i", inv]
        ev = {"target_hosts": "fleet", "tools": " ".join(TOOLS)}
        ev.update(extra_vars or {})
        return self.fleet.playbook("switchyard.fs.%s" % name, extra_vars=ev, json_output=True,
                                   extra_args=args, **kw)

    def scrub(self):
        """Put every host back as found: undo swaps, drop backups and switchyard state."""
        now = self.state(unlock=True)
        if {n: st["info"] for n, st in now.items()} != self.pristine:
            run = self.play("rollback", {"rollback_batches": "100%"})
            assert run.returncode == 0, explain(run)
            now = self.state()
        self.fleet.run_each({n: "rm -rf %s" % " ".join(shlex.quote(p) for p in st["left"])
                             for n, st in now.items() if st["left"]})


@pytest.fixture(scope="module")
def swap(fleet, tmp_path_factory):
    return Swap(fleet, str(tmp_path_factory.mktemp("fleet-e2e")))


@pytest.fixture
def clean(swap):
    """Every test starts and ends with a pristine fleet: targets and sources as in the
    snapshot taken before the first test, no backup, no journal, no lock."""
    pristine = {n: {"info": info, "left": []} for n, info in swap.pristine.items()}
    assert swap.state() == pristine
    try:
        yield swap
    finally:
        swap.scrub()
        assert swap.state() == pristine


def smoke_script(targets):
    """Run every swapped tool for real, by its target path."""
    T = dict(zip(TOOLS, targets))
    return "\n".join([
        "set -eu",
        "d=$(mktemp -d /var/tmp/switchyard-smoke.XXXXXX)",
        "echo hello > $d/a",
        "%(cat)s $d/a" % T,
        "%(cp)s $d/a $d/b" % T,
        "%(mv)s $d/b $d/c" % T,
        "%(ln)s -s c $d/link" % T,
        "%(readlink)s $d/link" % T,
        "%(stat)s -c %%s $d/c" % T,
        "printf '3\\n1\\n2\\n' | %(sort)s | tr '\\n' ' '; echo" % T,
        "%(date)s -u +%%Y-%%m-%%d" % T,
        "%(ls)s $d | tr '\\n' ' '; echo" % T,
        "%(rm)s -r $d" % T,
        "test ! -e $d && echo gone",
    ])


# --------------------------------------------------------------------------- tests

def test_check_diff_predicts_the_swap_which_runs_and_rolls_back_byte_identical(clean, fleet):
    s = clean
    names = [h.name for h in fleet]

    # 1. --check --diff over the whole fleet: reports, changes nothing.
    dry = s.play("swap", {"swap_batches": "100%"}, check=True, diff=True)
    assert dry.returncode == 0, explain(dry)
    assert s.snapshot() == s.pristine
    assert set(sum(s.backups().values(), [])) == set()
    dry_apply = task_results(dry, APPLY)
    dry_pre = task_results(dry, PREFLIGHT)
    assert set(dry_apply) == set(names)

    # 2. the real run: canary, 25%, the rest; production preset (the role default).
    real = s.play("swap", diff=True)
    assert real.returncode == 0, explain(real)
    apply = task_results(real, APPLY)
    assert set(apply) == set(names)
    batches = [{h for t in p["tasks"] for h in t["hosts"]} for p in real.json["plays"]]
    assert [len(b) for b in batches][0] == 1, batches  # one canary first
    assert set().union(*batches) == set(names)

    for h in fleet:
        d, r = dry_apply[h.name], apply[h.name]
        targets = set(s.targets[h.name])
        # what check mode said is what the commit did
        assert d["changed"] is True and r["changed"] is True, h
        assert d["plan_id"] == r["plan_id"], h
        assert diff_paths(d) == diff_paths(r) == targets, h
        assert d["diff"] == r["diff"], h
        da, ra = d["ansible_facts"]["switchyard_apply"], r["ansible_facts"]["switchyard_apply"]
        assert da["dry_run"] is True and ra["dry_run"] is False
        assert {a["path"] for a in entries(da)} == {a["path"] for a in entries(ra)} == targets
        assert without_smoke(da) == without_smoke(ra), h
        assert redact(dry_pre[h.name]["ansible_facts"]["switchyard_preflight"]) == \
            redact(task_results(real, PREFLIGHT)[h.name]["ansible_facts"]["switchyard_preflight"]), h
        # the production preset ran the swapped tools as smoke checks
        assert ra["preset"] == "production"
        assert len(ra["smoke"]) == len(TOOLS) and all(c["ok"] for c in ra["smoke"]), ra["smoke"]
        assert ra["summary"]["changed"] == len(TOOLS) and ra["summary"]["backup_durable"] is True

    # the same plan has the same id on every host of a suite (root-relative paths)
    for suite in {h.suite for h in fleet}:
        assert len({apply[h.name]["plan_id"] for h in fleet.by_suite(suite)}) == 1, suite

    # 3. every target now links to its provider, and the swapped tools work
    now = s.snapshot()
    backups = s.backups()
    for h in fleet:
        for target, source in zip(s.targets[h.name], s.sources[h.name]):
            assert now[h.name][target]["link"] == source, (h, target)
            assert now[h.name][source] == s.pristine[h.name][source]  # provider untouched
        assert len(backups[h.name]) == 2 * len(TOOLS), backups[h.name]  # .bak + sidecar each
    for h in fleet:
        out = h.ssh(smoke_script(s.targets[h.name])).stdout.splitlines()
        assert len(out) == 7, (h, out)
        assert out[:4] == ["hello", "c", "6", "1 2 3 "], (h, out)
        assert len(out[4]) == 10 and out[4][4] == "-", (h, out)  # date -u +%Y-%m-%d
        assert out[5:] == ["a c link ", "gone"], (h, out)
        # the program that runs is the provider's, not GNU's
        ls = s.targets[h.name][0]
        real_ls = h.ssh("readlink -f %s" % ls).stdout.strip()
        assert real_ls == (BUSYBOX if h.name in s.explicit else "/usr/bin/coreutils"), (h, real_ls)
        which = h.ssh("{ %s --version; %s --help; } 2>&1 | head -3; true" % (ls, ls)).stdout
        assert "GNU coreutils" not in which and ("BusyBox" in which or h.name not in s.explicit), (h, which)

    # 4. a second identical run changes nothing and makes no backup
    again = s.play("swap", {"swap_batches": "100%"})
    assert again.returncode == 0, explain(again)
    for h in fleet:
        assert task_results(again, APPLY)[h.name]["changed"] is False, h
        assert again.recap[h.name]["changed"] == 0, again.recap
    assert s.backups() == backups

    # 5. the rollback playbook (by the targets the tools name) restores every host
    #    byte-identical: content, mode and owner of every touched file
    back = s.play("rollback", diff=True)
    assert back.returncode == 0, explain(back)
    restore = task_results(back, RESTORE)
    for h in fleet:
        assert restore[h.name]["changed"] is True, h
        assert diff_paths(restore[h.name]) == set(s.targets[h.name]), h
        facts = restore[h.name]["ansible_facts"]["switchyard_restore"]
        assert facts["summary"]["changed"] == len(TOOLS)
        assert facts["summary"]["sidecar_integrity_verified"] is True
    assert s.snapshot() == s.pristine


def test_a_faulty_host_in_a_later_batch_is_rolled_back_while_the_others_swap(clean, fleet):
    """A broken provider on the last host: safe_apply swaps, the smoke check of ``date``
    fails, the module rolls the whole plan back and the host fails with E_SMOKE. With
    swap_max_fail_percentage above that batch's share of one host, the rest of the fleet
    goes on and swaps."""
    s = clean
    bad = [h for h in fleet if h.suite == "bookworm"][-1]
    assert bad is fleet[-1]
    entry = "%s/date" % UUTILS_DIR
    orig = bad.ssh("readlink %s" % entry).stdout.strip()
    bad.ssh("ln -sfn /usr/bin/false %s" % entry)  # the provider's date now exits 1
    try:
        run = s.play("swap", {"swap_batches": "1,100%", "swap_max_fail_percentage": 40})
    finally:
        bad.ssh("ln -sfn %s %s" % (shlex.quote(orig), entry))
    assert run.returncode != 0
    assert run.recap[bad.name]["failed"] == 1, explain(run)
    apply = task_results(run, APPLY)
    r = apply[bad.name]
    # The module failed with its report: the role keeps the report out of the failure output (the task
    # itself is ok) and fails the next task with the module's short message.
    assert not r.get("failed") and r["error_id"] == "E_SMOKE", r.get("msg")
    short = task_results(run, SHORT_FAIL)[bad.name]
    assert short["msg"] == r["msg"] and short["msg"].startswith("E_SMOKE: apply failed (plan_id=%s)" % r["plan_id"])
    assert r["rolled_back"] is True
    assert set(r["rolled_back_paths"]) == set(s.targets[bad.name])
    msg = task_results(run, FAIL)[bad.name]["msg"]
    assert "E_SMOKE" in msg and "rolled back by the module=True" in msg, msg
    # the faulty host is back to its original files, every other host swapped
    now = s.snapshot()
    assert now[bad.name] == s.pristine[bad.name]
    good = [h for h in fleet if h is not bad]
    for h in good:
        assert run.recap[h.name]["failed"] == 0, explain(run)
        assert apply[h.name]["changed"] is True
        for target, source in zip(s.targets[h.name], s.sources[h.name]):
            assert now[h.name][target]["link"] == source, (h, target)

    # roll the good hosts back by each host's own plan id (host vars, no targets)
    plans = s.write_inventory("plans.json", {h.name: {"provider_swap_restore_plan_id": apply[h.name]["plan_id"]}
                                             for h in good})
    back = s.play("rollback", {"target_hosts": ",".join(h.name for h in good)},
                  inventories=[plans])
    assert back.returncode == 0, explain(back)
    for h in good:
        facts = task_results(back, RESTORE)[h.name]["ansible_facts"]["switchyard_restore"]
        assert facts["plan_id"] == apply[h.name]["plan_id"]
    assert s.snapshot() == s.pristine


def test_a_faulty_canary_stops_the_rollout(clean, fleet):
    """An immutable target (chattr +i inside the canary's overlay) is a preflight STOP:
    the canary fails before anything changes, and no later batch runs at all, even with
    the same failure tolerance that let the fleet go on past a faulty later host."""
    s = clean
    canary = fleet[0]
    immutable = s.targets[canary.name][0]
    canary.ssh("chattr +i %s && lsattr %s | grep -q -- '-i-'" % (immutable, immutable))
    try:
        run = s.play("swap", {"swap_max_fail_percentage": 40})
        assert run.returncode != 0
        assert hosts_that_ran(run) == {canary.name}, explain(run)
        assert set(run.recap) == {canary.name}
        pre = task_results(run, PREFLIGHT)[canary.name]
        assert not pre.get("failed") and pre["error_id"] == "E_POLICY", pre
        assert task_results(run, PREFLIGHT_FAIL)[canary.name]["msg"] == pre["msg"]
        rows = entries(pre["ansible_facts"]["switchyard_preflight"])
        stop = [row for row in rows if row["path"] == immutable][0]
        assert stop["policy_ok"] is False and stop["immutable_check"] not in (None, "unknown"), stop
        assert immutable in pre["msg"] or "immutable" in json.dumps(stop), pre["msg"]
        assert task_results(run, APPLY) == {}
    finally:
        canary.ssh("chattr -i %s" % immutable)
    assert s.snapshot() == s.pristine
    assert set(sum(s.backups().values(), [])) == set()
