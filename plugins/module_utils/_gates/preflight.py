# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight gates (SPEC section 6): one row per action, STOPs name the path and the knob. Private to this collection.

Every STOP message names the row's path and says `policy.<knob>` for the knob that changes it;
docs/preflight.md lists each gate, its message and its knob (a test checks both)."""

from __future__ import absolute_import, division, print_function

import errno
import os
import re
import shutil
import stat
import subprocess

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._probes import immutable as _immutable
from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts
from ansible_collections.switchyard.fs.plugins.module_utils._fs import preservation as pres
from ansible_collections.switchyard.fs.plugins.module_utils._probes import preservation as ppres
from ansible_collections.switchyard.fs.plugins.module_utils._fs.backup import verify_backup
from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError, SwitchyardError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import MAX_SYMLINK_HOPS, components, open_dir_beneath

RESCUE_TOOLS = ("cp", "mv", "rm", "ln", "stat", "readlink", "sha256sum", "sort", "date", "ls")
HOME_DIRS = ("/home", "/root")
# Top-level directories a merged-/usr root links into /usr; dpkg may know a file under either name.
MERGED_USR_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_PATH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
_DPKG_GLOB = re.compile(r"([*?\[\]\\])")


def _under(path, prefixes):
    for p in prefixes:
        p = p.rstrip("/") or "/"
        if p == "/" or path == p or path.startswith(p + "/"):
            return p
    return None


def _join(parent_rel, name):
    return (parent_rel.rstrip("/") + "/" + name) if parent_rel not in ("", "/") else "/" + name


class Row(object):
    """One preflight row.  stop()/warn()/note() record findings; hazard() honours a stop|warn|allow knob value."""

    def __init__(self, action_id, path, op):
        self.data = {"action_id": action_id, "path": path, "op": op, "policy_ok": True, "notes": [],
                     "stops": [], "warnings": []}

    def stop(self, msg, knob, error_id="E_POLICY"):
        self.data["policy_ok"] = False
        self.data["stops"].append({"msg": msg, "knob": knob, "error_id": error_id})

    def warn(self, msg):
        self.data["warnings"].append(msg)

    def note(self, msg):
        self.data["notes"].append(msg)

    def hazard(self, level, msg, knob, error_id="E_POLICY"):
        """stop: a STOP; warn: a warning; allow: silent (only a note in the row, no warning)."""
        if level == "stop":
            self.stop("%s (set policy.%s: warn or allow to proceed)" % (msg, knob), knob, error_id)
        elif level == "warn":
            self.warn(msg)
        else:
            self.note(msg)


class PreflightContext(object):
    """Per-run caches: one preservation probe per directory."""

    def __init__(self, root, root_fd, policy):
        self.root = root
        self.root_fd = root_fd
        self.policy = policy
        self._pres = {}

    def preservation_probe(self, dir_fd):
        st = os.fstat(dir_fd)
        key = (st.st_dev, st.st_ino)
        if key not in self._pres:
            self._pres[key] = ppres.probe_capabilities(dir_fd, self.policy.preservation_tier)
        return self._pres[key]


# -- mounts ------------------------------------------------------------------------------------

def mount_info(ms):
    return {"mountpoint": ms.get("mountpoint"), "fstype": ms.get("fstype"), "rw": ms.get("rw"),
            "exec": ms.get("exec"), "method": ms.get("method")}


def mount_verdict(row, subject, ms, need_rw, need_exec, knob="override_preflight", fix=None):
    """STOP when a needed rw/exec property is missing or unknown (unknown fails closed).
    `subject` names the thing and the row's path, e.g. "the target directory of /usr/bin/ls"."""
    fix = fix or "only policy.%s: true skips this gate" % knob
    where = "%s, %s" % (ms.get("mountpoint"), ms.get("fstype"))
    if not ms.get("known"):
        row.stop("%s: its mount cannot be determined (statvfs and /proc/self/mounts both failed); failing closed (%s)"
                 % (subject, fix), knob)
    else:
        if need_rw and not ms.get("rw"):
            row.stop("%s is on a read-only mount (%s); remount it read-write (%s)" % (subject, where, fix), knob)
        if need_exec and not ms.get("exec"):
            row.stop("%s is on a noexec mount (%s); remount it exec (%s)" % (subject, where, fix), knob)
    return mount_info(ms)


def mount_gate(row, subject, fd_or_path, need_rw, need_exec, knob="override_preflight", fix=None):
    return mount_verdict(row, subject, _mounts.mount_status(fd_or_path), need_rw, need_exec, knob, fix)


def probe_extra_mounts(root_fd, paths):
    """[{path, present, mount status}] for policy.extra_mount_checks, each resolved inside root."""
    out = []
    for rel in paths:
        entry = {"path": rel, "present": False, "status": None, "detail": None}
        try:
            fd = _open_path_beneath(root_fd, rel)
        except (PolicyError, OSError) as e:
            entry["detail"] = getattr(e, "msg", None) or str(e)
            out.append(entry)
            continue
        if fd is None:
            entry["detail"] = "not present inside root"
        else:
            try:
                entry["present"] = True
                entry["status"] = _mounts.mount_status(fd)
            finally:
                os.close(fd)
        out.append(entry)
    return out


def extra_mount_gate(row, extra):
    """Every present extra_mount_checks path must be on a rw, exec mount; absent ones are noted, not failed."""
    infos = []
    for e in extra:
        if not e["present"]:
            row.note("extra_mount_checks path %s skipped: %s" % (e["path"], e["detail"]))
            continue
        info = mount_verdict(row, "extra_mount_checks path %s (checked for %s)" % (e["path"], row.data["path"]),
                             e["status"], True, True, "extra_mount_checks",
                             "or remove it from policy.extra_mount_checks")
        info["path"] = e["path"]
        infos.append(info)
    row.data["extra_mounts"] = infos


def _open_path_beneath(root_fd, rel):
    """An O_PATH fd on in-root `rel` (symlinks followed inside root), or None when it does not exist."""
    parts = components(rel)
    if not parts:
        return os.dup(root_fd)
    for _hop in range(MAX_SYMLINK_HOPS):
        dfd, drel = open_dir_beneath(root_fd, parts[:-1], "policy.extra_mount_checks", rel)
        try:
            name = parts[-1]
            st = fs.lstat_at(dfd, name)
            if st is None:
                return None
            if not stat.S_ISLNK(st.st_mode):
                return os.open(name, _PATH_FLAGS, dir_fd=dfd)
            text = os.readlink(name, dir_fd=dfd)
        finally:
            os.close(dfd)
        parts = components(text) if text.startswith("/") else components(drel) + components(text)
        if not parts or parts[-1] in (".", ".."):
            # The link names a directory by "." or "..": let the directory walk (which never leaves root) open it.
            return open_dir_beneath(root_fd, parts, "policy.extra_mount_checks", rel)[0]
    raise PolicyError("policy.extra_mount_checks entry %s: too many symlinks (loop?)" % rel)


# -- immutable / append-only -------------------------------------------------------------------

_METHOD_RANK = {"unknown": 0, "lsattr": 1, "ioctl": 2, "not_applicable": 3}


def _flag_answer(checks, flag, reliable):
    if any(c.get(flag) for _w, c in checks):
        return True
    return False if reliable else None


def immutable_gate(row, policy, dir_fd, name):
    """Flags of the target entry and of its directory (a +i/+a directory blocks the temp link and the rename)."""
    entry = _immutable.detect_flags(dir_fd, name)
    parent = _immutable.detect_dir_flags(dir_fd)
    checks = [("target", entry), ("directory", parent)]
    # The weakest method used is the one the answer rests on.
    method = min((c["method"] for _w, c in checks), key=lambda m: _METHOD_RANK.get(m, 0))
    row.data["immutable_detection_method"] = method
    reliable = all(c["reliable"] for _w, c in checks)
    row.data["immutable_check"] = {
        # A flag seen set is set; otherwise an undeterminable probe makes the answer unknown (null), never false.
        "immutable": _flag_answer(checks, "immutable", reliable),
        "append_only": _flag_answer(checks, "append_only", reliable),
        "reliable": reliable,
        "target": entry, "directory": parent}
    path = row.data["path"]
    for what, c in checks:
        subject = path if what == "target" else "the directory of %s" % path
        if c.get("immutable") or c.get("append_only"):
            flag, clear = ("immutable (+i)", "chattr -i") if c.get("immutable") else ("append-only (+a)", "chattr -a")
            row.stop("%s is %s (detected by %s); a rename over it fails with EPERM. Clear it with %s first "
                     "(only policy.override_preflight: true skips this gate)" % (subject, flag, c["method"], clear),
                     "override_preflight")
        elif not c["reliable"]:
            msg = "cannot tell whether %s is immutable or append-only: %s" % (subject, c.get("detail"))
            if policy.allow_unreliable_immutable_check:
                row.warn(msg)
            else:
                row.stop(msg + " (install e2fsprogs for lsattr, or set policy.allow_unreliable_immutable_check: true)",
                         "allow_unreliable_immutable_check")


# -- allow_roots / forbid_paths ----------------------------------------------------------------

def path_policy_gate(row, policy, rel, real_rel):
    """Both the path as written and the path after in-root symlinks must pass (/bin/ls is /usr/bin/ls)."""
    for p in (rel, real_rel):
        hit = _under(p, policy.forbid_paths)
        if hit:
            shown = rel if p == rel else "%s (really %s)" % (rel, p)
            row.stop("%s is under forbidden path %s (remove it from policy.forbid_paths to proceed)" % (shown, hit),
                     "forbid_paths")
            break
    if policy.allow_roots and not (_under(rel, policy.allow_roots) and _under(real_rel, policy.allow_roots)):
        shown = rel if rel == real_rel else "%s (really %s)" % (rel, real_rel)
        row.stop("%s is outside policy.allow_roots %s (add a parent of it to policy.allow_roots to proceed)"
                 % (shown, ", ".join(policy.allow_roots)), "allow_roots")


# -- setuid/setgid, capabilities, hard links ---------------------------------------------------

def hazard_gates(row, policy, st, dir_fd, name):
    if st is None or not stat.S_ISREG(st.st_mode):
        return
    path = row.data["path"]
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        bits = "/".join(b for b, f in (("setuid", stat.S_ISUID), ("setgid", stat.S_ISGID)) if st.st_mode & f)
        row.hazard(policy.suid_sgid, "%s is %s (mode %04o); a symlink cannot carry that, the swap drops it"
                   % (path, bits, stat.S_IMODE(st.st_mode)), "suid_sgid")
    if _has_capability(dir_fd, name):
        row.hazard(policy.suid_sgid, "%s carries file capabilities (security.capability); a symlink cannot carry them, "
                   "the swap drops them" % path, "suid_sgid")
    if st.st_nlink > 1:
        row.hazard(policy.hardlinks, "%s has %d hard links; the other %d name(s) would keep the old file"
                   % (path, st.st_nlink, st.st_nlink - 1), "hardlinks")


def _has_capability(dir_fd, name):
    try:
        fd = fs.open_file_at(dir_fd, name)
    except OSError:
        return False
    try:
        return "security.capability" in os.listxattr(fd)
    except OSError:
        return False
    finally:
        os.close(fd)


# -- source trust ------------------------------------------------------------------------------

def _unsafe_dir(st):
    """Why a directory lets someone other than root replace what is below it, or None.

    Group/world-writable is fine with the sticky bit: others cannot rename or delete entries they do not own."""
    if st.st_uid != 0:
        return "is owned by uid %d" % st.st_uid
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return "is group- or world-writable without the sticky bit (mode %04o)" % stat.S_IMODE(st.st_mode)
    return None


def directory_chain_problems(root, root_fd, parent_rel):
    """Problems of every directory from host / down to the source's real directory (root's ancestors included)."""
    problems = []
    host = "/"
    for part in [""] + components(root):
        host = os.path.join(host, part)
        try:
            why = _unsafe_dir(os.lstat(host))
        except OSError as e:
            why = "cannot be checked: %s" % e.strerror
        if why:
            problems.append("directory %s %s" % (host, why))
    cur = os.dup(root_fd)
    rel = ""
    try:
        for part in components(parent_rel):
            rel += "/" + part
            try:
                nfd = os.open(part, fs.DIR_FLAGS, dir_fd=cur)
            except OSError as e:
                problems.append("directory %s (inside root) cannot be checked: %s" % (rel, e.strerror))
                break
            os.close(cur)
            cur = nfd
            why = _unsafe_dir(os.fstat(cur))
            if why:
                problems.append("directory %s (inside root) %s" % (rel, why))
    finally:
        os.close(cur)
    return problems


def source_trust_gate(row, policy, source_rel, src_real_rel, src_st, root="/", root_fd=None):
    """The file itself (regular, executable, root-owned, not group/world-writable), not under a home directory,
    and every directory above it (so nobody but root can swap the file out between check and exec)."""
    problems = []
    if not stat.S_ISREG(src_st.st_mode):
        problems.append("is not a regular file")
    elif not src_st.st_mode & 0o111:
        problems.append("is not executable (mode %04o)" % stat.S_IMODE(src_st.st_mode))
    if src_st.st_uid != 0:
        problems.append("is owned by uid %d, not root" % src_st.st_uid)
    if src_st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
        problems.append("is group- or world-writable (mode %04o)" % stat.S_IMODE(src_st.st_mode))
    home = _under(source_rel, HOME_DIRS) or _under(src_real_rel, HOME_DIRS)
    if home:
        problems.append("lies under home directory %s" % home)
    if root_fd is not None:
        problems.extend(directory_chain_problems(root, root_fd, src_real_rel.rsplit("/", 1)[0] or "/"))
    row.data["source_trusted"] = not problems
    if problems:
        shown = source_rel if source_rel == src_real_rel else "%s (really %s)" % (source_rel, src_real_rel)
        msg = "source %s of %s is not trusted: it %s" % (shown, row.data["path"], "; ".join(problems))
        row.hazard({"require_trusted": "stop"}.get(policy.source_trust, policy.source_trust), msg, "source_trust")


# -- package ownership -------------------------------------------------------------------------

class PackageDb(object):
    """Answers of one package-database query for a plan: owners and dpkg diversions per in-root path."""

    def __init__(self, backend=None):
        self.backend = backend
        self.owners = {}
        self.diversions = {}

    def lookup(self, names):
        """(package or None, diversion or None) of the first name that has an answer."""
        pkg = next((self.owners[n] for n in names if self.owners.get(n)), None)
        div = next((self.diversions[n] for n in names if n in self.diversions), None)
        return pkg, div


def merged_usr_aliases(root_fd):
    """{'/bin': '/usr/bin', ...} for top-level directories that are symlinks into /usr."""
    out = {}
    for name in MERGED_USR_DIRS:
        try:
            text = os.readlink(name, dir_fd=root_fd)
        except OSError:
            continue
        if text.strip("/") == "usr/" + name:
            out["/" + name] = "/usr/" + name
    return out


def path_aliases(rel, aliases):
    """rel plus its other merged-/usr name: /usr/bin/ls <-> /bin/ls."""
    names = [rel]
    for top, usr in aliases.items():
        for a, b in ((usr, top), (top, usr)):
            if rel.startswith(a + "/"):
                names.append(b + rel[len(a):])
    return names


def package_owners(root, names):
    """One dpkg-query -S (or rpm -qf per path) over in-root paths; an empty PackageDb when neither exists."""
    names = sorted(set(names))
    if not names:
        return PackageDb()
    admindir = os.path.join(root, "var/lib/dpkg")
    dpkg = shutil.which("dpkg-query")
    if dpkg and os.path.isdir(os.path.join(admindir, "info")):
        db = PackageDb("dpkg")
        # dpkg-query takes arguments with * ? [ ] \ as fnmatch patterns; escape them so each path matches itself.
        cmd = [dpkg, "--admindir", admindir, "-S"] + [_DPKG_GLOB.sub(r"\\\1", n) for n in names]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                           env={"LC_ALL": "C", "PATH": os.environ.get("PATH", os.defpath)}, check=False)
        wanted = set(names)
        for line in p.stdout.splitlines():
            head, sep, path = line.partition(": ")
            if not sep or path not in wanted:
                continue
            if head.endswith(" from"):
                # "diversion by dash from: /bin/sh" or "local diversion from: /usr/bin/cp"
                by = head[len("diversion by "):-len(" from")] if head.startswith("diversion by ") else "local"
                db.diversions.setdefault(path, {"by": by, "to": None})
            elif head.endswith(" to"):
                continue  # the 'to' line names the other path; read from the diversions file below
            else:
                db.owners[path] = ", ".join(pkg.split(":")[0] for pkg in head.split(", "))
        _diversion_targets(admindir, db)
        return db
    rpm = shutil.which("rpm")
    if rpm and os.path.isdir(os.path.join(root, "var/lib/rpm")):
        db = PackageDb("rpm")
        for n in names:
            p = subprocess.run([rpm, "--root", root, "-qf", "--queryformat", "%{NAME}\\n", n], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True, env={"LC_ALL": "C"}, check=False)
            if p.returncode == 0 and p.stdout.strip():
                db.owners[n] = ", ".join(sorted(set(p.stdout.split())))
        return db
    return PackageDb()


def _diversion_targets(admindir, db):
    """Fill in where each diverted path's packaged file goes (<admindir>/diversions: from, to, package lines)."""
    if not db.diversions:
        return
    try:
        with open(os.path.join(admindir, "diversions")) as f:
            lines = f.read().splitlines()
    except (IOError, OSError):
        return
    for i in range(0, len(lines) - 2, 3):
        if lines[i] in db.diversions:
            db.diversions[lines[i]]["to"] = lines[i + 1]


def alternatives_choices(root_fd):
    """{in-root path: alternative name} for every /etc/alternatives/<name> link (the current choice)."""
    out = {}
    try:
        dfd, _drel = open_dir_beneath(root_fd, ["etc", "alternatives"], "alternatives", "/etc/alternatives")
    except (PolicyError, OSError):
        return out
    try:
        for name in os.listdir(dfd):
            try:
                out.setdefault(os.readlink(name, dir_fd=dfd), name)
            except OSError:
                continue
    finally:
        os.close(dfd)
    return out


def ownership_gate(row, policy, names, st, db, link_text=None, alternatives=None):
    """Provenance {uid, gid, pkg}; dpkg diversions and alternatives are noted; ownership_strict STOPs unowned targets.

    An alternatives-managed link counts as owned: update-alternatives made it and knows it."""
    pkg, div = db.lookup(names)
    path = row.data["path"]
    prov = {"uid": st.st_uid if st else None, "gid": st.st_gid if st else None, "pkg": pkg, "backend": db.backend}
    alt = None
    if link_text is not None and link_text.startswith("/etc/alternatives/"):
        alt = link_text[len("/etc/alternatives/"):]
        row.note("%s is an update-alternatives link (%s); update-alternatives may point it back later"
                 % (path, link_text))
    else:
        for n in names:
            if (alternatives or {}).get(n):
                alt = alternatives[n]
                row.note("%s is the current choice of alternative %s (/etc/alternatives/%s)" % (path, alt, alt))
                break
    if alt:
        prov["alternative"] = alt
    if div:
        prov["diverted_by"] = div["by"]
        prov["diverted_to"] = div.get("to")
        row.note("%s is diverted by %s (dpkg-divert): package upgrades write %s to %s, not here"
                 % (path, "a local diversion" if div["by"] == "local" else div["by"], path, div.get("to") or "elsewhere"))
    row.data["provenance"] = prov
    if policy.ownership_strict and st is not None and not pkg and not alt:
        why = ("no package owns %s (asked %s)" % (path, db.backend) if db.backend
               else "no package database (dpkg or rpm) inside root to check %s against" % path)
        row.stop(why + " (set policy.ownership_strict: false to proceed)", "ownership_strict", "E_OWNERSHIP")


# -- rescue toolset ----------------------------------------------------------------------------

def path_dirs(path_env=None):
    """Absolute, de-duplicated PATH entries of the module environment (relative ones never count)."""
    raw = os.environ.get("PATH", os.defpath) if path_env is None else path_env
    out = []
    for d in raw.split(os.pathsep):
        d = "/" + "/".join(components(d)) if d.startswith("/") else None
        if d and d not in out:
            out.append(d)
    return out


def _find_tool(root_fd, dir_rel, tool, replaced):
    """('ok', in-root path of the entry, in-root path of the final file) / ('replaced', hop, target) / None.

    Every hop of a symlink chain is compared with the plan's targets: a tool reached through a
    target is gone (or is the new provider) after the swap, so it cannot be the rescue."""
    parts = components(dir_rel) + [tool]
    entry = None
    try:
        for _hop in range(MAX_SYMLINK_HOPS):
            dfd, drel = open_dir_beneath(root_fd, parts[:-1], "PATH", dir_rel)
            try:
                name = parts[-1]
                if name in (".", ".."):
                    return None
                here = _join(drel, name)
                entry = entry or _join(dir_rel, tool)
                if here in replaced:
                    return ("replaced", here, replaced[here])
                st = fs.lstat_at(dfd, name)
                if st is None:
                    return None
                if stat.S_ISLNK(st.st_mode):
                    text = os.readlink(name, dir_fd=dfd)
                    parts = components(text) if text.startswith("/") else components(drel) + components(text)
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                    return ("ok", entry, here)
                return None
            finally:
                os.close(dfd)
    except (PolicyError, OSError):
        return None
    return None


def rescue_gate(root, root_fd, policy, replaced, path_env=None):
    """Whether a rescue toolset survives the plan: busybox, or rescue_min_count core tools on PATH (mapped inside
    root), none of them reached through a target of this plan; with rescue_exec_check each must also run.

    `replaced` maps in-root paths (as written and after in-root symlinks) to the target they belong to."""
    dirs = path_dirs(path_env)
    found, lost, not_running, why = {}, {}, [], {}
    for tool in ("busybox",) + RESCUE_TOOLS:
        for d in dirs:
            hit = _find_tool(root_fd, d, tool, replaced)
            if hit is None:
                continue
            if hit[0] == "replaced":
                lost.setdefault(tool, hit[2])
                continue
            problem = _exec_problem(root, hit[1], tool) if policy.rescue_exec_check else None
            if problem is not None:
                not_running.append(hit[1])
                why[hit[1]] = problem
                continue
            found[tool] = hit[1]
            break
    tools = sorted(t for t in found if t != "busybox")
    ok = "busybox" in found or len(tools) >= policy.rescue_min_count
    return {"ok": ok, "busybox": found.get("busybox"), "tools": tools,
            "missing": sorted(t for t in RESCUE_TOOLS if t not in found),
            "replaced": dict((t, lost[t]) for t in sorted(lost) if t not in found),
            "not_executable": sorted(set(not_running)), "not_executable_why": why, "min_count": policy.rescue_min_count,
            "exec_checked": bool(policy.rescue_exec_check), "path": dirs}


def rescue_verdict(row, rescue, targets_of_row):
    """A failed rescue STOPs the rows whose targets took tools away, or every row when none did."""
    if rescue is None:
        return
    row.data["rescue"] = rescue
    if rescue["ok"]:
        return
    culprits = set(rescue["replaced"].values())
    taken = sorted(t for t, target in rescue["replaced"].items() if target in targets_of_row)
    if culprits and not taken:
        return
    why = rescue.get("not_executable_why") or {}
    have = "busybox not found and only %d of the required %d core tools (%s) on PATH %s%s" % (
        len(rescue["tools"]), rescue["min_count"], ", ".join(rescue["tools"]) or "none", ":".join(rescue["path"]),
        "; found but not executing (policy.rescue_exec_check runs each one, inside root): %s" % (
            "; ".join("%s: %s" % (p, why.get(p, "did not run")) for p in rescue["not_executable"]))
        if rescue["not_executable"] else "")
    if taken:
        msg = "replacing %s takes rescue tool %s away and leaves no rescue toolset: %s" % (
            row.data["path"], ", ".join(taken), have)
    else:
        msg = "no rescue toolset for the swap of %s: %s" % (row.data["path"], have)
    fix = "install busybox, lower policy.rescue_min_count, or set policy.require_rescue: false"
    if any(w.startswith(_NO_LOADER) or w.startswith(_NO_LIBRARY) for w in why.values()):
        fix = ("install busybox-static (a statically linked busybox runs without a loader) or the dynamic loader "
               "and libc (libc6) inside root; or, for a root that never runs programs by itself (a partial image "
               "tree), set policy.rescue_exec_check: false; or policy.require_rescue: false")
    row.stop("%s (%s)" % (msg, fix), "require_rescue")


_NO_LOADER = "exec failed with ENOENT although the file exists"
_NO_LIBRARY = "exit 127"


def _exec_problem(root, rel, tool):
    """Run the tool (inside root via chroot when root is not /); None when it ran (exit 0, or 1 for usage), else why
    not, from the exec error or the exit status (never from its output)."""
    argv = [rel, "--help"] if tool != "busybox" else [rel, "true"]
    env = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    kwargs = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
              "timeout": 5, "env": env}
    if root != "/":
        kwargs["preexec_fn"] = lambda: (os.chroot(root), os.chdir("/"))
    try:
        rc = subprocess.run(argv, check=False, **kwargs).returncode
    except subprocess.TimeoutExpired:
        return "did not finish within 5 s"
    except OSError as e:
        if e.errno == errno.ENOENT:
            # The file was found as an executable regular file: what the kernel could not find is its
            # program interpreter, the dynamic loader named in the ELF header (or a #! interpreter).
            return ("%s: its dynamic loader (ld-linux, from libc6) or #! interpreter is missing inside root"
                    % _NO_LOADER)
        if e.errno == errno.ENOEXEC:
            return "not an executable format for this kernel (ENOEXEC)"
        return "could not be started: %s" % (e.strerror or e)
    except subprocess.SubprocessError as e:
        return "could not be started: %s" % e
    if rc in (0, 1):
        return None
    if rc == 127:
        return "%s: the loader ran but a shared library it needs (e.g. libc.so.6) is missing inside root" % _NO_LIBRARY
    if rc < 0:
        return "killed by signal %d" % -rc
    return "exit %d on %s" % (rc, " ".join(argv[1:]))


# -- restore readiness -------------------------------------------------------------------------

def restore_ready_gate(row, policy, backups, which):
    """A complete backup (sidecar present) whose payload hash verifies, or a STOP."""
    idx = 0 if which == "latest" else 1
    path = row.data["path"]
    if len(backups) <= idx:
        row.data["restore_ready"] = False
        row.stop("no complete %s backup of %s (found %d complete backup%s); nothing to restore from. A backup without "
                 "its sidecar never counts; only policy.override_preflight: true skips this gate"
                 % (which, path, len(backups), "" if len(backups) == 1 else "s"),
                 "override_preflight", "E_BACKUP_MISSING")
        return None
    b = backups[idx]
    try:
        verify_backup(b, policy)
    except SwitchyardError as e:
        row.data["restore_ready"] = False
        if b.meta.get("payload_hash") is None:
            row.stop("%s: %s" % (path, e.msg), "best_effort_restore", e.error_id)
        else:
            row.stop("%s: %s (only policy.override_preflight: true skips this gate; the restore itself still refuses)"
                     % (path, e.msg), "override_preflight", e.error_id)
        return None
    row.data["restore_ready"] = True
    return b


def restore_target_gate(row, current_kind):
    """Restore never destroys what is there now: a differing regular file or a directory STOPs."""
    if current_kind in ("file", "directory"):
        row.stop("%s is now a %s that differs from its backup; restore refuses to replace it. Move it away first "
                 "(only policy.override_preflight: true skips this gate; the restore itself still refuses)"
                 % (row.data["path"], "regular file" if current_kind == "file" else "directory"),
                 "override_preflight", "E_RESTORE_FAILED")


# -- preservation ------------------------------------------------------------------------------

def preservation_gate(row, ctx, dirs):
    """Probe each directory a backup or restore writes in: [(what, dir fd)], e.g. the backup directory and the
    target's directory (the restored temp file is created there and renamed over the target)."""
    tier = ctx.policy.preservation_tier
    fields = pres.FIELDS_BY_TIER[tier]
    supported = dict((f, True) for f in fields)
    reasons = {}
    seen = set()
    probed = []
    for what, fd in dirs:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        probed.append(what)
        probe = ctx.preservation_probe(fd)
        for f in fields:
            entry = probe.get(f)
            if entry is None and f == "xattrs":
                keys = [k for k in probe if k.startswith("xattrs.")]
                entry = {"supported": bool(keys) and all(probe[k].get("supported") for k in keys),
                         "reason": "per-namespace"}
            if not (entry and entry.get("supported")):
                supported[f] = False
                reasons.setdefault(f, "%s: %s" % (what, (entry or {}).get("reason", "not probed")))
    row.data["preservation"] = {"tier": tier, "fields": list(fields), "probed": probed}
    row.data["preservation_supported"] = supported
    missing = sorted(f for f, ok in supported.items() if not ok)
    if missing:
        msg = "preservation tier %s cannot keep %s for %s (%s)" % (
            tier, ", ".join(missing), row.data["path"], "; ".join("%s in %s" % (f, reasons[f]) for f in missing))
        if ctx.policy.require_preservation:
            row.stop(msg + " (lower policy.preservation_tier or set policy.require_preservation: false)",
                     "require_preservation")
        else:
            row.note(msg + "; restore will report them skipped-unsupported")


# -- backup directory --------------------------------------------------------------------------


def _backup_dir_probe(store, root_fd, backup_dir_rel, target):
    """(fd on the target's backup directory or, when it does not exist yet, its deepest existing ancestor, exists?)."""
    bdir = store.dir_for(target, create=False)
    if bdir is not None:
        return bdir, True
    parts = components(backup_dir_rel) + components(target.parent_rel)
    for i in range(len(parts) - 1, 0, -1):
        try:
            return open_dir_beneath(root_fd, parts[:i], "policy.backup_dir", backup_dir_rel)[0], False
        except (PolicyError, OSError):
            continue
    return os.dup(root_fd), False


def backup_gates(row, ctx, store, backup_dir_rel, target, kind):
    """The backup directory must be on the target's mount (hard-link backup) unless allow_degraded_fs, and every
    directory a backup or a restore writes in (backup directory, target directory) is probed for preservation."""
    if backup_dir_rel is None:
        row.data["backup_same_fs"] = True
        if kind == "file":
            preservation_gate(row, ctx, [("the target directory", target.parent_fd)])
        return
    bfd, exists = _backup_dir_probe(store, ctx.root_fd, backup_dir_rel, target)
    try:
        same = _mounts.same_mount(bfd, target.parent_fd)
        row.data["backup_same_fs"] = bool(same)
        if not same and not ctx.policy.allow_degraded_fs and kind == "file":
            row.stop("backup directory %s%s is on another mount than %s, so the backup cannot be a hard link "
                     "(set policy.allow_degraded_fs: true to back up by copy)"
                     % (backup_dir_rel, "" if exists else " (to be created)", row.data["path"]),
                     "allow_degraded_fs", "E_EXDEV")
        if kind == "file":
            preservation_gate(row, ctx, [("the backup directory", bfd), ("the target directory", target.parent_fd)])
    finally:
        os.close(bfd)
