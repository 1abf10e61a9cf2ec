# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Source trust gate: the provider file and every directory above it must be root's alone. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import stat

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import components
from ansible_collections.switchyard.fs.plugins.module_utils._gates.row import under

HOME_DIRS = ("/home", "/root")


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
    home = under(source_rel, HOME_DIRS) or under(src_real_rel, HOME_DIRS)
    if home:
        problems.append("lies under home directory %s" % home)
    if root_fd is not None:
        problems.extend(directory_chain_problems(root, root_fd, src_real_rel.rsplit("/", 1)[0] or "/"))
    row.data["source_trusted"] = not problems
    if problems:
        shown = source_rel if source_rel == src_real_rel else "%s (really %s)" % (source_rel, src_real_rel)
        msg = "source %s of %s is not trusted: it %s" % (shown, row.data["path"], "; ".join(problems))
        row.hazard({"require_trusted": "stop"}.get(policy.source_trust, policy.source_trust), msg, "source_trust")
