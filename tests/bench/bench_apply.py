# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: one safe_apply task with N links vs N looped ansible.builtin.file tasks vs bare syscalls.

Run as a script: ``.venv/bin/python tests/bench/bench_apply.py [--links 200] [--repeats 3] [--profile]``.
Prints a table (median of --repeats runs, each variant on a fresh sandbox root) and the ratios;
asserts nothing except that every variant really produced the N symlinks.  SPEC section 9:
speed targets live here, as printed ratios, not as timed tests.

Variants:
  bare syscalls    the durable syscalls the engine makes per action, in a plain Python loop
  engine           engine.apply() called in-process (no Ansible)
  safe_apply       one switchyard.fs.safe_apply task via ansible-playbook (localhost, local connection)
  file loop        one ansible.builtin.file state=link force=true task looped over N items (keeps NO backup)
  ansible empty    one debug task: the fixed cost of starting ansible-playbook, shown separately

Sandboxes live under <repo>/.build/bench-<pid>/ and are removed at the end (--keep keeps them).
"""

from __future__ import absolute_import, division, print_function

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import resource
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tests/conftest.py creates <repo>/.build/collections/ansible_collections/switchyard/fs and puts
# it on sys.path; running it keeps one definition of that layout.
runpy.run_path(os.path.join(REPO, "tests", "conftest.py"))
COLLECTIONS_ROOT = os.path.join(REPO, ".build", "collections")

# Bound in _import_engine() so --collection can point at another checkout first.
Settings = apply = None

# Interpreter discovery is unreliable on the bench machine: always name the managed-host Python.
TARGET_PYTHON = os.environ.get("SWITCHYARD_TARGET_PYTHON", "/root/.pyenv/versions/3.11.7/bin/python3")
VENV_BIN = os.path.dirname(sys.executable)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TAG = "switchyard"


# ---------------------------------------------------------------------------------------------
# Sandboxes

CREATE_SLOW_US = 250.0


def create_cost_us(directory, n=20):
    """Microseconds per new empty file in directory. The files stay (.probe-<i>): removing them would make the
    very inodes the next creates must skip (see Sandbox._place)."""
    t0 = time.perf_counter()
    for i in range(n):
        os.close(os.open(os.path.join(directory, ".probe-%d" % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return (time.perf_counter() - t0) * 1e6 / n


class Sandbox(object):
    """N targets f000.. in usr/bin and N sources in opt/prov/bin, distinct bytes each (bench_scale uses it too,
    with five digits)."""

    def __init__(self, base, name, links, size, digits=3, place=False):
        self.root = os.path.join(base, name)
        self.links = []
        self.create_us = self.placements = None
        if place:
            self._place()
        for d in ("usr/bin", "opt/prov/bin"):
            os.makedirs(os.path.join(self.root, d), exist_ok=place)
        for i in range(links):
            target = os.path.join(self.root, "usr/bin/f%0*d" % (digits, i))
            source = os.path.join(self.root, "opt/prov/bin/f%0*d" % (digits, i))
            for path, who in ((target, b"orig"), (source, b"prov")):
                # Distinct bytes per file so every hash is real work, not a cached page of zeros.
                seed = hashlib.sha256(b"%s-%d" % (who, i)).digest()
                with open(path, "wb") as f:
                    f.write((seed * (size // len(seed) + 1))[:size])
                os.chown(path, 0, 0)
                os.chmod(path, 0o755)
            self.links.append({"source": source, "target": target})
        # Make the test bytes durable before timing, so no variant pays for the setup's writeback.
        os.sync()

    def _place(self):
        """Put usr/bin where creating an inode costs what it usually costs on this filesystem.

        The bench VM's ext4 runs without a journal, and in that mode the kernel's inode allocator skips every inode
        freed in the last minute or so (longer while its inode-table block is dirty), looking each one up. Right
        after thousands of files are removed (an earlier sandbox, a test run), every new inode in that block group
        costs about 1 ms of kernel CPU instead of 15-60 us until those frees age out (a sync ends most of it). The
        engine makes two new inodes per link (the sidecar and the temporary symlink), so a sandbox that lands there
        measures the disk, not the engine: 1,000 links took 2.1 s in the module instead of 0.6-0.8 s. bench_scale
        therefore keeps its sandboxes until the end (and by default puts them on a journaled loop ext4), and this
        probes 20 creates in usr/bin and builds the sandbox elsewhere (up to 12 times) while they cost more than
        CREATE_SLOW_US each. The probe is printed with the results."""
        for attempt in range(12):
            os.makedirs(os.path.join(self.root, "usr/bin"))
            us = create_cost_us(os.path.join(self.root, "usr/bin"))
            if us <= CREATE_SLOW_US or attempt == 11:
                break
            # Set aside, not removed (removing would free more inodes to skip); the next mkdir lands elsewhere.
            os.rename(self.root, "%s.slow%d" % (self.root, attempt))
            os.sync()  # older frees stop counting sooner once their inode-table blocks are clean
        self.create_us, self.placements = us, attempt + 1

    def remove(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def verify(self, expect_backups=None):
        """Every target is now a symlink to its in-root source; backups exist iff expected (None: not checked)."""
        bindir = os.path.join(self.root, "usr/bin")
        names = set(os.listdir(bindir))
        for link in self.links:
            target = link["target"]
            if not os.path.islink(target):
                raise SystemExit("benchmark invalid: %s is not a symlink" % target)
            text = os.readlink(target)
            want_rel = "/" + os.path.relpath(link["source"], self.root)
            if text not in (want_rel, link["source"]):
                raise SystemExit("benchmark invalid: %s -> %s" % (target, text))
            name = os.path.basename(target)
            has = any(n.startswith(".%s.%s." % (name, TAG)) and n.endswith(".bak.meta.json") for n in names)
            if expect_backups is not None and has != expect_backups:
                raise SystemExit("benchmark invalid: backup sidecar for %s present=%s, expected %s"
                                 % (target, has, expect_backups))


# ---------------------------------------------------------------------------------------------
# Variant: bare syscalls (what SPEC section 4 costs with no engine around it)

def _fsync_dir(fd):
    os.fsync(fd)


def _write_replace(dir_fd, name, data, run8):
    tmp = ".%s.swy-tmp.%s.%s" % (name, run8, os.urandom(4).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def bare_syscalls(sb):
    """Per action: resolve the parent with O_NOFOLLOW dir handles, lstat, open + sha256 the target,
    linkat it to the backup name, sidecar (temp + fsync + renameat + fsync dir), symlinkat a temp +
    renameat over the target + fsync dir.  Per plan: journal begin (temp + fsync + rename + fsync dir)
    and one final append + fsync."""
    run_id = str(uuid.uuid4())
    run8 = run_id[:8]
    now = int(time.time() * 1000)
    root_fd = os.open(sb.root, DIR_FLAGS)
    try:
        state_fd = root_fd
        for part in ("var", "lib", "switchyard"):
            try:
                os.mkdir(part, 0o755, dir_fd=state_fd)
            except FileExistsError:
                pass
            nfd = os.open(part, DIR_FLAGS, dir_fd=state_fd)
            if state_fd != root_fd:
                os.close(state_fd)
            state_fd = nfd
        jname = "%d-%s.journal" % (now, run_id)
        plan = {"kind": "apply", "run_id": run_id, "actions": [
            {"target": "/" + os.path.relpath(l["target"], sb.root), "backup_ms": now} for l in sb.links]}
        _write_replace(state_fd, jname, (json.dumps(plan, sort_keys=True) + "\n").encode(), run8)
        for link in sb.links:
            rel = os.path.relpath(link["target"], sb.root).split("/")
            pfd = os.dup(root_fd)
            for part in rel[:-1]:
                nfd = os.open(part, DIR_FLAGS, dir_fd=pfd)
                os.close(pfd)
                pfd = nfd
            name = rel[-1]
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=pfd)
                try:
                    h = hashlib.sha256()
                    while True:
                        chunk = os.read(fd, 1 << 20)
                        if not chunk:
                            break
                        h.update(chunk)
                finally:
                    os.close(fd)
                pname = ".%s.%s.%d.bak" % (name, TAG, now)
                os.link(name, pname, src_dir_fd=pfd, dst_dir_fd=pfd, follow_symlinks=False)
                meta = {"schema": "backup_meta.v2", "target": "/" + "/".join(rel), "payload": pname,
                        "payload_hash": h.hexdigest(), "mode": st.st_mode & 0o7777, "size": st.st_size,
                        "uid": st.st_uid, "gid": st.st_gid, "run_id": run_id, "created_ms": now}
                _write_replace(pfd, pname + ".meta.json", (json.dumps(meta, sort_keys=True, indent=1) + "\n").encode(),
                               run8)
                text = "/" + os.path.relpath(link["source"], sb.root)
                tmp = ".%s.swy-tmp.%s.%s" % (name, run8, os.urandom(4).hex())
                os.symlink(text, tmp, dir_fd=pfd)
                os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                os.fsync(pfd)
            finally:
                os.close(pfd)
        fd = os.open(jname, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, dir_fd=state_fd)
        try:
            os.write(fd, b'{"state": "committed"}\n')
            os.fsync(fd)
        finally:
            os.close(fd)
        os.close(state_fd)
    finally:
        os.close(root_fd)


# ---------------------------------------------------------------------------------------------
# Variant: engine in-process

def engine_apply(sb):
    report, err, _warnings = apply(Settings(root=sb.root), links=sb.links)
    if err is not None:
        raise SystemExit("engine apply failed: %s" % err.msg)
    if report["summary"]["changed"] != len(sb.links):
        raise SystemExit("engine apply changed %d of %d" % (report["summary"]["changed"], len(sb.links)))


# ---------------------------------------------------------------------------------------------
# Variants through ansible-playbook

class Ansible(object):
    def __init__(self, base, pipelining, collections_root):
        self.dir = os.path.join(base, "ansible")
        self.tmp = os.path.join(self.dir, "tmp")
        os.makedirs(self.tmp)
        self.inventory = os.path.join(self.dir, "inventory.ini")
        with open(self.inventory, "w") as f:
            f.write("[sandbox]\nlocalhost ansible_connection=local ansible_python_interpreter=%s\n" % TARGET_PYTHON)
        self.env = dict(os.environ)
        self.env.update({
            "ANSIBLE_COLLECTIONS_PATH": collections_root,
            "ANSIBLE_STDOUT_CALLBACK": "default",  # what an operator sees; json lives in ansible.posix
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_PIPELINING": "True" if pipelining else "False",
            # Keep every temp file of controller and "remote" side inside the bench directory.
            "ANSIBLE_LOCAL_TEMP": self.tmp,
            "ANSIBLE_REMOTE_TEMP": self.tmp,
            "TMPDIR": self.tmp,
            "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
        })
        self.count = 0

    def run(self, tasks_yaml, n_items=None, deadline=None):
        """(wall s, CPU s of ansible-playbook and its children, note).  With n_items and a deadline
        (perf_counter value), per-item result lines are timestamped as they stream; past the deadline
        the playbook is killed and the total is extrapolated from the items done (note says so)."""
        self.count += 1
        pb = os.path.join(self.dir, "playbook-%d.yml" % self.count)
        with open(pb, "w") as f:
            f.write("- hosts: localhost\n  gather_facts: false\n  tasks:\n" + tasks_yaml)
        cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", self.inventory, pb]
        err_path = pb + ".stderr"
        stamps, tail, note = [], [], None
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        with open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=err, cwd=self.dir,
                                    universal_newlines=True, start_new_session=True)
            killed = False
            for line in proc.stdout:
                if "(item=" in line:
                    stamps.append(time.perf_counter() - t0)
                    if (deadline is not None and n_items and len(stamps) >= 5 and len(stamps) < n_items
                            and time.perf_counter() > deadline):
                        os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group, nothing else
                        killed = True
                        break
                tail.append(line)
                del tail[:-40]
            proc.stdout.close()
            proc.wait()
        elapsed = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        if killed:
            k = len(stamps)
            rate = (stamps[-1] - stamps[0]) / (k - 1)
            elapsed = stamps[-1] + (n_items - k) * rate
            cpu = cpu * n_items / k
            note = "extrapolated: stopped after %d of %d items to stay in --budget, %.1f ms/item" % (k, n_items,
                                                                                                     rate * 1000)
            return elapsed, cpu, note
        if proc.returncode != 0:
            with open(err_path) as f:
                raise SystemExit("ansible-playbook failed (rc=%d)\n%s\n%s" % (proc.returncode, "".join(tail),
                                                                              f.read()[-2000:]))
        return elapsed, cpu, note


def _links_json(sb):
    return json.dumps(sb.links)


def ansible_empty(ans):
    return ans.run("    - ansible.builtin.debug:\n        msg: fixed overhead\n")


def ansible_safe_apply(ans, sb):
    return ans.run("    - switchyard.fs.safe_apply:\n        root: %s\n        links: %s\n"
                   % (json.dumps(sb.root), _links_json(sb)))


def ansible_file_loop(ans, sb, deadline=None):
    return ans.run("    - ansible.builtin.file:\n        src: \"{{ item.source }}\"\n        dest: \"{{ item.target }}\"\n"
                   "        state: link\n        force: true\n      loop: %s\n" % _links_json(sb),
                   n_items=len(sb.links), deadline=deadline)


# ---------------------------------------------------------------------------------------------

def timed(fn, *args):
    """(wall seconds, CPU seconds of this process) of an in-process variant."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fn(*args)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return elapsed, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), None


def _import_engine(collection, base):
    """Import the engine from this checkout, or from --collection DIR (another checkout or an
    unpacked build) through a private collections root under the bench directory."""
    global Settings, apply
    root = COLLECTIONS_ROOT
    if collection:
        root = os.path.join(base, "collections")
        os.makedirs(os.path.join(root, "ansible_collections", "switchyard"))
        os.symlink(os.path.abspath(collection), os.path.join(root, "ansible_collections", "switchyard", "fs"))
        while COLLECTIONS_ROOT in sys.path:
            sys.path.remove(COLLECTIONS_ROOT)
        sys.path.insert(0, root)
    from ansible_collections.switchyard.fs.plugins.module_utils import engine
    Settings, apply = engine.Settings, engine.apply
    return root, os.path.realpath(os.path.join(os.path.dirname(engine.__file__), "..", ".."))


PROFILE_RESERVE_S = 8.0  # one more sandbox and one engine run under cProfile
VARIANTS = ("bare syscalls", "engine (in-process)", "safe_apply (1 task)", "file loop (N items)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--links", type=int, default=200, help="links per plan (default 200)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is reported (default 3)")
    ap.add_argument("--size", type=int, default=64 * 1024, help="bytes per target file (default 65536)")
    ap.add_argument("--budget", type=float, default=160.0,
                    help="seconds: the file loop (the slow baseline) is repeated only while the projected total "
                    "stays under this; every other variant always gets --repeats runs (default 160)")
    ap.add_argument("--pipelining", action="store_true", help="set ANSIBLE_PIPELINING=True (default: ansible default, off)")
    ap.add_argument("--no-ansible", action="store_true", help="skip the ansible-playbook variants")
    ap.add_argument("--collection", metavar="DIR", help="benchmark the collection checked out in DIR instead of this one")
    ap.add_argument("--profile", action="store_true", help="afterwards cProfile one engine run, top 15 by cumulative time")
    ap.add_argument("--keep", action="store_true", help="keep the sandboxes under .build/bench-<pid>/")
    args = ap.parse_args(argv)
    if args.links < 1 or args.links > 1000:
        ap.error("--links must be 1..1000")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    t_start = time.perf_counter()
    base = os.path.join(REPO, ".build", "bench-%d" % os.getpid())
    os.makedirs(base)
    counter = [0]

    def fresh():
        counter[0] += 1
        return Sandbox(base, "root-%02d" % counter[0], args.links, args.size)

    results = dict((k, []) for k in VARIANTS + ("ansible empty",))
    try:
        collections_root, collection_dir = _import_engine(args.collection, base)
        ans = None if args.no_ansible else Ansible(base, args.pipelining, collections_root)
        # Warm-up (not measured): imports, page cache of the ansible install and of the collection.
        engine_apply(fresh())
        if ans is not None:
            ansible_empty(ans)
        load_before = os.getloadavg()
        for rep in range(args.repeats):
            # Interleave variants so drift (page cache, writeback, other load) hits all of them alike.
            round_start = time.perf_counter()
            sb = fresh()
            results["bare syscalls"].append(timed(bare_syscalls, sb))
            sb.verify(expect_backups=True)
            sb = fresh()
            results["engine (in-process)"].append(timed(engine_apply, sb))
            sb.verify(expect_backups=True)
            if ans is None:
                continue
            sb = fresh()
            results["safe_apply (1 task)"].append(ansible_safe_apply(ans, sb))
            sb.verify(expect_backups=True)
            results["ansible empty"].append(ansible_empty(ans))
            # The file loop costs ~N module runs.  Round 1 always runs it, streaming per-item times and
            # stopping (extrapolated, and said so) when finishing it would break --budget; later rounds
            # repeat it only when a whole run is projected to fit.
            cheap_round = time.perf_counter() - round_start
            remaining = args.repeats - rep - 1
            reserve = remaining * cheap_round + (PROFILE_RESERVE_S if args.profile else 0.0) + 3.0
            done = [w for w, _c, _n in results["file loop (N items)"]]
            if rep == 0:
                sb = fresh()
                results["file loop (N items)"].append(
                    ansible_file_loop(ans, sb, deadline=t_start + args.budget - reserve))
                if results["file loop (N items)"][-1][2] is None:
                    sb.verify(expect_backups=False)
            elif (time.perf_counter() - t_start) + max(done) + reserve < args.budget \
                    and results["file loop (N items)"][-1][2] is None:
                sb = fresh()
                results["file loop (N items)"].append(ansible_file_loop(ans, sb))
                sb.verify(expect_backups=False)
        load_after = os.getloadavg()

        med = dict((k, statistics.median(w for w, _c, _n in v)) for k, v in results.items() if v)
        cpu = dict((k, statistics.median(c for _w, c, _n in v)) for k, v in results.items() if v)
        n = args.links
        print("switchyard.fs bench_apply: %d links, %d B per target, fresh sandbox root per run, median of the runs shown"
              % (n, args.size))
        print("collection %s; python %s; target python %s; ANSIBLE_PIPELINING %s; fs %s; %d CPUs; "
              "loadavg(1m) %.2f before, %.2f after"
              % (collection_dir, sys.version.split()[0], TARGET_PYTHON, "on" if args.pipelining else "off",
                 _fstype(base), os.cpu_count() or 0, load_before[0], load_after[0]))
        print()
        hdr = "%-22s %9s %14s %10s %12s %8s   %s" % ("variant", "total s", "per-action ms", "x bare", "x file-loop",
                                                     "cpu s", "wall of each run (s)")
        print(hdr)
        print("-" * len(hdr))
        bare = med["bare syscalls"]
        floop = med.get("file loop (N items)")
        for name in VARIANTS:
            if name not in med:
                continue
            t = med[name]
            extrapolated = any(note for _w, _c, note in results[name])
            print("%-22s %9.3f %14.3f %10.2f %12s %8s   %s" % (
                name + ("*" if extrapolated else ""), t, t * 1000.0 / n, t / bare, ("%.3f" % (t / floop)) if floop else "-",
                ("%.3f" % cpu[name]) if name in cpu else "n/a",
                " ".join("%.3f" % w for w, _c, _n in results[name])))
        for _w, _c, note in results["file loop (N items)"]:
            if note:
                print("* file loop: %s" % note)
        print("(cpu s: median user+sys CPU of this process for in-process variants, of ansible-playbook and all its "
              "children otherwise;\n it moves little with machine load and does not include time blocked in fsync)")
        print()
        if "ansible empty" in med:
            empty = med["ansible empty"]
            print("ansible fixed overhead (playbook with 1 debug task): %.3f s  (runs: %s)"
                  % (empty, " ".join("%.3f" % w for w, _c, _n in results["ansible empty"])))
            sa, fl = med["safe_apply (1 task)"], med["file loop (N items)"]
            print("minus that overhead: safe_apply %.3f ms/action, file loop %.3f ms/action; file loop / safe_apply = %.1fx"
                  % ((sa - empty) * 1000.0 / n, (fl - empty) * 1000.0 / n, (fl - empty) / max(sa - empty, 1e-9)))
            print("safe_apply / engine in-process = %.2fx (Ansible transport, AnsiballZ, argument spec, report "
                  "round trip, schema validation)" % (sa / med["engine (in-process)"]))
        print("engine / bare syscalls: %.3f ms vs %.3f ms per action (%.2fx)"
              % (med["engine (in-process)"] * 1000.0 / n, bare * 1000.0 / n, med["engine (in-process)"] / bare))
        print("benchmark wall time: %.1f s" % (time.perf_counter() - t_start))
        sys.stdout.flush()

        if args.profile:
            sb = fresh()
            prof = cProfile.Profile()
            prof.enable()
            engine_apply(sb)
            prof.disable()
            sb.verify(expect_backups=True)
            for key, label in (("cumulative", "cumulative"), ("tottime", "own (tottime)")):
                out = io.StringIO()
                pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(15)
                print()
                print("cProfile of one engine run (%d links), top 15 by %s time:" % (n, label))
                text = out.getvalue()
                print(text[text.index("   ncalls"):].rstrip() if "   ncalls" in text else text.strip())
    finally:
        if args.keep:
            print("sandboxes kept under %s" % base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def _fstype(path):
    best, fstype = "", "?"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                mp = parts[1].replace("\\040", " ")
                if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                    best, fstype = mp, parts[2]
    except OSError:
        pass
    return fstype


if __name__ == "__main__":
    sys.exit(main())
