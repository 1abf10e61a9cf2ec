# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Package ownership probe: dpkg/rpm owners, dpkg diversions, alternatives, merged-/usr aliases. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import subprocess

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import open_dir_beneath

# Top-level directories a merged-/usr root links into /usr; dpkg may know a file under either name.
MERGED_USR_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DPKG_GLOB = re.compile(r"([*?\[\]\\])")


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
