"""Fleet benchmark: swap K coreutils to uutils on N hosts over SSH, two ways.

Prints wall times (asserts nothing; numbers depend on the machine and its load):

- ``collection``: the ``switchyard.fs.swap`` playbook with its defaults (production preset:
  preflight, lock, journal, durable backups with sidecars, swap, fsync, smoke checks that
  run every swapped tool, link verification), in one batch (``swap_batches=100%``) so
  that it runs like the baseline; and the canary rollout (``1,25%,100%``) for reference.
- ``collection, module only``: one ``switchyard.fs.safe_apply`` task with the K links
  (preset default, no smoke), the engine's own cost.
- ``copy+file``: the way it is usually written today, per binary (a loop over the tools):
  ``ansible.builtin.copy remote_src=yes backup=yes`` of the binary to ``<target>.orig``,
  then ``ansible.builtin.file state=link force=true`` to the provider's file.

and the way back: the ``switchyard.fs.rollback`` playbook (verifies each backup's hash
before it restores) versus ``copy remote_src=yes`` of each ``.orig`` over its target.

Every run is a fresh ``ansible-playbook`` process with the fleet's usual settings (SSH
pipelining, ControlPersist masters already warm, forks = N). Hosts are put back between
runs (not timed) and checked: each swap must leave every target a link to its source and
each way back the original bytes.

    python3 tests/fleet/bench_fleet.py [--hosts 5 --hosts 20] [--tools 10] [--repeat 1]
                                       [--bases-from WORKDIR] [--base-port 25000]

Needs root (the fleet), mmdebstrap (unless --bases-from), the venv's Ansible.
"""
import argparse
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fleet as fleetlib  # noqa: E402

REPO = fleetlib.REPO
COLLECTIONS_ROOT = os.path.join(REPO, ".build", "collections")
ALL_TOOLS = ("ls", "cat", "cp", "mv", "rm", "ln", "stat", "readlink", "sort", "date",
             "head", "tail", "wc", "echo", "basename", "dirname", "tr", "cut", "uniq", "seq")
UUTILS_DIR = "/usr/lib/cargo/bin/coreutils"

BASELINE_SWAP = """\
- name: Swap with copy backup=yes + file state=link
  hosts: fleet
  gather_facts: false
  tasks:
    - name: Keep a copy of each binary
      ansible.builtin.copy:
        src: "/usr/bin/{{ item }}"
        dest: "/usr/bin/{{ item }}.orig"
        remote_src: true
        backup: true
        mode: preserve
      loop: "{{ tools }}"
    - name: Link each binary to the provider
      ansible.builtin.file:
        src: "%s/{{ item }}"
        dest: "/usr/bin/{{ item }}"
        state: link
        force: true
      loop: "{{ tools }}"
""" % UUTILS_DIR

BASELINE_BACK = """\
- name: Restore the copies
  hosts: fleet
  gather_facts: false
  tasks:
    - name: Put each binary back
      ansible.builtin.copy:
        src: "/usr/bin/{{ item }}.orig"
        dest: "/usr/bin/{{ item }}"
        remote_src: true
        mode: preserve
        force: true
      loop: "{{ tools }}"
"""

EMPTY = """\
- name: Empty playbook
  hosts: fleet
  gather_facts: false
  tasks:
    - name: One debug task
      ansible.builtin.debug:
        msg: fixed overhead
"""

PING = """\
- name: One ping task
  hosts: fleet
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""

MODULE_ONLY = """\
- name: One safe_apply task
  hosts: fleet
  gather_facts: false
  tasks:
    - name: Swap
      switchyard.fs.safe_apply:
        links: "{{ links }}"
"""


EMPTY_ROW = "empty playbook (one debug task; median)"


def ensure_collection_link():
    link = os.path.join(COLLECTIONS_ROOT, "ansible_collections", "switchyard", "fs")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not (os.path.islink(link) and os.readlink(link) == REPO):
        tmp = link + ".%d" % os.getpid()
        os.symlink(REPO, tmp)
        os.replace(tmp, link)
    os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS_ROOT


class Bench(object):
    def __init__(self, fleet, tools, workdir):
        self.fleet = fleet
        self.tools = list(tools)
        self.workdir = workdir
        self.targets = ["/usr/bin/%s" % t for t in self.tools]
        self.pristine = fleet.file_info(self.targets)

    def write(self, name, text):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def timed(self, playbook, extra_vars=None, collections=None):
        ev = {"tools": self.tools, "target_hosts": "fleet"}
        ev.update(extra_vars or {})
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        res = self.fleet.playbook(playbook, extra_vars=ev,
                                  env={"ANSIBLE_COLLECTIONS_PATH": collections} if collections else None)
        secs = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU of ansible-playbook, its workers and their ssh clients (all waited for): the controller's share.
        # The hosts' module runs are sshd's children, not ours, so they are not in it.
        self.last_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        bad = {h: s for h, s in res.recap.items() if s.get("failed") or s.get("unreachable")}
        if res.returncode != 0 or bad or len(res.recap) != len(self.fleet):
            raise SystemExit("%s failed rc=%d %s\n%s" % (playbook, res.returncode, bad,
                                                         res.stdout[-3000:] + res.stderr[-2000:]))
        return secs

    def check(self, swapped):
        info = self.fleet.file_info(self.targets)
        for h in self.fleet:
            for t, tool in zip(self.targets, self.tools):
                if swapped:
                    ok = info[h.name][t]["link"] == "%s/%s" % (UUTILS_DIR, tool)
                else:
                    ok = info[h.name][t] == self.pristine[h.name][t]
                if not ok:
                    raise SystemExit("%s %s: %s" % (h.name, t, info[h.name][t]))

    def clean(self):
        cmd = "cd /usr/bin && rm -f %s && rm -rf /var/lib/switchyard /run/lock/switchyard.lock" % " ".join(
            "%s.orig %s.orig.*~ .%s.switchyard.*.bak*" % (t, t, t) for t in self.tools)
        self.fleet.run_all(cmd)

    def run(self, repeat, builtin=True, canary=True, baseline=None):
        pb_empty = self.write("empty.yml", EMPTY)
        pb_base = self.write("baseline-swap.yml", BASELINE_SWAP)
        pb_back = self.write("baseline-back.yml", BASELINE_BACK)
        pb_mod = self.write("module-only.yml", MODULE_ONLY)
        pb_ping = self.write("ping.yml", PING)
        rows = {}
        self.cpu = {}

        def add(name, secs):
            rows.setdefault(name, []).append(secs)
            self.cpu.setdefault(name, []).append(self.last_cpu)

        for _unused in range(repeat):
            add(EMPTY_ROW, self.timed(pb_empty))
            # Ansible's floor for one module task on every host: what any task that runs code on the hosts costs.
            add("ansible.builtin.ping, one task (a module task's floor)", self.timed(pb_ping))
            add("collection: swap playbook, production, one batch", self.timed(
                "switchyard.fs.swap", {"swap_batches": "100%"}))
            self.check(True)
            add("collection: rollback playbook", self.timed("switchyard.fs.rollback"))
            self.check(False)
            self.clean()
            if baseline:
                add("baseline checkout: swap playbook, production, one batch", self.timed(
                    "switchyard.fs.swap", {"swap_batches": "100%"}, collections=baseline))
                self.check(True)
                add("baseline checkout: rollback playbook", self.timed("switchyard.fs.rollback", collections=baseline))
                self.check(False)
                self.clean()
            add(EMPTY_ROW, self.timed(pb_empty))

            if builtin:
                add("copy backup=yes + file state=link, per binary", self.timed(pb_base))
                self.check(True)
                add("copy .orig back, per binary", self.timed(pb_back))
                self.check(False)
                self.clean()

            links = [{"source": "%s/%s" % (UUTILS_DIR, t), "target": "/usr/bin/%s" % t} for t in self.tools]
            add("collection: one safe_apply task (default preset, no smoke)", self.timed(pb_mod, {"links": links}))
            self.check(True)
            self.timed("switchyard.fs.rollback")
            self.check(False)
            self.clean()
            add(EMPTY_ROW, self.timed(pb_empty))

            if canary:
                add("collection: swap playbook, canary batches 1,25%,100%", self.timed("switchyard.fs.swap"))
                self.check(True)
                self.timed("switchyard.fs.rollback")
                self.check(False)
                self.clean()
        # The empty playbook runs three times per repeat, around the others: its median is the ratios' base.
        return {k: (sorted(v)[len(v) // 2] if k == EMPTY_ROW else min(v)) for k, v in rows.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--hosts", type=int, action="append", help="fleet sizes (default 5)")
    ap.add_argument("--tools", type=int, default=10, help="binaries swapped per host (default 10)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the minimum is printed")
    ap.add_argument("--bases-from", help="reuse WORKDIR/bases built by `fleet.py build`")
    ap.add_argument("--base-port", type=int, default=25000)
    ap.add_argument("--no-builtin", action="store_true", help="skip the copy+file rows")
    ap.add_argument("--no-canary", action="store_true", help="skip the canary-batches row")
    ap.add_argument("--baseline", metavar="DIR", help="also run the swap and rollback playbooks of the collection "
                    "checked out in DIR, right after this one's (rows 'baseline checkout'): before/after in one run")
    args = ap.parse_args(argv)
    sizes = args.hosts or [5]
    tools = ALL_TOOLS[:args.tools]
    ensure_collection_link()
    baseline = None
    if args.baseline:
        baseline = os.path.join(REPO, ".build", "collections-baseline-%d" % os.getpid())
        os.makedirs(os.path.join(baseline, "ansible_collections", "switchyard"))
        os.symlink(os.path.abspath(args.baseline), os.path.join(baseline, "ansible_collections", "switchyard", "fs"))
    workdir = os.path.join(REPO, ".build", "bench-fleet-%d" % os.getpid())
    os.makedirs(workdir)
    try:
        if args.bases_from:
            base = fleetlib.base_dir(args.bases_from, "bookworm")
        else:
            t0 = time.monotonic()
            base = fleetlib.build_base(workdir, "bookworm")
            print("bookworm base built in %.1fs" % (time.monotonic() - t0))
        results = {}
        cpus = {}  # median controller CPU seconds per row
        for n in sizes:
            f = fleetlib.start_fleet(os.path.join(workdir, "hosts-%d" % n), n, args.base_port,
                                     bases={"bookworm": base})
            try:
                res = f.ansible("ping")  # warm the ssh ControlPersist masters
                if res.returncode != 0:
                    raise SystemExit("ping failed:\n" + res.stdout[-2000:])
                b = Bench(f, tools, f.workdir)
                results[n] = b.run(args.repeat, builtin=not args.no_builtin, canary=not args.no_canary,
                                   baseline=baseline)
            finally:
                f.stop()
            cpus[n] = dict((k, sorted(v)[len(v) // 2]) for k, v in b.cpu.items())
            for name, secs in results[n].items():
                print("N=%-3d K=%-3d %-62s %7.1f s  %5.2fx empty  controller CPU %6.1f s"
                      % (n, len(tools), name, secs, secs / results[n][EMPTY_ROW], cpus[n][name]))
            sys.stdout.flush()
        load = os.getloadavg()
        print()
        print("| what (K=%d binaries, wall time, min of %d; x the empty playbook of the same size; controller CPU, "
              "median) | %s |" % (len(tools), args.repeat, " | ".join("N=%d" % n for n in sizes)))
        print("|---|" + "---:|" * len(sizes))
        for name in results[sizes[0]]:
            cells = ["%.1f s (%.2fx; CPU %.1f s)" % (
                results[n][name], results[n][name] / results[n][EMPTY_ROW], cpus[n][name]) for n in sizes]
            print("| %s | %s |" % (name, " | ".join(cells)))
        print()
        print("load average at the end: %.1f %.1f %.1f, %d cores" % (load + (os.cpu_count(),)))
    finally:
        fleetlib._rmtree(workdir)
        if baseline:
            fleetlib._rmtree(baseline)


if __name__ == "__main__":
    main()
