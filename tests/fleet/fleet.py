"""A fleet of real Debian test hosts on this machine, reached over SSH on loopback.

Each host is an overlayfs copy of a base root filesystem built with ``mmdebstrap``,
running ``sshd`` as PID 1 of its own mount, PID, UTS and IPC namespaces, chrooted into
its merged overlay and listening on ``127.0.0.1:<port>`` only (no network namespace,
no other address: loopback traffic only).

Layout of a work directory::

    WORKDIR/bases/<suite>/rootfs     base root filesystem (read-only lower layer)
    WORKDIR/bases/<suite>.json       how it was built (mirror, packages, seconds, size)
    WORKDIR/key/id_ed25519[.pub]     client key, in every host's /root/.ssh/authorized_keys
    WORKDIR/hosts/fleetNN/{upper,work,merged,console.log}
    WORKDIR/fleet-state.json         pids (with start times) and ports, for ``down`` after a crash
    WORKDIR/inventory.ini            Ansible inventory (groups: one per suite, and ``fleet``)
    WORKDIR/cp/                      ssh ControlPath directory for Ansible

Every mount a host needs (overlay, /proc, /dev, /dev/pts, /run, /sys) is made *inside*
that host's private mount namespace, so it disappears with the namespace when the host's
PID 1 dies; nothing is mounted in the caller's namespace. ``Fleet.stop()`` nevertheless
sweeps and verifies ``/proc/self/mounts`` for anything under the work directory.

Hosts die with their owner: each ``unshare`` gets PR_SET_PDEATHSIG=SIGKILL (unless
started detached by the CLI ``up``) and ``unshare --kill-child`` passes that on to the
namespace's PID 1, whose death makes the kernel kill every process in the namespace.

Usable as a library (``build_base``, ``start_fleet``, ``Fleet``, helpers for tests) and
as a CLI::

    python tests/fleet/fleet.py build  --workdir DIR [--suite bookworm --suite bullseye]
    python tests/fleet/fleet.py up     --workdir DIR --hosts 5 --base-port 22200
    python tests/fleet/fleet.py status --workdir DIR
    python tests/fleet/fleet.py down   --workdir DIR [--purge]

Needs root, util-linux ``unshare``, overlayfs and ``mmdebstrap``. Standard library only.
"""
import argparse
import atexit
import concurrent.futures
import ctypes
import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
JSON_CALLBACK_DIR = os.path.join(REPO, "tests", "integration", "callback_plugins")

DEFAULT_SUITE = "bookworm"
OLD_SUITE = "bullseye"
PACKAGES = ("python3", "openssh-server", "rust-coreutils", "busybox", "e2fsprogs")
# Packages a suite may lack (rust-coreutils is not in bullseye): the base is built
# without them and the omission is recorded in <suite>.json.
OPTIONAL_PACKAGES = ("rust-coreutils",)
DEBIAN_SUITES = ("buster", "bullseye", "bookworm", "trixie", "forky", "sid",
                 "oldoldstable", "oldstable", "stable", "testing", "unstable")
DEFAULT_HOSTS = 5
DEFAULT_BASE_PORT = 22200
SSH_READY_TIMEOUT = 60.0
STATE_FILE = "fleet-state.json"
ENV_MARK = "SWITCHYARD_FLEET_WORKDIR"
MIRROR_ENV = "SWITCHYARD_FLEET_MIRROR"

# Trim documentation from the base: smaller and faster, nothing the tests need.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)


class FleetError(RuntimeError):
    pass


class BaseBuildError(FleetError):
    pass


def log(msg):
    sys.stderr.write("[fleet] %s\n" % msg)
    sys.stderr.flush()


# --------------------------------------------------------------------------- mirror

def _sources_files():
    files = []
    if os.path.isfile("/etc/apt/sources.list"):
        files.append("/etc/apt/sources.list")
    for p in sorted(glob.glob("/etc/apt/sources.list.d/*")):
        # *.disabled, *.save and the like are not read by apt either.
        if p.endswith(".list") or p.endswith(".sources"):
            files.append(p)
    return files


def _parse_sources():
    """Yield (uri, suites, components) of every enabled ``deb`` entry apt reads."""
    for path in _sources_files():
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields, key = {}, None
                for line in stanza.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0] in " \t" and key:
                        fields[key] += " " + line.strip()
                        continue
                    if ":" in line:
                        key, _unused, val = line.partition(":")
                        key = key.strip().lower()
                        fields[key] = val.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split(), fields.get("components", "").split()
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if not line.startswith("deb "):
                    continue
                line = re.sub(r"\[[^\]]*\]", " ", line[4:])
                parts = line.split()
                if len(parts) >= 2:
                    yield parts[0], [parts[1]], parts[2:]


def debian_mirror(suite=DEFAULT_SUITE):
    """The Debian archive this machine's apt already uses (never a hard-coded host).

    ``$SWITCHYARD_FLEET_MIRROR`` overrides. Preference: an entry listing ``suite`` itself,
    then any entry for a plain Debian release (not -security/-updates, not a third party).
    """
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override
    best = None
    for uri, suites, comps in _parse_sources():
        if "main" not in comps or "security" in uri:
            continue
        plain = [s for s in suites if s in DEBIAN_SUITES]
        if not plain:
            continue
        if suite in plain:
            return uri
        best = best or uri
    if best:
        return best
    raise FleetError("no Debian mirror found in apt's sources (set $%s)" % MIRROR_ENV)


# --------------------------------------------------------------------------- base

def _du(path):
    out = subprocess.run(["du", "-sxb", path], stdout=subprocess.PIPE, universal_newlines=True, check=False)
    try:
        return int(out.stdout.split()[0])
    except (ValueError, IndexError):
        return 0


def base_dir(workdir, suite):
    return os.path.join(os.path.abspath(workdir), "bases", suite, "rootfs")


def base_info(workdir, suite):
    path = os.path.join(os.path.abspath(workdir), "bases", suite + ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _mmdebstrap(suite, target, mirror, packages, optional, logpath):
    cmd = ["mmdebstrap", "--variant=apt", "--mode=root", "--format=directory",
           "--include=" + ",".join(packages),
           '--aptopt=Acquire::Check-Valid-Until "false"']
    cmd += ["--dpkgopt=" + o for o in DPKG_EXCLUDES]
    if optional:
        # Packages a suite may lack are installed one by one before apt's lists are
        # cleaned; what the archive does not have is written to .fleet-missing.
        cmd.append("--customize-hook=for p in %s; do chroot \"$1\" apt-get install -y "
                   "--no-install-recommends \"$p\" || echo \"$p\" >> \"$1/.fleet-missing\"; done"
                   % " ".join(shlex.quote(p) for p in optional))
    cmd += [suite, target, mirror]
    with open(logpath, "w") as logf:
        logf.write("$ %s\n" % " ".join(shlex.quote(c) for c in cmd))
        logf.flush()
        rc = subprocess.call(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    with open(logpath, errors="replace") as logf:
        return rc, logf.read()


def build_base(workdir, suite=DEFAULT_SUITE, packages=PACKAGES, mirror=None):
    """Build ``WORKDIR/bases/<suite>/rootfs`` with mmdebstrap --variant=apt; return its path.

    An existing complete base in the same work directory is returned as is (one build per
    test session); nothing is shared across work directories. Packages listed in
    OPTIONAL_PACKAGES that the suite lacks are left out and recorded in <suite>.json
    ("missing"). Raises BaseBuildError with the reason when the mirror does not serve the
    suite.
    """
    if not shutil.which("mmdebstrap"):
        raise BaseBuildError("mmdebstrap is not installed (apt-get install -y mmdebstrap)")
    workdir = os.path.abspath(workdir)
    final = base_dir(workdir, suite)
    info_path = os.path.join(workdir, "bases", suite + ".json")
    if os.path.isdir(final) and os.path.isfile(info_path):
        return final
    mirror = mirror or debian_mirror(suite)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = final + ".tmp-%d" % os.getpid()
    logpath = os.path.join(workdir, "bases", suite + ".log")
    required = [p for p in packages if p not in OPTIONAL_PACKAGES]
    optional = [p for p in packages if p in OPTIONAL_PACKAGES]
    t0 = time.monotonic()
    _rmtree(tmp)
    rc, out = _mmdebstrap(suite, tmp, mirror, required, optional, logpath)
    if rc != 0:
        _rmtree(tmp)  # mmdebstrap leaves a partial tree behind on failure
        errs = [l for l in out.splitlines() if l.startswith(("E:", "W: Failed", "Err:"))]
        raise BaseBuildError("mmdebstrap %s from the apt mirror failed (rc=%d): %s" % (
            suite, rc, " | ".join(errs[-4:]) or out[-500:]))
    missing = []
    marker = os.path.join(tmp, ".fleet-missing")
    if os.path.exists(marker):
        with open(marker) as f:
            missing = f.read().split()
        os.unlink(marker)
    packages = [p for p in packages if p not in missing]
    seconds = time.monotonic() - t0
    # Per-host host keys are made at host start (ssh-keygen -A); none shared via the base.
    for key in glob.glob(os.path.join(tmp, "etc/ssh/ssh_host_*")):
        os.unlink(key)
    pys = sorted(os.path.basename(p) for p in glob.glob(os.path.join(tmp, "usr/bin/python3.*"))
                 if re.match(r"python3\.\d+$", os.path.basename(p)))
    os.rename(tmp, final)
    info = {
        "suite": suite, "mirror": mirror, "packages": packages, "missing": missing,
        "seconds": round(seconds, 1), "bytes": _du(final), "python": pys[-1] if pys else None,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(info_path, "w") as f:
        json.dump(info, f, indent=2)
    log("base %s built in %.1fs, %d MB, %s%s" % (
        suite, seconds, info["bytes"] // 2**20, info["python"],
        (" (without %s)" % ", ".join(missing)) if missing else ""))
    return final


def _rmtree(path):
    if os.path.lexists(path):
        if mounts_under(path):
            raise FleetError("refusing to remove %s: mounts below it: %s" % (path, mounts_under(path)))
        shutil.rmtree(path)


# --------------------------------------------------------------------------- procfs

def _unescape_mount(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts_under(path, mounts_file="/proc/self/mounts"):
    """Mount points at or below ``path`` in the given mount table, deepest first."""
    path = os.path.realpath(path).rstrip("/")
    found = []
    try:
        with open(mounts_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) > 1:
                    mp = _unescape_mount(parts[1])
                    if mp == path or mp.startswith(path + "/"):
                        found.append(mp)
    except OSError:
        return []
    return sorted(set(found), key=lambda m: (-m.count("/"), m))


def _proc_stat(pid):
    """(ppid, starttime) of a pid, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    rest = data.rsplit(")", 1)[1].split()
    return int(rest[1]), int(rest[19])


def _alive(pid, start=None):
    st = _proc_stat(pid)
    if st is None:
        return False
    if start is not None and st[1] != start:
        return False  # pid reused by an unrelated process
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def _all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(pid):
    """pid and all its descendants, from a scan of /proc (no CONFIG_PROC_CHILDREN needed)."""
    children = {}
    for p in _all_pids():
        st = _proc_stat(p)
        if st:
            children.setdefault(st[0], []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def fleet_processes(workdir):
    """Live processes belonging to a fleet in ``workdir``: chrooted below it, or marked."""
    workdir = os.path.realpath(workdir)
    mark = ("%s=" % ENV_MARK).encode()
    found = []
    for p in _all_pids():
        if p == os.getpid():
            continue
        try:
            root = os.readlink("/proc/%d/root" % p)
        except OSError:
            root = ""
        hit = root == workdir or root.startswith(workdir + "/")
        if not hit:
            # ssh ControlMaster processes of Ansible runs against this fleet
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    hit = f.read().startswith(("ssh: %s/cp/" % workdir).encode())
            except OSError:
                pass
        if not hit:
            try:
                with open("/proc/%d/environ" % p, "rb") as f:
                    for var in f.read().split(b"\0"):
                        if var.startswith(mark):
                            val = var[len(mark):].decode(errors="replace")
                            hit = hit or val == workdir or val.startswith(workdir + "/")
            except OSError:
                pass
        if hit and _alive(p):
            found.append(p)
    return found


def _kill_pids(pids, grace=5.0):
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; return pids still alive."""
    pids = [p for p in pids if _alive(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if not pids:
                return []
            time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def unmount_all(workdir):
    """Unmount everything under ``workdir`` in this namespace (lazy if busy); return leftovers."""
    for _unused in range(3):
        mps = mounts_under(workdir)
        if not mps:
            return []
        for mp in mps:
            if subprocess.call(["umount", mp], stderr=subprocess.DEVNULL) != 0:
                subprocess.call(["umount", "-l", mp], stderr=subprocess.DEVNULL)
    return mounts_under(workdir)


# --------------------------------------------------------------------------- ports

def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_ports(base_port, n, avoid=()):
    ports, p = [], base_port
    while len(ports) < n:
        if p > 65535:
            raise FleetError("no %d free loopback ports from %d" % (n, base_port))
        if p not in avoid and port_free(p):
            ports.append(p)
        p += 1
    return ports


def wait_ssh(port, timeout=SSH_READY_TIMEOUT, proc=None):
    """Wait until 127.0.0.1:port accepts a connection and sends an SSH banner."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise FleetError("host process exited (rc=%s) before sshd listened" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                banner = s.recv(64)
                if banner.startswith(b"SSH-"):
                    return banner.decode("ascii", "replace").strip()
                last = "unexpected banner %r" % banner
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise FleetError("sshd on 127.0.0.1:%d not ready after %.0fs: %s" % (port, timeout, last))


# --------------------------------------------------------------------------- hosts

# Runs under the controller's /bin/sh as PID 1 of the new namespaces, before chroot.
# Every mount is made here, in the host's private mount namespace.
HOST_SCRIPT = r"""
set -eu
M=$FLEET_MERGED
mount -t overlay overlay -o "lowerdir=$FLEET_LOWER,upperdir=$FLEET_UPPER,workdir=$FLEET_WORK" "$M"
mount -t proc -o nosuid,nodev,noexec proc "$M/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$M/sys"
mount -t tmpfs -o mode=755,nosuid,size=8m fleetdev "$M/dev"
mknod -m 666 "$M/dev/null" c 1 3
mknod -m 666 "$M/dev/zero" c 1 5
mknod -m 666 "$M/dev/full" c 1 7
mknod -m 666 "$M/dev/random" c 1 8
mknod -m 666 "$M/dev/urandom" c 1 9
mknod -m 666 "$M/dev/tty" c 5 0
mkdir -m 755 "$M/dev/pts"
mkdir -m 1777 "$M/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$M/dev/pts"
ln -s pts/ptmx "$M/dev/ptmx"
ln -s /proc/self/fd "$M/dev/fd"
ln -s /proc/self/fd/0 "$M/dev/stdin"
ln -s /proc/self/fd/1 "$M/dev/stdout"
ln -s /proc/self/fd/2 "$M/dev/stderr"
mount -t tmpfs -o mode=755,nosuid,nodev,size=64m fleetrun "$M/run"
mkdir -m 1777 "$M/run/lock"
mkdir -m 755 "$M/run/sshd"
echo "$FLEET_NAME" > /proc/sys/kernel/hostname
echo "$FLEET_NAME" > "$M/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$FLEET_NAME" > "$M/etc/hosts"
mkdir -p -m 700 "$M/root/.ssh"
cat "$FLEET_PUBKEY" > "$M/root/.ssh/authorized_keys"
chmod 600 "$M/root/.ssh/authorized_keys"
exec chroot "$M" /bin/sh -c '
  ssh-keygen -A >/dev/null
  exec /usr/sbin/sshd -D -e -p "$0" \
    -o ListenAddress=127.0.0.1 \
    -o PermitRootLogin=prohibit-password \
    -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
    -o UsePAM=no -o UseDNS=no -o PrintMotd=no -o MaxStartups=100:30:200 \
    -o MaxSessions=100 -o AcceptEnv=LANG' "$FLEET_PORT"
"""


def _set_pdeathsig():
    """preexec_fn: die with the parent (PR_SET_PDEATHSIG = 1)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - best effort
        pass


class Host(object):
    def __init__(self, fleet, index, name, suite, lower, port):
        self.fleet = fleet
        self.index = index
        self.name = name
        self.suite = suite
        self.lower = lower
        self.port = port
        self.dir = os.path.join(fleet.workdir, "hosts", name)
        self.upper = os.path.join(self.dir, "upper")
        self.work = os.path.join(self.dir, "work")
        self.merged = os.path.join(self.dir, "merged")
        self.console = os.path.join(self.dir, "console.log")
        self.proc = None          # Popen of unshare (None when loaded from a record)
        self.unshare_pid = None
        self.unshare_start = None
        self.init_pid = None      # namespace PID 1 (sh -> chroot -> sshd), outer pid
        self.init_start = None
        self.banner = None

    # -- lifecycle
    def launch(self, detach=False):
        for d in (self.upper, self.work, self.merged):
            os.makedirs(d, exist_ok=True)
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            ENV_MARK: self.fleet.workdir,
            "FLEET_NAME": self.name, "FLEET_PORT": str(self.port),
            "FLEET_LOWER": self.lower, "FLEET_UPPER": self.upper, "FLEET_WORK": self.work,
            "FLEET_MERGED": self.merged, "FLEET_PUBKEY": self.fleet.key + ".pub",
        }
        cmd = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
               "--uts", "--ipc", "--kill-child=SIGKILL", "--", "/bin/sh", "-c", HOST_SCRIPT]
        logf = open(self.console, "ab")
        try:
            self.proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                close_fds=True, start_new_session=True,
                preexec_fn=None if detach else _set_pdeathsig)
        finally:
            logf.close()
        self.unshare_pid = self.proc.pid
        st = _proc_stat(self.unshare_pid)
        self.unshare_start = st[1] if st else None

    def find_init(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in descendants(self.unshare_pid)[1:]:
                st = _proc_stat(p)
                if st and st[0] == self.unshare_pid:
                    self.init_pid, self.init_start = p, st[1]
                    return p
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise FleetError("%s: no namespace init under unshare pid %s: %s" % (
            self.name, self.unshare_pid, self.console_tail()))

    def wait_ready(self, timeout=SSH_READY_TIMEOUT):
        try:
            self.banner = wait_ssh(self.port, timeout, self.proc)
        except FleetError as e:
            raise FleetError("%s: %s; console: %s" % (self.name, e, self.console_tail()))
        return self.banner

    def console_tail(self, n=1500):
        try:
            with open(self.console, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def alive(self):
        return bool(self.init_pid) and _alive(self.init_pid, self.init_start)

    def record(self):
        return {k: getattr(self, k) for k in (
            "index", "name", "suite", "lower", "port", "unshare_pid", "unshare_start",
            "init_pid", "init_start")}

    # -- access
    @property
    def root(self):
        """The host's root as seen from the controller (/proc/PID/root).

        Fine for reading regular files and directories; absolute symlinks met on the way
        resolve against the controller's root, so use ssh() for anything link-related.
        """
        return "/proc/%d/root" % self.init_pid

    def ssh_argv(self, command):
        return ["ssh", "-i", self.fleet.key, "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
                "root@127.0.0.1", command]

    def ssh(self, command, check=True, timeout=60, input=None):
        """Run a shell command on the host over SSH; returns CompletedProcess (text)."""
        res = subprocess.run(self.ssh_argv(command), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True,
                             timeout=timeout, input=input,
                             stdin=None if input is not None else subprocess.DEVNULL, check=False)
        if check and res.returncode != 0:
            raise FleetError("%s: ssh %r failed rc=%d: %s" % (
                self.name, command, res.returncode, res.stderr.strip()))
        return res

    def __repr__(self):
        return "<Host %s %s 127.0.0.1:%s pid=%s>" % (self.name, self.suite, self.port, self.init_pid)


_FILE_INFO_PY = r"""
import hashlib, json, os, stat, sys
out = {}
for p in json.loads(sys.argv[1]):
    try:
        st = os.lstat(p)
    except OSError:
        out[p] = None
        continue
    d = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
         "link": os.readlink(p) if stat.S_ISLNK(st.st_mode) else None, "sha256": None}
    try:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        d["sha256"] = h.hexdigest()
    except OSError:
        pass
    out[p] = d
print(json.dumps(out))
"""


class Fleet(object):
    def __init__(self, workdir):
        self.workdir = os.path.realpath(workdir)
        self.key = os.path.join(self.workdir, "key", "id_ed25519")
        self.hosts = []
        self.state_path = os.path.join(self.workdir, STATE_FILE)
        self.inventory_path = os.path.join(self.workdir, "inventory.ini")
        self.detached = False
        self.stopped = False
        self.timings = {}
        self._lock = threading.Lock()
        self._prev_handlers = {}

    # -- records
    def save_state(self):
        data = {"workdir": self.workdir, "key": self.key, "detached": self.detached,
                "owner_pid": os.getpid(), "hosts": [h.record() for h in self.hosts]}
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.state_path)

    @classmethod
    def load(cls, workdir):
        fleet = cls(workdir)
        try:
            with open(fleet.state_path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return fleet
        fleet.detached = data.get("detached", False)
        for r in data.get("hosts", []):
            h = Host(fleet, r["index"], r["name"], r["suite"], r["lower"], r["port"])
            for k in ("unshare_pid", "unshare_start", "init_pid", "init_start"):
                setattr(h, k, r.get(k))
            fleet.hosts.append(h)
        return fleet

    # -- queries
    def by_suite(self, suite):
        return [h for h in self.hosts if h.suite == suite]

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.hosts[key]
        for h in self.hosts:
            if h.name == key:
                return h
        raise KeyError(key)

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self):
        return len(self.hosts)

    # -- inventory
    def inventory(self, path=None):
        """Write an INI inventory: one group per suite, all in group ``fleet``."""
        path = path or self.inventory_path
        common = ("ansible_host=127.0.0.1 ansible_port=%d ansible_user=root "
                  "ansible_ssh_private_key_file=%s ansible_python_interpreter=/usr/bin/python3 "
                  "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
                  "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'")
        suites = []
        for h in self.hosts:
            if h.suite not in suites:
                suites.append(h.suite)
        lines = []
        for s in suites:
            lines.append("[%s]" % s)
            for h in self.by_suite(s):
                lines.append("%s %s" % (h.name, common % (h.port, self.key)))
            lines.append("")
        lines.append("[fleet:children]")
        lines.extend(suites)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    # -- ansible helpers
    def ansible_env(self, extra=None):
        env = dict(os.environ)
        env.update({
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_FORKS": str(max(5, len(self.hosts))),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(self.workdir, "cp"),
            "ANSIBLE_LOCAL_TEMP": os.path.join(self.workdir, "ansible-tmp"),
            "ANSIBLE_INVENTORY": self.inventory_path,
        })
        env.pop(ENV_MARK, None)
        if extra:
            env.update(extra)
        return env

    def ansible(self, module, args="", pattern="all", extra_args=(), env=None, timeout=600):
        """``ansible PATTERN -m MODULE -a ARGS`` against the fleet inventory."""
        if not os.path.exists(self.inventory_path):
            self.inventory()
        cmd = [ansible_bin("ansible"), pattern, "-i", self.inventory_path, "-m", module]
        if args:
            cmd += ["-a", args]
        cmd += list(extra_args)
        return subprocess.run(cmd, env=self.ansible_env(env), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)

    def playbook(self, playbook, extra_vars=None, limit=None, check=False, diff=False,
                 json_output=False, extra_args=(), env=None, timeout=1800):
        """Run ansible-playbook against the fleet; CompletedProcess with ``.recap``
        ({host: {ok, changed, unreachable, failed, skipped, rescued, ignored}}, from the
        default callback's PLAY RECAP) and, with json_output, ``.json``: the whole run as
        one document ({plays: [{play, tasks: [{task, hosts: {host: result}}]}], stats}) from
        the project's test-only ``json_results`` stdout callback (ansible-core 2.19 ships
        no ``json`` callback); ``.recap`` then comes from its stats."""
        if not os.path.exists(self.inventory_path):
            self.inventory()
        cmd = [ansible_bin("ansible-playbook"), "-i", self.inventory_path, playbook]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if limit:
            cmd += ["--limit", limit]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        cmd += list(extra_args)
        e = dict(env or {})
        if json_output:
            e.setdefault("ANSIBLE_CALLBACK_PLUGINS", JSON_CALLBACK_DIR)
            e.setdefault("ANSIBLE_STDOUT_CALLBACK", "json_results")
        res = subprocess.run(cmd, env=self.ansible_env(e), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, check=False)
        res.json = None
        res.recap = parse_recap(res.stdout)
        if json_output:
            try:
                res.json = json.loads(res.stdout[res.stdout.index("{"):])
            except ValueError:
                pass
            else:
                # same keys as the PLAY RECAP (the stats call it "failures")
                res.recap = {h: {("failed" if k == "failures" else k): v for k, v in s.items()}
                             for h, s in res.json.get("stats", {}).items()}
        return res

    # -- per-host helpers (parallel over SSH)
    def run_all(self, command, check=True, hosts=None, timeout=60):
        """Run a shell command on every host over SSH; {name: CompletedProcess}."""
        hosts = list(hosts or self.hosts)
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(hosts) or 1)) as ex:
            futs = {h.name: ex.submit(h.ssh, command, check, timeout) for h in hosts}
            return {n: f.result() for n, f in futs.items()}

    def run_each(self, commands, check=True, timeout=60):
        """Run a (different) shell command per host, in parallel: {name: command} ->
        {name: CompletedProcess}."""
        hosts = [self[name] for name in commands]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(hosts) or 1)) as ex:
            futs = {h.name: ex.submit(h.ssh, commands[h.name], check, timeout) for h in hosts}
            return {n: f.result() for n, f in futs.items()}

    def file_info(self, paths, hosts=None):
        """{host: {path: None | {mode, uid, gid, link, sha256}}} (lstat, sha256 follows links)."""
        if isinstance(paths, str):
            paths = [paths]
        cmd = "/usr/bin/python3 -c %s %s" % (shlex.quote(_FILE_INFO_PY), shlex.quote(json.dumps(list(paths))))
        res = self.run_all(cmd, hosts=hosts)
        return {n: json.loads(r.stdout) for n, r in res.items()}

    def sha256(self, path, hosts=None):
        """{host: sha256 hex of path's content (links followed) or None if absent}."""
        info = self.file_info([path], hosts=hosts)
        return {n: (d[path] or {}).get("sha256") for n, d in info.items()}

    # -- teardown
    def stop(self, grace=5.0, verify=True):
        """Kill every host's process tree by pid, unmount, verify; idempotent."""
        with self._lock:
            t0 = time.monotonic()
            pids = []
            for h in self.hosts:
                for pid, start in ((h.init_pid, h.init_start), (h.unshare_pid, h.unshare_start)):
                    if pid and _alive(pid, start):
                        pids.extend(p for p in descendants(pid) if p not in pids)
            # namespace inits first: their death takes every process of the namespace along
            inits = [h.init_pid for h in self.hosts if h.init_pid in pids]
            rest = [p for p in pids if p not in inits]
            left = _kill_pids(inits + rest, grace)
            for h in self.hosts:
                if h.proc is not None:
                    try:
                        h.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        h.proc.kill()
                        h.proc.wait(timeout=5)
            # anything else that still belongs to this work directory
            left += _kill_pids(fleet_processes(self.workdir), 1.0)
            mounts = unmount_all(self.workdir)
            self.stopped = True
            self.timings["stop"] = time.monotonic() - t0
            self._unregister()
            if verify:
                procs = fleet_processes(self.workdir)
                if procs or mounts or [p for p in left if _alive(p)]:
                    raise FleetError("teardown left processes %s and mounts %s" % (procs, mounts))
            try:
                os.unlink(self.state_path)
            except OSError:
                pass

    def remove(self):
        """stop() and delete the work directory (refuses if anything is still mounted)."""
        self.stop()
        _rmtree(self.workdir)

    # -- registration
    def _register(self):
        atexit.register(self._atexit)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                self._prev_handlers[sig] = signal.signal(sig, self._on_signal)
            except (ValueError, OSError):
                pass

    def _unregister(self):
        try:
            atexit.unregister(self._atexit)
        except Exception:
            pass
        for sig, prev in list(self._prev_handlers.items()):
            try:
                if signal.getsignal(sig) == self._on_signal:
                    signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._prev_handlers.clear()

    def _atexit(self):
        if not self.stopped:
            try:
                self.stop(verify=False)
            except Exception as e:  # pragma: no cover
                log("atexit teardown: %s" % e)

    def _on_signal(self, signum, frame):
        prev = self._prev_handlers.get(signum)
        try:
            self.stop(verify=False)
        finally:
            if callable(prev):
                prev(signum, frame)
            else:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)


def parse_recap(stdout):
    """{host: {ok: n, changed: n, ...}} from the PLAY RECAP of the default callback."""
    recap, on = {}, False
    for line in stdout.splitlines():
        if line.startswith("PLAY RECAP"):
            on = True
            continue
        if on:
            m = re.match(r"^(\S+)\s+:\s+(.*)$", line)
            if not m:
                continue
            recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return recap


def parse_adhoc(stdout):
    """{host: (STATUS, result dict)} from the default callback's ad-hoc output."""
    out, lines, i = {}, stdout.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\S+) \| ([A-Z]+)\b.*=> \{$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j] != "}":
            j += 1
        try:
            body = json.loads("{" + "\n".join(lines[i + 1:j + 1]))
        except ValueError:
            body = {}
        out[m.group(1)] = (m.group(2), body)
        i = j + 1
    return out


def ansible_bin(name):
    for cand in (os.path.join(os.path.dirname(sys.executable), name),
                 os.path.join(REPO, ".venv", "bin", name)):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which(name)
    if not found:
        raise FleetError("%s not found (expected in %s/.venv/bin)" % (name, REPO))
    return found


def ensure_key(workdir):
    key = os.path.join(os.path.abspath(workdir), "key", "id_ed25519")
    if not os.path.exists(key):
        os.makedirs(os.path.dirname(key), mode=0o700, exist_ok=True)
        subprocess.check_call(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                               "switchyard-fleet", "-f", key], stdin=subprocess.DEVNULL)
    return key


def _normalize_bases(bases):
    if isinstance(bases, str):
        return [(os.path.basename(os.path.dirname(bases)) or DEFAULT_SUITE, bases)]
    if isinstance(bases, dict):
        return list(bases.items())
    return list(bases)


def default_layout(n, suites, primary=DEFAULT_SUITE):
    """Host suites: the first hosts get one each of the non-primary suites, rest primary."""
    if primary not in suites:
        primary = suites[0]
    others = [s for s in suites if s != primary]
    layout = others[:max(0, n - 1)] if n > 1 else []
    return layout + [primary] * (n - len(layout))


def start_fleet(workdir, n=DEFAULT_HOSTS, base_port=DEFAULT_BASE_PORT, bases=None,
                layout=None, detach=False, register=True, timeout=SSH_READY_TIMEOUT):
    """Start ``n`` hosts as overlayfs copies of ``bases`` and wait for every sshd.

    bases: a rootfs path, {suite: path}, or [(suite, path)]; default: every base built
    in WORKDIR/bases. layout: optional list of suites per host (see default_layout).
    detach: survive the calling process (CLI ``up``); otherwise hosts die with it.
    """
    if os.geteuid() != 0:
        raise FleetError("the fleet needs root (mount, unshare, chroot)")
    workdir = os.path.realpath(workdir)
    if bases is None:
        bases = {}
        for d in sorted(glob.glob(os.path.join(workdir, "bases", "*", "rootfs"))):
            bases[os.path.basename(os.path.dirname(d))] = d
    bases = dict(_normalize_bases(bases))
    if not bases:
        raise FleetError("no base root filesystem: run build first")
    layout = list(layout or default_layout(n, list(bases)))
    if len(layout) != n:
        raise FleetError("layout names %d hosts, n=%d" % (len(layout), n))
    old = Fleet.load(workdir)
    if any(h.alive() for h in old.hosts):
        raise FleetError("a fleet is already running in %s (run down first)" % workdir)
    os.makedirs(os.path.join(workdir, "cp"), exist_ok=True)
    os.makedirs(os.path.join(workdir, "ansible-tmp"), exist_ok=True)
    ensure_key(workdir)
    fleet = Fleet(workdir)
    fleet.detached = detach
    if register and not detach:
        fleet._register()
    t0 = time.monotonic()
    width = max(2, len(str(n - 1)))
    ports = pick_ports(base_port, n)
    try:
        for i in range(n):
            suite = layout[i]
            h = Host(fleet, i, "fleet%0*d" % (width, i), suite, os.path.realpath(bases[suite]), ports[i])
            if os.path.exists(h.dir):
                _rmtree(h.dir)  # a fresh upper layer every start
            fleet.hosts.append(h)
            h.launch(detach=detach)
            fleet.save_state()
        for h in fleet.hosts:
            h.find_init()
        fleet.save_state()
        for h in fleet.hosts:
            try:
                h.wait_ready(timeout)
            except FleetError:
                if h.proc.poll() is None or not port_free(h.port):
                    raise
                # lost a race for the port: take another one once
                h.port = pick_ports(h.port + 1, 1, avoid=[x.port for x in fleet.hosts])[0]
                _kill_pids(descendants(h.unshare_pid))
                h.proc.wait()
                _rmtree(h.dir)
                h.launch(detach=detach)
                h.find_init()
                fleet.save_state()
                h.wait_ready(timeout)
    except BaseException:
        try:
            fleet.stop(verify=False)
        finally:
            raise
    fleet.timings["start"] = time.monotonic() - t0
    fleet.inventory()
    fleet.save_state()
    return fleet


# --------------------------------------------------------------------------- CLI

def _cmd_build(a):
    suites = a.suite or [DEFAULT_SUITE]
    rc = 0
    for s in suites:
        t0 = time.monotonic()
        try:
            path = build_base(a.workdir, s)
            info = base_info(a.workdir, s) or {}
            print("%s: %s (%.1fs, %s MB, %s, missing=%s)" % (
                s, path, time.monotonic() - t0, info.get("bytes", 0) // 2**20,
                info.get("python"), info.get("missing")))
        except BaseBuildError as e:
            print("%s: NOT BUILT: %s" % (s, e))
            rc = 1 if s == DEFAULT_SUITE else rc
    return rc


def _cmd_up(a):
    bases = None
    if a.base:
        bases = {}
        for spec in a.base:
            suite, _unused, path = spec.partition("=")
            bases[suite] = path
    fleet = start_fleet(a.workdir, a.hosts, a.base_port, bases=bases, detach=not a.foreground)
    print("%d hosts up in %.2fs; inventory: %s" % (len(fleet), fleet.timings["start"], fleet.inventory_path))
    for h in fleet:
        print("  %s %-9s 127.0.0.1:%d pid=%d %s" % (h.name, h.suite, h.port, h.init_pid, h.banner))
    if a.foreground:
        print("foreground: Ctrl-C or SIGTERM tears down")
        try:
            while all(h.alive() for h in fleet):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        t0 = time.monotonic()
        fleet.stop()
        print("down in %.2fs" % (time.monotonic() - t0))
    return 0


def _cmd_down(a):
    fleet = Fleet.load(a.workdir)
    t0 = time.monotonic()
    fleet.stop()
    print("down in %.2fs: no process, no mount left under %s" % (time.monotonic() - t0, fleet.workdir))
    if a.purge:
        _rmtree(fleet.workdir)
        print("removed %s" % fleet.workdir)
    return 0


def _cmd_status(a):
    fleet = Fleet.load(a.workdir)
    if not fleet.hosts:
        print("no fleet recorded in %s" % fleet.workdir)
    up = 0
    for h in fleet:
        alive = h.alive()
        banner = ""
        if alive:
            try:
                banner = wait_ssh(h.port, timeout=2)
            except FleetError as e:
                banner = "NO SSH: %s" % e
        up += alive
        print("%s %-9s 127.0.0.1:%d pid=%s %s %s" % (
            h.name, h.suite, h.port, h.init_pid, "up" if alive else "DOWN", banner))
    procs = fleet_processes(fleet.workdir)
    print("%d/%d hosts up; %d fleet processes; mounts under workdir: %s" % (
        up, len(fleet.hosts), len(procs), mounts_under(fleet.workdir) or "none"))
    return 0 if up == len(fleet.hosts) else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = p.add_subparsers(dest="cmd")
    sub.required = True
    for name in ("build", "up", "down", "status"):
        s = sub.add_parser(name)
        s.add_argument("--workdir", required=True)
        s.add_argument("--hosts", type=int, default=DEFAULT_HOSTS)
        s.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
        if name == "build":
            s.add_argument("--suite", action="append",
                           help="bookworm (default); repeat, e.g. --suite bookworm --suite bullseye")
        if name == "up":
            s.add_argument("--base", action="append", metavar="SUITE=ROOTFS",
                           help="base to use (default: every base in WORKDIR/bases)")
            s.add_argument("--foreground", action="store_true",
                           help="stay attached; tear down on Ctrl-C/SIGTERM/exit")
        if name == "down":
            s.add_argument("--purge", action="store_true", help="also delete the work directory")
    a = p.parse_args(argv)
    try:
        return {"build": _cmd_build, "up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[a.cmd](a)
    except FleetError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
