# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rescue gate: a toolset (busybox or enough core tools) must survive the plan and, when asked, run. Private to this collection."""

from __future__ import absolute_import, division, print_function

from ansible_collections.switchyard.fs.plugins.module_utils._probes import rescue as _rescue


def rescue_gate(root, root_fd, policy, replaced, path_env=None):
    """Whether a rescue toolset survives the plan: busybox, or rescue_min_count core tools on PATH (mapped inside
    root), none of them reached through a target of this plan; with rescue_exec_check each must also run.

    `replaced` maps in-root paths (as written and after in-root symlinks) to the target they belong to; a tool's
    chain is compared with them by directory inode and name."""
    dirs = _rescue.path_dirs(path_env)
    replaced = _rescue.target_keys(root_fd, replaced)
    found, lost, not_running, why = {}, {}, [], {}
    for tool in ("busybox",) + _rescue.RESCUE_TOOLS:
        for d in dirs:
            hit = _rescue.find_tool(root_fd, d, tool, replaced)
            if hit is None:
                continue
            if hit[0] == "replaced":
                lost.setdefault(tool, hit[1])
                continue
            problem = _rescue.exec_problem(root, hit[1], tool) if policy.rescue_exec_check else None
            if problem is not None:
                not_running.append(hit[1])
                why[hit[1]] = problem
                continue
            found[tool] = hit[1]
            break
    tools = sorted(t for t in found if t != "busybox")
    ok = "busybox" in found or len(tools) >= policy.rescue_min_count
    return {"ok": ok, "busybox": found.get("busybox"), "tools": tools,
            "missing": sorted(t for t in _rescue.RESCUE_TOOLS if t not in found),
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
    if any(w.startswith(_rescue.NO_LOADER) or w.startswith(_rescue.NO_LIBRARY) for w in why.values()):
        fix = ("install busybox-static (a statically linked busybox runs without a loader) or the dynamic loader "
               "and libc (libc6) inside root; or, for a root that never runs programs by itself (a partial image "
               "tree), set policy.rescue_exec_check: false; or policy.require_rescue: false")
    row.stop("%s (%s)" % (msg, fix), "require_rescue")
