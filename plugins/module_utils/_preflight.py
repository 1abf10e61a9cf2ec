# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight gates (SPEC section 6): one row per action, STOPs name the path and the knob. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import shutil
import stat
import subprocess

from ansible_collections.switchyard.fs.plugins.module_utils import _fsatoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils import _immutable
from ansible_collections.switchyard.fs.plugins.module_utils import _mounts
from ansible_collections.switchyard.fs.plugins.module_utils import _preservation as pres
from ansible_collections.switchyard.fs.plugins.module_utils._backup import verify_backup
from ansible_collections.switchyard.fs.plugins.module_utils._errors import SwitchyardError

RESCUE_TOOLS = ("cp", "mv", "rm", "ln", "stat", "readlink", "sha256sum", "sort", "date", "ls")
RESCUE_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
HOME_DIRS = ("/home", "/root")


def _under(path, prefixes):
    for p in prefixes:
        p = p.rstrip("/") or "/"
        if p == "/" or path == p or path.startswith(p + "/"):
            return p
    return None


class Row(object):
    """One preflight row.  stop()/warn() honour a stop|warn|allow knob value."""

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
        if level == "stop":
            self.stop("%s (set policy.%s: warn or allow to proceed)" % (msg, knob), knob, error_id)
        elif level == "warn":
            self.warn(msg)
        else:
            self.note(msg)


class PreflightContext(object):
    """Per-run caches: one mount probe per directory, one preservation probe per backup directory."""

    def __init__(self, root, root_fd, policy):
        self.root = root
        self.root_fd = root_fd
        self.policy = policy
        self._pres = {}

    def preservation_probe(self, dir_fd):
        st = os.fstat(dir_fd)
        key = (st.st_dev, st.st_ino)
        if key not in self._pres:
            self._pres[key] = pres.probe_capabilities(dir_fd, self.policy.preservation_tier)
        return self._pres[key]


def mount_gate(row, what, fd_or_path, need_rw, need_exec):
    ms = _mounts.mount_status(fd_or_path)
    info = {"mountpoint": ms.get("mountpoint"), "fstype": ms.get("fstype"), "rw": ms.get("rw"),
            "exec": ms.get("exec"), "method": ms.get("method")}
    if not ms.get("known"):
        row.stop("the mount of %s (%s) cannot be determined; failing closed" % (what, row.data["path"]),
                 "extra_mount_checks")
    else:
        if need_rw and not ms.get("rw"):
            row.stop("%s is on a read-only mount (%s)" % (what, ms.get("mountpoint")), "extra_mount_checks")
        if need_exec and not ms.get("exec"):
            row.stop("%s is on a noexec mount (%s)" % (what, ms.get("mountpoint")), "extra_mount_checks")
    return info


def immutable_gate(row, policy, dir_fd, name):
    """Flags of the target entry and of its directory (a +i directory blocks the temp link and the rename)."""
    entry = _immutable.detect_flags(dir_fd, name)
    parent = _immutable.detect_dir_flags(dir_fd)
    checks = [("target", entry), ("its directory", parent)]
    method = entry["method"] if entry["method"] != "not_applicable" else parent["method"]
    reliable = all(c["reliable"] for _w, c in checks)
    immutable = any(c.get("immutable") for _w, c in checks)
    append_only = any(c.get("append_only") for _w, c in checks)
    row.data["immutable_detection_method"] = method
    row.data["immutable_check"] = {"immutable": immutable, "append_only": append_only, "reliable": reliable,
                                   "target": entry, "directory": parent}
    for what, c in checks:
        if c.get("immutable") or c.get("append_only"):
            flag = "immutable (+i)" if c.get("immutable") else "append-only (+a)"
            row.stop("%s of %s is %s; clear it with chattr -i/-a first" % (what, row.data["path"], flag), "immutable")
        elif not c["reliable"]:
            msg = "cannot tell whether %s of %s is immutable: %s" % (what, row.data["path"], c.get("detail"))
            if policy.allow_unreliable_immutable_check:
                row.warn(msg)
            else:
                row.stop(msg + " (install e2fsprogs for lsattr, or set policy.allow_unreliable_immutable_check: true)",
                         "allow_unreliable_immutable_check")


def path_policy_gate(row, policy, rel, real_rel):
    for p in (rel, real_rel):
        hit = _under(p, policy.forbid_paths)
        if hit:
            row.stop("%s is under forbidden path %s" % (p, hit), "forbid_paths")
            break
    if policy.allow_roots and not (_under(rel, policy.allow_roots) and _under(real_rel, policy.allow_roots)):
        row.stop("%s is outside policy.allow_roots %s" % (rel, policy.allow_roots), "allow_roots")


def hazard_gates(row, policy, st, dir_fd, name):
    if st is None or not stat.S_ISREG(st.st_mode):
        return
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        row.hazard(policy.suid_sgid, "%s is setuid/setgid (mode %04o); a symlink cannot carry that"
                   % (row.data["path"], stat.S_IMODE(st.st_mode)), "suid_sgid")
    if _has_capability(dir_fd, name):
        row.hazard(policy.suid_sgid, "%s carries file capabilities (security.capability); a symlink cannot carry them"
                   % row.data["path"], "suid_sgid")
    if st.st_nlink > 1:
        row.hazard(policy.hardlinks, "%s has %d hard links; the other names would keep the old file"
                   % (row.data["path"], st.st_nlink), "hardlinks")


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


def source_trust_gate(row, policy, source_rel, src_real_rel, src_st):
    problems = []
    if not stat.S_ISREG(src_st.st_mode):
        problems.append("is not a regular file")
    elif not src_st.st_mode & 0o111:
        problems.append("is not executable")
    if src_st.st_uid != 0:
        problems.append("is owned by uid %d, not root" % src_st.st_uid)
    if src_st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
        problems.append("is group- or world-writable (mode %04o)" % stat.S_IMODE(src_st.st_mode))
    home = _under(source_rel, HOME_DIRS) or _under(src_real_rel, HOME_DIRS)
    if home:
        problems.append("lies under home directory %s" % home)
    row.data["source_trusted"] = not problems
    if problems:
        msg = "source %s %s" % (source_rel, "; ".join(problems))
        if policy.source_trust == "require_trusted":
            row.stop(msg + " (set policy.source_trust: warn or allow to proceed)", "source_trust")
        elif policy.source_trust == "warn":
            row.warn(msg)
        else:
            row.note(msg)


def package_owners(root, rels):
    """{in-root path: package} via one dpkg-query -S (or rpm -qf) call; {} when neither is available."""
    if not rels:
        return {}, None
    dpkg = shutil.which("dpkg-query")
    if dpkg and os.path.isdir(os.path.join(root, "var/lib/dpkg/info")):
        cmd = [dpkg, "--admindir", os.path.join(root, "var/lib/dpkg"), "-S"] + list(rels)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                           env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        owners = {}
        for line in p.stdout.splitlines():
            pkgs, sep, path = line.partition(": ")
            if sep and path in rels and not pkgs.startswith("diversion by"):
                owners[path] = pkgs
        return owners, "dpkg"
    rpm = shutil.which("rpm")
    if rpm and os.path.isdir(os.path.join(root, "var/lib/rpm")):
        owners = {}
        for rel in rels:
            p = subprocess.run([rpm, "--root", root, "-qf", rel], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True)
            if p.returncode == 0:
                owners[rel] = p.stdout.strip()
        return owners, "rpm"
    return {}, None


def ownership_gate(row, policy, rel, st, owners, backend, alt_link):
    row.data["provenance"] = {"uid": st.st_uid if st else None, "gid": st.st_gid if st else None,
                              "pkg": owners.get(rel), "backend": backend}
    if alt_link:
        row.note("%s is managed by update-alternatives (%s)" % (rel, alt_link))
    if policy.ownership_strict and st is not None and not owners.get(rel):
        why = "no package owns %s" % rel if backend else "no package database (dpkg/rpm) to check %s against" % rel
        row.stop(why + " (set policy.ownership_strict: false to proceed)", "ownership_strict", "E_OWNERSHIP")


def rescue_gate(root, root_fd, policy, replaced):
    """Whether a rescue toolset survives the plan: busybox, or enough core tools not being replaced."""
    found = {}
    for tool in ("busybox",) + RESCUE_TOOLS:
        for d in RESCUE_PATH:
            rel = d + "/" + tool
            if rel in replaced:
                continue
            host = os.path.join(root, rel.lstrip("/"))
            if os.path.isfile(host) and os.access(host, os.X_OK) and os.path.realpath(host) not in replaced:
                found[tool] = rel
                break
    if policy.rescue_exec_check:
        for tool, rel in list(found.items()):
            if not _executes(root, rel, tool):
                del found[tool]
    tools = sorted(t for t in found if t != "busybox")
    ok = "busybox" in found or len(tools) >= policy.rescue_min_count
    return {"ok": ok, "busybox": found.get("busybox"), "tools": tools, "min_count": policy.rescue_min_count,
            "exec_checked": policy.rescue_exec_check}


def _executes(root, rel, tool):
    argv = [rel, "--help"] if tool != "busybox" else [rel]
    try:
        if root == "/":
            p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5)
        else:
            p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5,
                               preexec_fn=lambda: (os.chroot(root), os.chdir("/")))
        return p.returncode in (0, 1)
    except (OSError, subprocess.TimeoutExpired):
        return False


def restore_ready_gate(row, policy, backups, which):
    idx = 0 if which == "latest" else 1
    if len(backups) <= idx:
        row.data["restore_ready"] = False
        row.stop("no complete %s backup of %s" % (which, row.data["path"]), "best_effort_restore", "E_BACKUP_MISSING")
        return None
    b = backups[idx]
    try:
        verify_backup(b, policy)
    except SwitchyardError as e:
        row.data["restore_ready"] = False
        row.stop(e.msg, "require_sidecar_integrity", e.error_id)
        return None
    row.data["restore_ready"] = True
    return b


def preservation_gate(row, ctx, backup_dir_fd):
    probe = ctx.preservation_probe(backup_dir_fd)
    tier = ctx.policy.preservation_tier
    fields = pres.FIELDS_BY_TIER[tier]
    supported = {}
    for f in fields:
        entry = probe.get(f)
        if entry is None and f == "xattrs":
            entry = {"supported": any(v.get("supported") for k, v in probe.items() if "." in k or k.startswith("xattr")),
                     "reason": "per-namespace"}
        supported[f] = bool(entry and entry.get("supported"))
    row.data["preservation"] = {"tier": tier, "fields": list(fields)}
    row.data["preservation_supported"] = supported
    missing = sorted(f for f, ok in supported.items() if not ok)
    if missing:
        msg = "preservation tier %s cannot keep %s here" % (tier, ", ".join(missing))
        if ctx.policy.require_preservation:
            row.stop(msg + " (lower policy.preservation_tier or unset policy.require_preservation)", "require_preservation")
        else:
            row.note(msg + "; restore will report them unsupported")
