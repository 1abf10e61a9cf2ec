# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The preflight stage: row assembly over the gates, STOP handling, preflight(). Private to this collection."""

from __future__ import absolute_import, division, print_function

import json
import os

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup_store as bks
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts
from ansible_collections.switchyard.fs.plugins.module_utils._probes import packages as _packages
from ansible_collections.switchyard.fs.plugins.module_utils._gates import backup as gbackup
from ansible_collections.switchyard.fs.plugins.module_utils._gates import mounts as gmounts
from ansible_collections.switchyard.fs.plugins.module_utils._gates import rescue as grescue
from ansible_collections.switchyard.fs.plugins.module_utils._gates import row as grow
from ansible_collections.switchyard.fs.plugins.module_utils._gates import source as gsource
from ansible_collections.switchyard.fs.plugins.module_utils._gates import target as gtarget
from ansible_collections.switchyard.fs.plugins.module_utils._errors import ERROR_CLASSES, PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import resolve_beneath
from ansible_collections.switchyard.fs.plugins.module_utils._stages.inputs import (
    check_target_aliases, normalize_links, normalize_targets, plan_of, restore_plan)
from ansible_collections.switchyard.fs.plugins.module_utils._stages.run import Run
from ansible_collections.switchyard.fs.plugins.module_utils._stages.recovery import recover
from ansible_collections.switchyard.fs.plugins.module_utils._stages.links import dir_mount_status, resolve_links


def link_rows(run, acts):
    """Preflight rows for link actions: every gate, for real (docs/preflight.md)."""
    policy = run.policy
    ctx = grow.PreflightContext(run.s.root, run.root_fd, policy)
    aliases = _packages.merged_usr_aliases(run.root_fd)
    names = {}
    for la in acts:
        names[la.link["target"]] = sorted(set(_packages.path_aliases(la.link["target"], aliases)
                                              + _packages.path_aliases(la.target.real_rel, aliases)))
    db = _packages.package_owners(run.s.root, [n for la in acts if la.st is not None for n in names[la.link["target"]]])
    alternatives = _packages.alternatives_choices(run.root_fd)
    replaced = {}
    for la in acts:
        replaced[la.link["target"]] = la.link["target"]
        replaced[la.target.real_rel] = la.link["target"]
    rescue = grescue.rescue_gate(run.s.root, run.root_fd, policy, replaced) if policy.require_rescue else None
    extra = _mounts.probe_extra_mounts(run.root_fd, policy.extra_mount_checks)
    mounts = {}  # one mount probe per target directory
    rows = []
    for la in acts:
        row = grow.Row(la.action.action_id, la.link["target"], "link")
        d = row.data
        d.update({"source": la.link["source"], "current_kind": la.kind, "planned_kind": "symlink",
                  "noop": la.noop, "link_text": la.link["source"]})
        gtarget.path_policy_gate(row, policy, la.link["target"], la.target.real_rel)
        # An already-swapped target is not written again, so only a changing one needs a writable mount.
        d["mount"] = gmounts.mount_verdict(row, "the target directory of %s" % la.link["target"],
                                           dir_mount_status(mounts, la.target.parent_fd), not la.noop, True)
        src_real, sst, smount = la.src_info
        # The source is only linked to and executed, never written: exec is required, rw is not (docs/preflight.md).
        d["source_mount"] = gmounts.mount_verdict(row, "source %s of %s" % (la.link["source"], la.link["target"]),
                                                  smount, False, True)
        gsource.source_trust_gate(row, policy, la.link["source"], src_real, sst, run.s.root, run.root_fd)
        gmounts.extra_mount_gate(row, extra)
        if not la.noop:
            gtarget.immutable_gate(row, policy, la.target.parent_fd, la.target.name)
            gtarget.hazard_gates(row, policy, la.st, la.target.parent_fd, la.target.name)
            gtarget.ownership_gate(row, policy, names[la.link["target"]], la.st, db, la.link_text, alternatives)
            gbackup.backup_gates(row, ctx, run.store, run.s.backup_dir_rel, la.target, la.kind)
        else:
            d["immutable_detection_method"] = "not_applicable"
        grescue.rescue_verdict(row, rescue, (la.link["target"],))
        rows.append(row)
    return rows


def finish_rows(run, rows):
    """Sorted rows, one preflight event each, a preflight.summary; returns (rows, stops).

    override_preflight turns every STOP into a warning (the row keeps policy_ok false and says overridden)."""
    rows = sorted(rows, key=lambda r: (r.data["path"], r.data["action_id"]))
    stops = []
    for r in rows:
        d = r.data
        if run.policy.override_preflight and d["stops"]:
            for s in d["stops"]:
                d["warnings"].append("overridden STOP (policy.override_preflight): " + s["msg"])
            d["overridden"] = True
        elif d["stops"]:
            stops.extend(d["stops"])
        run.events.preflight_row(d["action_id"], d["path"], d["policy_ok"], d.get("current_kind"),
                                 d.get("planned_kind"), d["stops"], d["warnings"], d.get("overridden"))
        for w in d["warnings"]:
            run.rep.warnings.append("%s: %s" % (d["path"], w))
    warnings = sum(len(r.data["warnings"]) for r in rows)
    run.events.preflight_summary(
        len(rows), len(stops), warnings,
        sorted(set(r.data["path"] for r in rows if r.data["stops"] and not r.data.get("overridden"))),
        sum(1 for r in rows if r.data.get("overridden")))
    return _share_equal_facts([r.data for r in rows]), stops


def _share_equal_facts(rows):
    """Rows of one run mostly carry equal fact dicts (mount, preservation, provenance ...): keep one object per
    distinct value instead of one per row (10,000 rows: tens of MB).  Nothing changes a row's fact dicts once
    its gates have run; the report's compaction copies what it edits."""
    seen = {}
    for d in rows:
        for k, v in d.items():
            if isinstance(v, dict):
                d[k] = seen.setdefault(json.dumps(v, sort_keys=True), v)
    return rows


def stop_error(stops, keep_specific=True):
    """The error a STOP maps to.  In apply, E_EXDEV, E_BACKUP_MISSING and E_RESTORE_FAILED keep their own id;
    everything else (and everything in safe_preflight, keep_specific=False) is E_POLICY with the specific
    causes (E_OWNERSHIP, E_EXDEV, ...) first in summary_error_ids."""
    ids = []
    for s in stops:
        if s["error_id"] not in ids:
            ids.append(s["error_id"])
    specific = [i for i in ids if i != "E_POLICY"]
    msg = "preflight found %d STOP%s: %s" % (len(stops), "" if len(stops) == 1 else "s",
                                             "; ".join(s["msg"] for s in stops))
    if keep_specific and specific and specific[0] in ("E_EXDEV", "E_BACKUP_MISSING", "E_RESTORE_FAILED"):
        return ERROR_CLASSES[specific[0]](msg, path=None, cause_ids=specific[1:])
    return PolicyError(msg, cause_ids=specific)


def preflight(settings, links=None, restores=None, which="latest", fail_on_stop=True):
    """Run every gate for real, change nothing, whatever settings.check_mode says (settings are only read).
    Returns (report, error or None, warnings)."""
    norm = normalize_links(settings, links) if links else []
    rrels = normalize_targets(settings, restores, "restores") if restores else []
    if not norm and not rrels:
        raise PolicyError("safe_preflight needs links and/or restores")
    # One plan, one id: link rows carry the ids safe_apply (and its check mode) gives the same links, restore
    # rows the ids safe_restore targets=... which=... gives.  With both, the report's plan_id is the apply plan's.
    link_plan = plan_of(norm) if norm else None
    rplan = restore_plan(rrels, which) if rrels else None
    plan_id = (link_plan or rplan).plan_id
    actions = (link_plan.actions if link_plan else []) + (rplan.actions if rplan else [])
    run = Run(settings, "preflight", plan_id, check_mode=True)  # preflight never mutates
    acts = []
    try:
        run.events.plan(len(actions), run.policy.preset)
        check_target_aliases(run, rrels, "restores")
        recover(run)
        rows = []
        if norm:
            acts = resolve_links(run, link_plan, norm)
            rows.extend(link_rows(run, acts))
        for a in (rplan.actions if rplan else []):
            rows.append(restore_row(run, a, which))
        rows, stops = finish_rows(run, rows)
        err = stop_error(stops, keep_specific=False) if (stops and fail_on_stop) else None
        summary = {"rows": len(rows), "stops": len(stops), "warnings": sum(len(r["warnings"]) for r in rows),
                   "policy_ok": not stops, "dry_run": True}
        report = run.rep.report(summary, root=settings.root, preset=run.policy.preset, policy=run.policy.as_dict(),
                                rows=rows, recovery=run.recovery)
        return report, err, run.rep.warnings
    finally:
        for la in acts:
            la.target.close()
        run.rep.flush_audit_log()
        run.close()


def restore_row(run, action, which):
    """Restore readiness: path policy, a writable target directory, a complete verified backup, nothing there that
    restore would refuse to replace, immutable flags and the preservation probe of the target directory."""
    target = resolve_beneath(run.s.root, os.path.join(run.s.root, action.target.lstrip("/")), "restores", run.root_fd)
    try:
        row = grow.Row(action.action_id, action.target, "restore")
        st = target.lstat()
        row.data["current_kind"] = fs.kind_of(st)
        gtarget.path_policy_gate(row, run.policy, action.target, target.real_rel)
        bdir = run.store.dir_for(target, create=False)
        scan = run.store.scan(target, bdir) if bdir is not None else bks.Scan()
        backups = scan.usable
        try:
            for r in scan.rejected:
                row.warn(r.describe())
            b = gbackup.restore_ready_gate(row, run.policy, backups, which)
            if b is None and scan.rejected and row.data["stops"]:
                # Name every unusable sidecar (file and field) in the STOP itself, not only in the warnings.
                row.data["stops"][-1]["msg"] += " (%s)" % "; ".join(r.describe() for r in scan.rejected)
            if b is not None:
                row.data["planned_kind"] = b.prior_kind
                row.data["noop"] = bk.target_matches_backup(target, b, run.policy.preservation_tier)
                if not row.data["noop"]:
                    # Restore writes a temp file in the target directory and renames it over the target.
                    row.data["mount"] = gmounts.mount_gate(row, "the target directory of %s" % action.target,
                                                           target.parent_fd, True, False)
                    gbackup.restore_target_gate(row, row.data["current_kind"])
                    gtarget.immutable_gate(row, run.policy, target.parent_fd, target.name)
                    if b.prior_kind == "file":
                        ctx = grow.PreflightContext(run.s.root, run.root_fd, run.policy)
                        gbackup.preservation_gate(row, ctx, [("the target directory", target.parent_fd)])
        finally:
            if bdir is not None:
                os.close(bdir)
        return row
    finally:
        target.close()
