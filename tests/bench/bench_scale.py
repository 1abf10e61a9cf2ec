# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14 benchmark: one safe_apply task at 200 / 1,000 / 10,000 links against the empty playbook, the builtin
loops, the engine in-process and the group-commit syscall floor, with fsync counts, report bytes and peak RSS.

Run: ``.venv/bin/python tests/bench/bench_scale.py`` (``make bench`` runs it).  Prints one table and the issue's
targets with whether each holds.  Ratios are to the empty playbook measured in the same run, interleaved with the
safe_apply runs, because absolute times on the shared bench VM drift.  Nothing here is a timed assertion.

How each column is measured (all real, nothing estimated unless marked *):
  wall s        perf_counter around the ansible-playbook process (or around apply() in a fresh child process)
  fsyncs        fsync + fdatasync + syncfs system calls of the whole process tree, counted by
                ``strace -f --seccomp-bpf -e trace=fsync,fdatasync,syncfs`` (only those calls stop, so the
                tracing costs little; every measured run is traced the same way, the empty playbook included)
  report B      bytes of the module's JSON result on stdout (summed over the items of a loop)
  module MB     peak RSS (VmHWM) of the managed-host module process: ansible_python_interpreter is a wrapper that
                runs the real interpreter under /usr/bin/time -f %M; for in-process variants the child's ru_maxrss
  controller MB peak VmHWM of ansible-playbook and its forked workers, polled every 50 ms from /proc
"""

from __future__ import absolute_import, division, print_function

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
COLLECTIONS_ROOT = os.path.join(REPO, ".build", "collections")  # made by tests/conftest.py (bench_apply runs it)
ba = None  # tests/bench/bench_apply.py, imported by main() once the collection to measure is chosen
TARGET_PYTHON = os.environ.get("SWITCHYARD_TARGET_PYTHON", "/root/.pyenv/versions/3.11.7/bin/python3")
VENV_BIN = os.path.dirname(sys.executable)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TIME = "/usr/bin/time"
FSYNC_RE = re.compile(r"\b(fsync|fdatasync|syncfs)\(")


# ---------------------------------------------------------------------------------------------
# Child-process variants: the engine in-process and the group-commit syscall floor

def child_engine(root, links):
    from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply
    t0 = time.perf_counter()
    report, err, _w = apply(Settings(root=root), links=links)
    wall = time.perf_counter() - t0
    if os.environ.get("SWITCHYARD_BENCH_WHERE"):
        import ansible_collections.switchyard.fs as coll
        sys.stderr.write("engine from %s\n" % os.path.realpath(coll.__path__[0]))
    if err is not None or report["summary"]["changed"] != len(links):
        raise SystemExit("engine apply failed: %s" % (err and err.msg))
    return wall, len(json.dumps(report, separators=(",", ":")))


def child_floor(root, links):
    """The group commit's syscalls with no engine around them: journal begin in var/lib/switchyard/journal (temp,
    fsync, rename, fsync dir);
    per action resolve the parent by O_NOFOLLOW handles, lstat, open + sha256, linkat the backup, write the
    sidecar (temp + rename, no fsync); one syncfs; fsync each changed directory once; a journal record; per action
    symlinkat a temp + renameat over the target; fsync each target directory once; the commit record."""
    t0 = time.perf_counter()
    run_id = str(uuid.uuid4())
    now = int(time.time() * 1000)
    root_fd = os.open(root, DIR_FLAGS)
    dirs = {}
    state_fd = root_fd
    for part in ("var", "lib", "switchyard", "journal"):
        try:
            os.mkdir(part, 0o755, dir_fd=state_fd)
        except OSError:
            pass
        nfd = os.open(part, DIR_FLAGS, dir_fd=state_fd)
        if state_fd != root_fd:
            os.close(state_fd)
        state_fd = nfd
    jname = "%d-%s.journal" % (now, run_id)
    plan = {"kind": "apply", "run_id": run_id, "actions": [
        {"target": "/" + os.path.relpath(l["target"], root), "backup_ms": now} for l in links]}
    tmp = "." + jname + ".tmp"
    jfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=state_fd)
    os.write(jfd, (json.dumps(plan, sort_keys=True) + "\n").encode())
    os.fsync(jfd)
    os.rename(tmp, jname, src_dir_fd=state_fd, dst_dir_fd=state_fd)
    os.fsync(state_fd)
    parents = []
    for link in links:
        rel = os.path.relpath(link["target"], root).split("/")
        pfd = os.dup(root_fd)
        for part in rel[:-1]:
            nfd = os.open(part, DIR_FLAGS, dir_fd=pfd)
            os.close(pfd)
            pfd = nfd
        st = os.fstat(pfd)
        if (st.st_dev, st.st_ino) in dirs:
            os.close(pfd)
            pfd = dirs[(st.st_dev, st.st_ino)]
        else:
            dirs[(st.st_dev, st.st_ino)] = pfd
        parents.append(pfd)
        name = rel[-1]
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=pfd)
        h = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            h.update(chunk)
        os.close(fd)
        pname = ".%s.switchyard.%d.bak" % (name, now)
        os.link(name, pname, src_dir_fd=pfd, dst_dir_fd=pfd, follow_symlinks=False)
        meta = {"schema": "backup_meta.v2", "target": "/" + "/".join(rel), "payload": pname,
                "payload_hash": h.hexdigest(), "mode": st.st_mode & 0o7777, "size": st.st_size, "uid": st.st_uid,
                "gid": st.st_gid, "run_id": run_id, "created_ms": now}
        stmp = "." + pname + ".meta.json.swy-tmp." + run_id[:8]
        sfd = os.open(stmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        os.write(sfd, (json.dumps(meta, sort_keys=True) + "\n").encode())
        os.close(sfd)
        os.rename(stmp, pname + ".meta.json", src_dir_fd=pfd, dst_dir_fd=pfd)
    first_dir = next(iter(dirs.values()))  # as the engine does: syncfs through a directory it wrote in
    os.syncfs(first_dir) if hasattr(os, "syncfs") else _syncfs(first_dir)
    for dfd in dirs.values():
        os.fsync(dfd)
    os.write(jfd, b'{"record": "backups_durable"}\n')
    os.fsync(jfd)
    for link, pfd in zip(links, parents):
        name = os.path.basename(link["target"])
        tmp = ".%s.swy-tmp.%s" % (name, run_id[:8])
        os.symlink("/" + os.path.relpath(link["source"], root), tmp, dir_fd=pfd)
        os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
    for dfd in dirs.values():
        os.fsync(dfd)
    os.write(jfd, b'{"state": "committed"}\n')
    os.fsync(jfd)
    os.close(jfd)
    for dfd in dirs.values():
        os.close(dfd)
    os.close(state_fd)
    os.close(root_fd)
    return time.perf_counter() - t0, 0


def loop_ext4(image, mountpoint):
    """A fresh ext4 (mkfs.ext4 defaults: journal, 4 KiB blocks) on a sparse 8 GiB image, loop-mounted at mountpoint.

    The bench VM's root filesystem is ext4 without a journal. There the inode allocator skips every inode freed in
    the last minute or more, looking each one up, so for a while after any large removal (a test run, an earlier
    sandbox) each new file or symlink costs about 1 ms of kernel CPU instead of 20 us, and a 1,000-link apply took
    2.1 s in the module instead of 0.6 s depending on what ran before it. A journaled ext4, as on the hosts this
    collection manages, does not do that, and each fsync there goes through the journal to a real device (the
    image's backing file). --root-fs measures on the checkout's filesystem instead.

    Returns None when mounted, else why not (not root, no mkfs.ext4, no loop device): the caller then falls back
    to the checkout's filesystem and says so."""
    os.makedirs(mountpoint)
    try:
        with open(image, "wb") as f:
            f.truncate(8 << 30)
        for cmd in (["mkfs.ext4", "-q", "-F", image], ["mount", "-o", "loop", image, mountpoint]):
            subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or ""
        os.rmdir(mountpoint)
        if os.path.exists(image):
            os.unlink(image)
        return "%s%s" % (e, (": " + detail.strip()) if detail.strip() else "")
    return None


def _syncfs(fd):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syncfs(fd) != 0:
        raise OSError(ctypes.get_errno(), "syncfs")


def child_main(kind, root, links_file):
    with open(links_file) as f:
        links = json.load(f)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    wall, report_bytes = (child_engine if kind == "engine" else child_floor)(root, links)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"wall": wall, "cpu": cpu, "report_bytes": report_bytes, "rss_kb": r1.ru_maxrss}))
    return 0


# ---------------------------------------------------------------------------------------------
# Measured runs

class Measured(object):
    cpu = None
    module_s = None  # wall time of the module process(es) on the host, summed over a loop's items

    def __init__(self, wall, fsyncs=None, report_bytes=None, module_kb=None, controller_kb=None, note=None):
        self.setup_fsyncs = fsyncs[1] if isinstance(fsyncs, tuple) else 0
        fsyncs = fsyncs[0] if isinstance(fsyncs, tuple) else fsyncs
        self.wall, self.fsyncs, self.report_bytes = wall, fsyncs, report_bytes
        self.module_kb, self.controller_kb, self.note = module_kb, controller_kb, note
        self.traced_wall = None

    def adopt(self, traced):
        """Take the counted columns from a traced run of the same variant; the wall stays this untraced run's."""
        for name in ("fsyncs", "setup_fsyncs", "report_bytes", "module_kb", "controller_kb", "module_s"):
            setattr(self, name, getattr(traced, name))
        self.traced_wall = traced.wall
        if traced.note:
            self.note = "; ".join(n for n in (self.note, "traced run " + traced.note) if n)
        return self


def _count_fsyncs(path, root=None):
    """(all fsync-family calls, those on root, root/var, root/var/lib and root/var/lib/switchyard: the one-time
    durable creation of the state directory on a fresh root; since that is one syncfs that also covers the
    journal file, a fresh root counts 1 + 6 where an older one counts 0 + 7)."""
    n = setup = 0
    once = set("<%s>" % os.path.join(root, d) if d else "<%s>" % root
               for d in ("", "var", "var/lib", "var/lib/switchyard")) if root else set()
    with open(path) as f:
        for line in f:
            m = FSYNC_RE.search(line)
            if m and "resumed>" not in line:
                n += 1
                fd_text = line[m.end():].split(")", 1)[0]
                if fd_text[fd_text.find("<"):] in once:
                    setup += 1
    return n, setup


def _strace(out):
    # -y: fds print with their paths, so the state directory's one-time creation can be told apart.
    return ["strace", "-f", "-y", "--seccomp-bpf", "-qq", "-e", "trace=fsync,fdatasync,syncfs", "-o", out]


def _hwm_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _controller_pids(marker):
    """ansible-playbook and its forked workers: every process whose command line holds this run's playbook path."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if marker in cmd and b"ansible-playbook" in cmd and not cmd.startswith(b"strace"):
            out.append(int(name))
    return out


class Ansible(object):
    """ansible-playbook against localhost. traced: under strace, the module under /usr/bin/time and the controller's
    RSS polled, for the fsync, byte and memory columns; untraced: nothing around it, for the wall times. Tracing is
    not free and costs more per module process than per debug task (ping was 2.1-2.5x the empty playbook traced,
    1.4-1.5x untraced), so no ratio is taken from a traced run."""

    def __init__(self, base, collections_root=None, name="ansible", traced=True):
        self.traced = traced
        self.dir = os.path.join(base, name)
        self.tmp = os.path.join(self.dir, "tmp")
        os.makedirs(self.tmp)
        self.meas = os.path.join(self.dir, "meas")
        os.makedirs(self.meas)
        # The managed-host interpreter: the real one under /usr/bin/time (peak RSS), its stdout counted (report bytes).
        self.wrapper = os.path.join(self.dir, "python-measured")
        with open(self.wrapper, "w") as f:
            f.write('#!/bin/sh\nout=$(mktemp "%(m)s/out.XXXXXX")\n'
                    '%(time)s -f "%%M %%e" -a -o "%(m)s/rss" "%(py)s" "$@" >"$out"\nrc=$?\n'
                    'wc -c <"$out" >>"%(m)s/bytes"\ncat "$out"\nrm -f "$out"\nexit $rc\n'
                    % {"m": self.meas, "time": TIME, "py": TARGET_PYTHON})
        os.chmod(self.wrapper, 0o755)
        self.inventory = os.path.join(self.dir, "inventory.ini")
        with open(self.inventory, "w") as f:
            f.write("[sandbox]\nlocalhost ansible_connection=local ansible_python_interpreter=%s\n"
                    % (self.wrapper if traced else TARGET_PYTHON))
        self.env = dict(os.environ)
        self.env.update({
            "ANSIBLE_COLLECTIONS_PATH": collections_root or COLLECTIONS_ROOT,
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_LOCAL_TEMP": self.tmp,
            "ANSIBLE_REMOTE_TEMP": self.tmp,
            "TMPDIR": self.tmp,
            "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
        })
        self.count = 0

    def run(self, tasks_yaml, n_items=None, budget=None, root=None):
        self.count += 1
        pb = os.path.join(self.dir, "playbook-%d.yml" % self.count)
        vars_files = ""
        if isinstance(tasks_yaml, tuple):  # (tasks, a variables file for the play)
            tasks_yaml, vf = tasks_yaml
            vars_files = "  vars_files: [%s]\n" % json.dumps(vf)
        with open(pb, "w") as f:
            f.write("- hosts: localhost\n  gather_facts: false\n" + vars_files + "  tasks:\n" + tasks_yaml)
        for name in ("rss", "bytes"):
            open(os.path.join(self.meas, name), "w").close()
        trace = pb + ".strace"
        prefix = _strace(trace) if self.traced else []
        cmd = prefix + [os.path.join(VENV_BIN, "ansible-playbook"), "-i", self.inventory, pb]
        marker = pb.encode()
        stamps, tail, killed = [], [], False
        hwm = {}
        t0 = time.perf_counter()
        with open(pb + ".stderr", "w") as err:
            proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=err, cwd=self.dir,
                                    universal_newlines=True, start_new_session=True)

            def reader():
                for line in proc.stdout:
                    if "(item=" in line:
                        stamps.append(time.perf_counter() - t0)
                    tail.append(line)
                    del tail[:-40]
            th = threading.Thread(target=reader)
            th.daemon = True
            th.start()
            while proc.poll() is None:
                for pid in (_controller_pids(marker) if self.traced else ()):
                    kb = _hwm_kb(pid)
                    if kb is not None:
                        hwm[pid] = max(kb, hwm.get(pid, 0))
                if (not killed and budget is not None and n_items and 5 <= len(stamps) < n_items
                        and time.perf_counter() - t0 > budget):
                    os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group, nothing else
                    # ansible-playbook (detached by the killed strace) leaves that group: find it by its playbook.
                    for pid in _controller_pids(marker):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass
                    killed = True
                time.sleep(0.05)
            th.join(10)
            proc.stdout.close()
        wall = time.perf_counter() - t0
        if proc.returncode != 0 and not killed:
            with open(pb + ".stderr") as f:
                raise SystemExit("ansible-playbook failed (rc=%d)\n%s\n%s" % (proc.returncode, "\n".join(tail),
                                                                              f.read()[-2000:]))
        if killed:  # a stopped loop: its wall extrapolated from the items done, at their rate
            k = len(stamps)
            rate = (stamps[-1] - stamps[0]) / (k - 1)
            wall = stamps[-1] + (n_items - k) * rate
            stopped = "stopped after %d of %d items (--loop-budget)" % (k, n_items)
        if not self.traced:
            m = Measured(wall)
            if killed:
                m.note = "%s, wall extrapolated at %.0f ms/item" % (stopped, rate * 1000)
            return m
        # /usr/bin/time lines: "<peak RSS KiB> <elapsed s>" per module process (other lines: its exit-status notes).
        timed = [l.split() for l in open(os.path.join(self.meas, "rss")).read().splitlines()]
        timed = [(int(t[0]), float(t[1])) for t in timed if len(t) == 2 and t[0].isdigit()]
        rss = [kb for kb, _e in timed]
        nbytes = [int(l) for l in open(os.path.join(self.meas, "bytes")).read().split() if l.isdigit()]
        m = Measured(wall, _count_fsyncs(trace, root), sum(nbytes) if nbytes else None, max(rss) if rss else None,
                     max(hwm.values()) if hwm else None)
        m.module_s = sum(e for _kb, e in timed) if timed else None
        if killed:
            m.fsyncs = int(round(m.fsyncs * n_items / float(k)))
            m.report_bytes = int(round(m.report_bytes * n_items / float(k))) if m.report_bytes else None
            m.module_s = m.module_s * n_items / float(len(timed)) if timed else None  # per module run, all items
            m.note = "%s, wall, fsyncs, bytes and mod s extrapolated at %.0f ms/item" % (stopped, rate * 1000)
        return m


def run_child(kind, sb, base):
    links_file = sb.root + ".links.json"
    with open(links_file, "w") as f:
        json.dump(sb.links, f)
    trace = sb.root + ".strace"
    env = dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT)
    p = subprocess.run(_strace(trace) + [TARGET_PYTHON, os.path.abspath(__file__), "--child", kind, sb.root, links_file],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env, check=False)
    if p.returncode != 0:
        raise SystemExit("%s child failed:\n%s" % (kind, p.stderr[-3000:]))
    out = json.loads(p.stdout.strip().splitlines()[-1])
    m = Measured(out["wall"], _count_fsyncs(trace, sb.root), out["report_bytes"] or None, out["rss_kb"], None)
    m.cpu = out["cpu"]
    return m


def _links_json(sb):
    return json.dumps(sb.links)


def empty_tasks():
    return "    - ansible.builtin.debug:\n        msg: fixed overhead\n"


def ping_tasks():
    return "    - ansible.builtin.ping:\n"


def true_tasks():
    return "    - ansible.builtin.command: /bin/true\n      changed_when: false\n"


def safe_apply_tasks(sb):
    # The links go in as a variables file (JSON, next to the sandbox root; the playbook's vars_files), as an
    # inventory's group_vars would give them. Written into the playbook itself they made ansible-playbook parse
    # 10,000 links as YAML: about 100 MB more peak RSS and seconds of parsing that are not the task's cost.
    path = sb.root + "-links.json"
    with open(path, "w") as f:
        f.write('{"bench_links": %s}\n' % _links_json(sb))
    return ("    - switchyard.fs.safe_apply:\n        root: %s\n        links: \"{{ bench_links }}\"\n" % json.dumps(sb.root),
            path)


def file_loop_tasks(sb):
    return ("    - ansible.builtin.file:\n        src: \"{{ item.source }}\"\n        dest: \"{{ item.target }}\"\n"
            "        state: link\n        force: true\n      loop: %s\n" % _links_json(sb))


def copy_file_loop_tasks(sb):
    """The builtin way to keep a backup: copy the provider over each target with backup=yes (the original is kept as
    <target>.<timestamp>~), then the file loop makes each target the link."""
    return ("    - ansible.builtin.copy:\n        src: \"{{ item.source }}\"\n        dest: \"{{ item.target }}\"\n"
            "        remote_src: true\n        backup: true\n      loop: %s\n" % _links_json(sb)
            + file_loop_tasks(sb))


# ---------------------------------------------------------------------------------------------

def _mb(kb):
    return "%.0f" % (kb / 1024.0) if kb else "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--child", nargs=3, metavar=("KIND", "ROOT", "LINKS_JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="200,1000,10000", help="safe_apply plan sizes (default 200,1000,10000)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of safe_apply at each size below 5,000 links, each followed by an empty playbook; "
                    "medians are shown (default 3; larger plans run once)")
    ap.add_argument("--size", type=int, default=4096, help="bytes per target file (default 4096)")
    ap.add_argument("--loop-links", type=int, default=200, help="items of the builtin loops (default 200; 0 skips them)")
    ap.add_argument("--loop-budget", type=float, default=40.0,
                    help="seconds per builtin loop run before it is stopped and extrapolated, marked * (default 40)")
    ap.add_argument("--no-ansible", action="store_true", help="only the in-process engine and the syscall floor")
    ap.add_argument("--collection", metavar="DIR", help="benchmark the collection checked out in DIR instead of this one")
    ap.add_argument("--keep", action="store_true", help="keep .build/bench-scale-<pid>/")
    ap.add_argument("--root-fs", action="store_true", help="build the sandboxes under .build on the filesystem that "
                    "holds the checkout instead of on a fresh loop-mounted ext4 (see loop_ext4)")
    ap.add_argument("--no-place", action="store_true", help="keep each sandbox where it lands, even where this "
                    "filesystem makes every new inode cost more than bench_apply.CREATE_SLOW_US (see "
                    "bench_apply.Sandbox._place)")
    ap.add_argument("--baseline", metavar="DIR", help="also run each safe_apply size with the collection checked out "
                    "in DIR, interleaved with this one (rows 'safe_apply, baseline'): before/after in one run")
    args = ap.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    sys.path.insert(0, HERE)
    global ba
    import bench_apply as ba  # runs tests/conftest.py: the collections root under .build
    for tool in ("strace", TIME):
        if not shutil.which(tool):
            raise SystemExit("%s is required (scripts/install-system-deps.sh installs it)" % tool)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    t_start = time.perf_counter()
    base = os.path.join(REPO, ".build", "bench-scale-%d" % os.getpid())
    os.makedirs(base)
    if args.collection:
        global COLLECTIONS_ROOT
        COLLECTIONS_ROOT = os.path.join(base, "collections")
        os.makedirs(os.path.join(COLLECTIONS_ROOT, "ansible_collections", "switchyard"))
        os.symlink(os.path.abspath(args.collection),
                   os.path.join(COLLECTIONS_ROOT, "ansible_collections", "switchyard", "fs"))
    baseline_root = None
    if args.baseline:
        baseline_root = os.path.join(base, "collections-baseline")
        os.makedirs(os.path.join(baseline_root, "ansible_collections", "switchyard"))
        os.symlink(os.path.abspath(args.baseline),
                   os.path.join(baseline_root, "ansible_collections", "switchyard", "fs"))
    counter = [0]

    sandboxes = base
    args.no_loop = None
    if not args.root_fs:
        sandboxes = os.path.join(base, "fs")
        args.no_loop = loop_ext4(os.path.join(base, "ext4.img"), sandboxes)
        if args.no_loop:
            print("no loop-mounted ext4 (%s): the sandboxes go under .build on the checkout's filesystem, as with "
                  "--root-fs" % args.no_loop, file=sys.stderr)
            sandboxes = base
    args.sandboxes = sandboxes

    def fresh(n):
        """A new sandbox root. Sandboxes stay until the end: removing one just before the next is built would make
        that one's new inodes cost about 1 ms each on this VM (see bench_apply.Sandbox._place)."""
        counter[0] += 1
        sb = ba.Sandbox(sandboxes, "root-%02d" % counter[0], n, args.size, digits=5, place=not args.no_place)
        placements.append((sb.create_us, sb.placements))
        return sb

    placements = []  # (us per create in usr/bin, directories tried) per sandbox
    rows = []  # (label, links, [Measured])
    empties = []  # untraced: the ratios' denominator
    empties_traced = []  # traced: the fsync baseline

    def apply_runs(a, t, n, repeats):
        """repeats untraced runs of safe_apply (a fresh root each, each followed by an untraced empty playbook) and
        one traced run whose counted columns every untraced run adopts."""
        runs = []
        for _rep in range(repeats):
            sb = fresh(n)
            runs.append(t.run(safe_apply_tasks(sb)))
            sb.verify()
            empties.append(t.run(empty_tasks()))
        sb = fresh(n)
        traced = a.run(safe_apply_tasks(sb), root=sb.root)
        sb.verify()
        return [r.adopt(traced) for r in runs]

    try:
        load_before = os.getloadavg()
        ans = None if args.no_ansible else Ansible(base)
        tim = None if args.no_ansible else Ansible(base, name="ansible-untraced", traced=False)
        old = Ansible(base, baseline_root, "ansible-baseline") if (ans is not None and baseline_root) else None
        old_tim = (Ansible(base, baseline_root, "ansible-baseline-untraced", traced=False)
                   if (ans is not None and baseline_root) else None)
        if ans is not None:
            tim.run(empty_tasks())  # warm-up, not counted: page cache of ansible and the collection
            for a in (tim, old_tim) if old_tim else (tim,):
                sb = fresh(10)
                a.run(safe_apply_tasks(sb))
            # Ansible's own floor for one module task: ping and command (each one module process on the host).
            pings, trues = [], []
            for _rep in range(args.repeats):
                pings.append(tim.run(ping_tasks()))
                trues.append(tim.run(true_tasks()))
                empties.append(tim.run(empty_tasks()))
            tp, tt = ans.run(ping_tasks()), ans.run(true_tasks())
            empties_traced.append(ans.run(empty_tasks()))
            rows.append(("ansible.builtin.ping", 0, [p.adopt(tp) for p in pings]))
            rows.append(("command: /bin/true", 0, [x.adopt(tt) for x in trues]))
            for n in sizes:
                repeats = args.repeats if n < 5000 else 1
                runs = apply_runs(ans, tim, n, repeats)
                rows.append(("safe_apply, 1 task", n, runs))
                old_runs = apply_runs(old, old_tim, n, repeats) if old is not None else []
                if old_runs:
                    rows.append(("safe_apply, baseline", n, old_runs))
                print("  ... safe_apply %d links: %s s%s" % (n, " ".join("%.2f" % r.wall for r in runs), (
                    "; baseline %s s" % " ".join("%.2f" % r.wall for r in old_runs)) if old_runs else ""),
                    file=sys.stderr)
            if args.loop_links:
                n = args.loop_links
                for label, tasks, items in (("file state=link loop", file_loop_tasks, n),
                                            ("copy backup + file loops", copy_file_loop_tasks, 2 * n)):
                    sb = fresh(n)
                    timed = tim.run(tasks(sb), items, args.loop_budget)
                    empties.append(tim.run(empty_tasks()))
                    sb = fresh(n)  # the traced run only counts: a quarter of the budget, extrapolated like the timed one
                    traced = ans.run(tasks(sb), items, args.loop_budget / 4.0)
                    rows.append((label, n, [timed.adopt(traced)]))
        for kind, label in (("engine", "engine in-process"), ("floor", "group-commit syscall floor")):
            for n in sizes:
                sb = fresh(n)
                m = run_child(kind, sb, base)
                sb.verify()
                rows.append((label, n, [m]))
        load_after = os.getloadavg()
        report(args, rows, empties, empties_traced, placements, load_before, load_after,
               time.perf_counter() - t_start)
    finally:
        if sandboxes != base:
            subprocess.call(["umount", "-l", sandboxes])
        if args.keep:
            print("kept %s" % base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def _med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _fsync_text(runs):
    total, once = _med([r.fsyncs for r in runs]), _med([r.setup_fsyncs for r in runs])
    if total is None:
        return "-"
    return ("%d+%d" % (once, total - once)) if once else "%d" % total


def report(args, rows, empties, empties_traced, placements, load_before, load_after, total):
    empty = _med([e.wall for e in empties])
    print("switchyard.fs bench_scale (issue 14): %d B per target, all targets in one directory, fresh sandbox root per run"
          % args.size)
    print("collection %s" % os.path.realpath(os.path.join(COLLECTIONS_ROOT, "ansible_collections", "switchyard", "fs")))
    if args.baseline:
        print("baseline collection (rows 'safe_apply, baseline', interleaved run by run) %s" % os.path.realpath(args.baseline))
    print("python %s; target python %s; ANSIBLE_PIPELINING off; fs %s; %d CPUs; loadavg(1m) %.2f before, %.2f after"
          % (sys.version.split()[0], TARGET_PYTHON, ba._fstype(args.sandboxes), os.cpu_count() or 0, load_before[0], load_after[0]))
    print("sandboxes: %s" % (
        "under .build on the checkout's filesystem (--root-fs)" if args.root_fs else
        "under .build on the checkout's filesystem: no loop-mounted ext4 (%s)" % args.no_loop if args.no_loop else
        "a fresh loop-mounted ext4 with a journal (mkfs.ext4 defaults; see loop_ext4)"))
    costs = sorted(us for us, _tries in placements if us is not None)
    if costs:
        moved = sum(1 for _us, tries in placements if tries and tries > 1)
        print("sandbox usr/bin: %.0f us per new inode (median of %d sandboxes, max %.0f); %d sandbox(es) rebuilt "
              "elsewhere after landing where a new inode cost over %.0f us" % (
                  statistics.median(costs), len(costs), costs[-1], moved, ba.CREATE_SLOW_US))
    elif args.no_place:
        print("sandboxes kept where they landed (--no-place): a new inode may cost 15 us or 1 ms")
    print()
    hdr = "%-27s %6s %8s %8s %11s %7s %7s %10s %7s %7s %7s" % (
        "variant", "links", "wall s", "x empty", "ms/link", "mod s", "fsyncs", "report B", "B/link", "mod MB", "ctl MB")
    print(hdr)
    print("-" * len(hdr))
    if empties:
        print("%-27s %6s %8.2f %8.2f %11s %7s %7s %10s %7s %7s %7s   (runs: %s; traced %s)" % (
            "empty playbook (1 debug)", 0, empty, 1.0, "-", "-", _fsync_text(empties_traced), "-", "-", "-",
            _mb(_med([e.controller_kb for e in empties_traced])), " ".join("%.2f" % e.wall for e in empties),
            " ".join("%.2f" % e.wall for e in empties_traced)))
    per_link = {}
    summary = {}
    notes = []
    for label, n, runs in rows:
        wall = _med([r.wall for r in runs])
        in_ansible = runs[0].controller_kb is not None or label.startswith(("safe_apply", "file", "copy", "ansible.", "command"))
        above = (wall - empty) if (in_ansible and empty is not None) else wall
        ms = above * 1000.0 / n if n else None
        if label == "safe_apply, 1 task":
            per_link[n] = ms
        rb = _med([r.report_bytes for r in runs])
        star = "*" if any(r.note for r in runs) else ""
        notes.extend(r.note for r in runs if r.note)
        summary[(label, n)] = (wall, runs)
        mod_s = _med([r.module_s for r in runs])
        traced_w = _med([r.traced_wall for r in runs])
        print("%-27s %6d %8.2f %8s %11s %7s %7s %10s %7s %7s %7s%s" % (
            label + star, n, wall, ("%.2f" % (wall / empty)) if (in_ansible and empty) else "-",
            ("%.3f" % ms) if ms is not None else "-", ("%.2f" % mod_s) if mod_s is not None else "-",
            _fsync_text(runs), rb if rb else "-", ("%.0f" % (rb / float(n))) if (rb and n) else "-",
            _mb(_med([r.module_kb for r in runs])), _mb(_med([r.controller_kb for r in runs])),
            ("   (runs: %s%s)" % (" ".join("%.2f" % r.wall for r in runs),
                                  ("; traced %.2f" % traced_w) if traced_w is not None else ""))
            if (len(runs) > 1 or traced_w is not None)
            else ("   (cpu %.2f s)" % runs[0].cpu) if runs[0].cpu is not None else ""))
    print()
    for note in notes:
        print("* %s" % note)
    print("wall s: median of untraced runs (nothing around ansible-playbook or the module); every other column of a "
          "playbook row comes from one more run of the same variant under strace, /usr/bin/time and RSS polling "
          "('traced' in the runs note), which costs more per module process than per debug task.")
    print("ms/link: (wall - empty playbook median) / links for playbook variants; wall / links for in-process ones.")
    print("mod s: wall time of the module process on the host (/usr/bin/time), summed over a loop's items; the rest of "
          "a playbook row's wall is the controller (AnsiballZ, result handling, schema validation, output).")
    print("fsyncs: fsync+fdatasync+syncfs calls of the whole process tree (strace -f); a+b: a of them create "
          "var/lib/switchyard durably on the fresh root (once per host), b are the plan's own; mod MB: peak RSS of the module "
          "process (in-process rows: of the child running it); ctl MB: peak VmHWM of ansible-playbook and its workers.")
    print("report B: bytes of the module's JSON result (safe_apply, loops: summed over items); in-process engine rows: "
          "json.dumps of the report.")
    print()
    # The targets.
    print("issue 14 targets:")

    def verdict(ok):
        return "HOLDS" if ok else "does NOT hold"

    sa = dict((n, summary[("safe_apply, 1 task", n)]) for (l, n) in summary if l == "safe_apply, 1 task")
    if empty and 200 in sa:
        r = sa[200][0] / empty
        print("  200 links <= 1.5x empty playbook: %.2fx -> %s" % (r, verdict(r <= 1.5)))
    if empty and 1000 in sa:
        r = sa[1000][0] / empty
        print("  1,000 links <= 3x empty playbook: %.2fx (%.2f ms/link above empty) -> %s"
              % (r, per_link[1000], verdict(r <= 3.0)))
    if 1000 in per_link and 10000 in per_link:
        r = per_link[10000] / per_link[1000]
        print("  10,000 links per-link cost within 1.25x of 1,000's: %.2f vs %.2f ms/link = %.2fx -> %s"
              % (per_link[10000], per_link[1000], r, verdict(r <= 1.25)))
    big = [(label, r) for (label, n), (_w, runs) in summary.items() if n == 10000 for r in runs]
    if big:
        peak = max(max(r.module_kb or 0, r.controller_kb or 0) for _l, r in big)
        print("  peak RSS of any process < 150 MB at 10,000 links: %s MB -> %s" % (_mb(peak), verdict(peak < 150 * 1024)))
    sizes_b = [(n, _med([r.report_bytes for r in runs])) for n, (_w, runs) in sa.items()]
    sizes_b = [(n, b) for n, b in sizes_b if b]
    if sizes_b:
        worst = max(b / float(n) for n, b in sizes_b)
        print("  report <= 400 bytes/link: %s -> %s (the module's whole result: the report, Ansible's own result keys "
              "and its invocation echo, which gives the links as a count when the report lists each of them; the report "
              "alone: tests/unit/.../test_compact_report.py)"
              % (", ".join("%d B/link at %d" % (b / n, n) for n, b in sorted(sizes_b)), verdict(worst <= 400)))
    if 200 in sa:
        fs = _med([r.fsyncs for r in sa[200][1]])
        e = _med([e.fsyncs for e in empties_traced]) or 0
        once = _med([r.setup_fsyncs for r in sa[200][1]])
        print("  fsyncs for 200 links in one directory <= 10: %s in the whole playbook run on a fresh root (%s in the "
              "empty playbook), %s of them on root, var, var/lib or var/lib/switchyard (the syncfs that makes the new "
              "state directories durable and covers the journal file; on a root that has them the journal file's own "
              "fsync takes its place) -> %s" % (fs, e, once, verdict(fs - e <= 10)))
    print()
    print("benchmark wall time: %.0f s" % total)


if __name__ == "__main__":
    sys.exit(main())
