# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Target gates: immutable flags, allow_roots/forbid_paths, setuid/capability/hard-link hazards, package ownership. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import stat

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import hazards as hz
from ansible_collections.switchyard.fs.plugins.module_utils._probes import immutable as _immutable
from ansible_collections.switchyard.fs.plugins.module_utils._gates.row import under


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
        hit = under(p, policy.forbid_paths)
        if hit:
            shown = rel if p == rel else "%s (really %s)" % (rel, p)
            row.stop("%s is under forbidden path %s (remove it from policy.forbid_paths to proceed)" % (shown, hit),
                     "forbid_paths")
            break
    if policy.allow_roots and not (under(rel, policy.allow_roots) and under(real_rel, policy.allow_roots)):
        shown = rel if rel == real_rel else "%s (really %s)" % (rel, real_rel)
        row.stop("%s is outside policy.allow_roots %s (add a parent of it to policy.allow_roots to proceed)"
                 % (shown, ", ".join(policy.allow_roots)), "allow_roots")


# -- setuid/setgid, capabilities, hard links ---------------------------------------------------

def hazard_gates(row, policy, st, dir_fd, name):
    """setuid/setgid, file capabilities and hard links of the target (hazards.file_hazards), each by its knob."""
    if st is None or not stat.S_ISREG(st.st_mode):
        return
    try:
        fd = fs.open_file_at(dir_fd, name)
    except OSError:
        fd = None  # cannot be opened: no capability is seen
    try:
        found = hz.file_hazards(st, fd)
    finally:
        if fd is not None:
            os.close(fd)
    path = row.data["path"]
    for hazard in found:
        if hazard == hz.SETID:
            row.hazard(policy.suid_sgid, "%s is %s (mode %04o); a symlink cannot carry that, the swap drops it"
                       % (path, hz.setid_bits(st), stat.S_IMODE(st.st_mode)), "suid_sgid")
        elif hazard == hz.CAPABILITY:
            row.hazard(policy.suid_sgid, "%s carries file capabilities (security.capability); a symlink cannot carry "
                       "them, the swap drops them" % path, "suid_sgid")
        else:
            row.hazard(policy.hardlinks, "%s has %d hard links; the other %d name(s) would keep the old file"
                       % (path, st.st_nlink, st.st_nlink - 1), "hardlinks")


# -- package ownership -------------------------------------------------------------------------

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
