# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine: plan -> preflight -> apply -> rollback, restore, prune, recovery. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import stat
import time
import uuid

from ansible_collections.switchyard.fs.plugins.module_utils import _fsatoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils import _backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils import _journal as jr
from ansible_collections.switchyard.fs.plugins.module_utils import _mounts
from ansible_collections.switchyard.fs.plugins.module_utils import _preflight as pf
from ansible_collections.switchyard.fs.plugins.module_utils import _smoke
from ansible_collections.switchyard.fs.plugins.module_utils._errors import (
    SwitchyardError, PolicyError, LockingError, AtomicSwapError, RestoreFailedError, SmokeError,
    BackupMissingError, ERROR_CLASSES)
from ansible_collections.switchyard.fs.plugins.module_utils._lock import acquire_lock, LockUnavailableError
from ansible_collections.switchyard.fs.plugins.module_utils._plan import Action, Plan
from ansible_collections.switchyard.fs.plugins.module_utils._policy import resolve_policy
from ansible_collections.switchyard.fs.plugins.module_utils._report import Reporter
from ansible_collections.switchyard.fs.plugins.module_utils._safepath import (
    normalize_root, relative_to_root, resolve_beneath, open_root, follow_beneath, host_path_beneath)


def _now_ms():
    return int(time.time() * 1000)


class Settings(object):
    """The options every module shares (SPEC section 3), validated before anything is touched."""

    def __init__(self, root="/", preset="default", policy=None, lock_path=None, lock_timeout=5.0, state_dir=None,
                 backup_tag="switchyard", audit_log=None, check_mode=False):
        self.root = normalize_root(root)
        self.policy = resolve_policy(preset or "default", policy or {})
        self.lock_path = lock_path or os.path.join(self.root, "run/lock/switchyard.lock")
        if not os.path.isabs(self.lock_path):
            raise PolicyError("lock_path=%r must be an absolute path" % (lock_path,))
        if lock_timeout is None or lock_timeout < 0:
            raise PolicyError("lock_timeout=%r must be a number of seconds >= 0" % (lock_timeout,))
        self.lock_timeout = float(lock_timeout)
        self.state_rel = relative_to_root(self.root, state_dir or os.path.join(self.root, "var/lib/switchyard"),
                                          "state_dir")
        self.backup_tag = backup_tag
        bk.BackupStore(None, None, backup_tag)  # validates the tag
        self.audit_log = audit_log
        self.check_mode = check_mode
        self.backup_dir_rel = None
        if self.policy.backup_dir:
            self.backup_dir_rel = relative_to_root(self.root, os.path.join(self.root, self.policy.backup_dir.lstrip("/")),
                                                   "policy.backup_dir")


class Run(object):
    """State of one module invocation: root handle, durability, reporter, lock."""

    def __init__(self, settings, stage, plan_id):
        self.s = settings
        self.policy = settings.policy
        self.run_id = str(uuid.uuid4())
        self.root_fd = open_root(settings.root)
        self.durability = fs.Durability(self.policy.require_backup_durability)
        self.rep = Reporter(stage, plan_id, self.run_id, settings.check_mode, settings.audit_log)
        self.store = bk.BackupStore(self.root_fd, settings.backup_dir_rel, settings.backup_tag)
        self.lock = None
        self.lock_facts = {"lock_backend": "none", "lock_wait_ms": 0.0, "lock_attempts": 0}
        self.recovery = []
        _mounts.pin_mount_table()

    def close(self):
        _mounts.unpin_mount_table()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None

    # -- locking (SPEC section 8) -------------------------------------------------------------
    def take_lock(self):
        """Check mode never creates the lock file; it only reports what a commit would do."""
        if self.s.check_mode:
            return
        try:
            self.lock = acquire_lock(self.s.lock_path, self.s.lock_timeout, self.rep.plan_id)
        except LockUnavailableError as e:
            if self.policy.locking == "required" or not self.policy.allow_unlocked_commit:
                raise LockingError("%s; policy.locking is %s and allow_unlocked_commit is %s"
                                   % (e.msg, self.policy.locking, self.policy.allow_unlocked_commit))
            self.rep.event("apply.attempt", "warn", msg="running without a lock: %s" % e.msg, lock_backend="none")
            return
        except LockingError as e:
            self.lock_facts = {"lock_backend": "flock", "lock_wait_ms": round(getattr(e, "wait_ms", 0.0), 3),
                               "lock_attempts": getattr(e, "attempts", 0)}
            raise
        self.lock_facts = {"lock_backend": self.lock.backend, "lock_wait_ms": round(self.lock.wait_ms, 3),
                           "lock_attempts": self.lock.attempts}

    # -- recovery (SPEC section 4.7) ------------------------------------------------------------
    def recover(self):
        jdir = jr.open_state_dir(self.root_fd, self.s.state_rel.strip("/").split("/"), create=False)
        if jdir is None:
            return
        try:
            if not self.s.check_mode:
                jr.remove_dead_temps(jdir)
            for name, begin, later in jr.list_journals(jdir):
                if jr.final_state(later) is not None:
                    continue
                journal = jr.Journal.claim(jdir, name, self.durability)
                if journal is None:
                    # Its writer still holds the journal's flock: a live plan of another process, not a crash.
                    pid, rid = _journal_ids(name, begin)
                    self.rep.event("recovery", "warn", recovered_plan_id=pid, recovered_run_id=rid,
                                   msg="plan %s is still running in another process; left alone" % pid)
                    continue
                try:
                    # Re-read under the flock: the writer may have finished between listing and claiming.
                    begin, later = jr.read_journal(jdir, name)
                    if begin is None or jr.final_state(later) is not None:
                        continue
                    try:
                        # Untrusted like option input: nothing of a bad record is used, least of all as a path.
                        jr.check_begin(name, begin)
                    except jr.JournalInvalid as e:
                        pid, rid = _journal_ids(name, begin)
                        result = {"ok": False, "plan_id": pid, "run_id": rid, "paths": [], "dry_run": self.s.check_mode,
                                  "msg": "could not roll back plan %s: %s; nothing was undone from it. Inspect the "
                                         "journal under state_dir %s and the targets of that plan by hand"
                                         % (pid, e, self.s.state_rel)}
                    else:
                        # safe_restore plan_id=<this plan> is the documented way out of "stop": it may undo it.
                        undoing_it = self.rep.stage == "restore" and self.rep.plan_id == begin["plan_id"]
                        if self.policy.on_unfinished_plan == "stop" and not self.s.check_mode and not undoing_it:
                            raise PolicyError("plan %s (run %s) was interrupted and is unfinished; run any module with "
                                              "policy.on_unfinished_plan: rollback, or safe_restore plan_id=%s"
                                              % (begin["plan_id"], begin["run_id"], begin["plan_id"]))
                        result = self._recover_one(begin)
                    if not self.s.check_mode:
                        try:
                            journal.finish("recovered" if result["ok"] else "failed_rollback", by_run=self.run_id)
                        except OSError as e:
                            # The undo is idempotent: an unmarked journal is simply recovered again next run.
                            result["ok"] = False
                            result["msg"] += "; could not mark journal %s finished: %s" % (name, e)
                finally:
                    journal.close()
                self.recovery.append(result)
                self.rep.event("recovery", "success" if result["ok"] else "failure", recovered_plan_id=result["plan_id"],
                               recovered_run_id=result["run_id"], paths=result["paths"], msg=result["msg"])
                if not result["ok"] and not self.s.check_mode:
                    # Never carry on over a root a crash left inconsistent (SPEC 4.7).
                    raise RestoreFailedError("%s; nothing else was done. Inspect the paths, then use safe_restore "
                                             "plan_id=%s or targets=... to finish by hand" % (result["msg"], result["plan_id"]))
        finally:
            os.close(jdir)

    def _recover_one(self, begin):
        paths, errors = [], []
        # Backups live where the interrupted run put them, whatever this run's policy.backup_dir says.
        store = bk.BackupStore(self.root_fd, begin.get("backup_dir_rel", self.s.backup_dir_rel), begin["tag"])
        for act in reversed(begin.get("actions", [])):
            try:
                target = resolve_beneath(self.s.root, os.path.join(self.s.root, act["target"].lstrip("/")),
                                         "journal target", self.root_fd)
            except SwitchyardError as e:
                errors.append(e.msg)
                continue
            try:
                if not self.s.check_mode:  # check mode (and so preflight) reports, never mutates
                    _remove_temps(target.parent_fd, target.name, begin["run_id"])
                bdir = store.dir_for(target, create=False)
                if bdir is None:
                    continue
                try:
                    if not self.s.check_mode:
                        for name in (bk.payload_name(target.name, begin["tag"], act["backup_ms"]),
                                     bk.sidecar_name(target.name, begin["tag"], act["backup_ms"])):
                            _remove_temps(bdir, name, begin["run_id"])
                    changed = self._undo_action(target, bdir, act, begin["tag"])
                finally:
                    os.close(bdir)
                if changed:
                    paths.append(act["target"])
            except (SwitchyardError, OSError) as e:
                errors.append("%s: %s" % (act["target"], getattr(e, "msg", None) or e))
            finally:
                target.close()
        ok = not errors
        msg = ("rolled back %d action(s) of interrupted plan %s" % (len(paths), begin["plan_id"]) if ok
               else "could not fully roll back plan %s: %s" % (begin["plan_id"], "; ".join(errors)))
        return {"ok": ok, "plan_id": begin["plan_id"], "run_id": begin["run_id"], "paths": paths, "msg": msg,
                "dry_run": self.s.check_mode}

    def _undo_action(self, target, bdir, act, tag):
        """Undo one journaled action from what the filesystem shows; True when something changed."""
        sname = bk.sidecar_name(target.name, tag, act["backup_ms"])
        pname = bk.payload_name(target.name, tag, act["backup_ms"])
        bad = None
        try:
            parsed = bk.load_sidecar(bdir, sname, tag)
            meta = parsed.meta if parsed is not None else None
            if meta is not None and meta["prior_kind"] != "absent":
                pst = fs.lstat_at(bdir, pname)
                if pst is not None:
                    bk.check_payload_kind(sname, meta["prior_kind"], pst)
        except bk.sc.SidecarInvalid as e:
            meta, bad = None, e
        st = target.lstat()
        swapped = fs.kind_of(st) == "symlink" and fs.readlink_at(target.parent_fd, target.name) == act["link_text"]
        if not swapped:
            # The swap never happened (or was undone).  The plan's backup is dropped only while it merely
            # duplicates the target: if something else replaced the target since, it is the last copy.
            if self.s.check_mode:
                return False
            if meta is None:
                if fs.lstat_at(bdir, pname) is not None and _same_entry(target, bdir, pname):
                    fs.unlink_at(bdir, pname)  # payload without sidecar (or with an unusable one): a duplicate
                    if bad is not None:
                        fs.unlink_at(bdir, sname)
            elif bk.target_matches_backup(target, bk.Backup(bdir, act["backup_ms"], sname, meta),
                                          self.policy.preservation_tier):
                bk.remove_backup(bk.Backup(bdir, act["backup_ms"], sname, meta), self.durability)
            return False
        if bad is not None:
            raise RestoreFailedError("%s was swapped but its backup is unusable: %s; left as is"
                                     % (act["target"], bad), path=act["target"])
        if meta is None:
            raise RestoreFailedError("%s was swapped but its backup %s has no complete sidecar; left as is"
                                     % (act["target"], pname), path=act["target"])
        backup = bk.Backup(bdir, act["backup_ms"], sname, meta)
        if self.s.check_mode:
            return True
        bk.verify_backup(backup, self.policy)
        bk.restore_backup(target, backup, self.policy, self.durability, self.run_id, consume=True)
        return True


_NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _journal_ids(name, begin):
    """(plan_id, run_id) of a journal for reports: the record's own when they are UUIDs, else the run id in the
    journal's name, else the nil UUID.  Never raises on a garbage record."""
    begin = begin if isinstance(begin, dict) else {}
    stem = name[:-len(jr.JOURNAL_SUFFIX)] if name.endswith(jr.JOURNAL_SUFFIX) else ""

    def ok(value):
        return isinstance(value, str) and jr._UUID_RE.match(value) is not None
    rid = begin.get("run_id") if ok(begin.get("run_id")) else (stem if ok(stem) else _NIL_UUID)
    pid = begin.get("plan_id") if ok(begin.get("plan_id")) else _NIL_UUID
    return pid, rid


def _same_entry(target, bdir, pname):
    """True when backup payload pname holds what the target holds (same inode, or same bytes)."""
    tst, pst = target.lstat(), fs.lstat_at(bdir, pname)
    if tst is None or pst is None:
        return False
    if (tst.st_dev, tst.st_ino) == (pst.st_dev, pst.st_ino):
        return True
    if stat.S_ISREG(tst.st_mode) and stat.S_ISREG(pst.st_mode):
        return fs.sha256_at(target.parent_fd, target.name) == fs.sha256_at(bdir, pname)
    if stat.S_ISLNK(tst.st_mode) and stat.S_ISLNK(pst.st_mode):
        return fs.readlink_at(target.parent_fd, target.name) == fs.readlink_at(bdir, pname)
    return False


def _discard_partial_backup(run, la, bdir):
    """Remove what create_backup left when it failed: names reserved for this run (backup_ms) and temps."""
    tag = run.s.backup_tag
    _remove_temps(la.target.parent_fd, la.target.name, run.run_id)
    _remove_temps(bdir, bk.payload_name(la.target.name, tag, la.backup_ms), run.run_id)
    _remove_temps(bdir, bk.sidecar_name(la.target.name, tag, la.backup_ms), run.run_id)
    fs.unlink_at(bdir, bk.sidecar_name(la.target.name, tag, la.backup_ms))
    fs.unlink_at(bdir, bk.payload_name(la.target.name, tag, la.backup_ms))
    run.durability.fsync(bdir, "backup directory of %s" % la.link["target"])


def _remove_temps(dir_fd, name, run_id):
    prefix = ".%s%s%s." % (name, fs.TEMP_MARKER, run_id[:8])
    for entry in os.listdir(dir_fd):
        if entry.startswith(prefix):
            fs.unlink_at(dir_fd, entry)


# ---------------------------------------------------------------------------------------------
# Input validation: everything fails with E_POLICY before anything is touched.

def _normalize_links(settings, links):
    if not isinstance(links, list) or not links:
        raise PolicyError("links must be a non-empty list of {source, target}")
    out, seen = [], {}
    for i, link in enumerate(links):
        if not isinstance(link, dict) or set(link) - {"source", "target"} or "source" not in link or "target" not in link:
            raise PolicyError("links[%d]=%r must be a dict with exactly source and target" % (i, link))
        trel = relative_to_root(settings.root, link["target"], "links[%d].target" % i)
        srel = relative_to_root(settings.root, link["source"], "links[%d].source" % i)
        if trel in seen:
            raise PolicyError("links[%d].target=%r duplicates links[%d].target; each target may appear once per plan"
                              % (i, link["target"], seen[trel]))
        if trel == srel:
            raise PolicyError("links[%d]: source and target are both %r" % (i, link["target"]))
        seen[trel] = i
        out.append({"target": trel, "source": srel, "target_host": link["target"], "source_host": link["source"]})
    return out


def _normalize_targets(settings, targets, option="targets"):
    if not isinstance(targets, list) or not targets:
        raise PolicyError("%s must be a non-empty list of paths" % option)
    rels, seen = [], set()
    for i, t in enumerate(targets):
        rel = relative_to_root(settings.root, t, "%s[%d]" % (option, i))
        if rel in seen:
            raise PolicyError("%s[%d]=%r is listed twice" % (option, i, t))
        seen.add(rel)
        rels.append(rel)
    return rels


class LinkAction(object):
    def __init__(self, action, link, target, src_info):
        self.action = action
        self.link = link
        self.target = target
        self.src_info = src_info  # (real_rel, stat) of the source's final file
        self.st = target.lstat()
        self.kind = fs.kind_of(self.st)
        self.noop = self.kind == "symlink" and fs.readlink_at(target.parent_fd, target.name) == link["source"]
        self.row = None
        self.backup = None
        self.backup_durable = None
        self.backup_ms = None
        self.before = None
        self.result = None


def plan(settings, links):
    """The plan apply(settings, links) will run, with the same plan_id and action_ids; touches nothing.

    Validates the links exactly as apply does (raises PolicyError naming the bad input)."""
    return _plan_of(_normalize_links(settings, links))


def _plan_of(norm):
    return Plan("apply", [Action("link", link["target"], link["source"]) for link in norm])


def _resolve_links(run, norm):
    plan = _plan_of(norm)
    by_target = dict((l["target"], l) for l in norm)
    acts = []
    try:
        for a in plan.actions:
            link = by_target[a.target]
            target = resolve_beneath(run.s.root, link["target_host"], "target %s" % link["target_host"], run.root_fd)
            try:
                sfd, sparent, sname = follow_beneath(run.root_fd, link["source"], "source %s" % link["source_host"])
            except PolicyError as e:
                target.close()
                raise PolicyError("source %s does not resolve inside root: %s; install the provider or fix the path"
                                  % (link["source_host"], e.msg))
            try:
                sst = fs.lstat_at(sfd, sname)
                if sst is None:
                    target.close()
                    raise PolicyError("source %s does not exist; install the provider first or fix links[].source"
                                      % link["source_host"])
                src_real = (sparent.rstrip("/") + "/" + sname)
                smount = _mounts.mount_status(sfd)
            finally:
                os.close(sfd)
            la = LinkAction(a, link, target, (src_real, sst, smount))
            if la.kind in ("directory", "other"):
                acts.append(la)
                raise PolicyError("target %s is a %s; only files, symlinks and absent paths can be replaced by a link"
                                  % (link["target_host"], la.kind))
            acts.append(la)
    except BaseException:
        for la in acts:
            la.target.close()
        raise
    return plan, acts


def _link_rows(run, acts):
    """Preflight rows for link actions: every gate of SPEC section 6, for real (docs/preflight.md)."""
    policy = run.policy
    ctx = pf.PreflightContext(run.s.root, run.root_fd, policy)
    aliases = pf.merged_usr_aliases(run.root_fd)
    names = {}
    for la in acts:
        names[la.link["target"]] = sorted(set(pf.path_aliases(la.link["target"], aliases)
                                              + pf.path_aliases(la.target.real_rel, aliases)))
    db = pf.package_owners(run.s.root, [n for la in acts if la.st is not None for n in names[la.link["target"]]])
    alternatives = pf.alternatives_choices(run.root_fd)
    replaced = {}
    for la in acts:
        replaced[la.link["target"]] = la.link["target"]
        replaced[la.target.real_rel] = la.link["target"]
    rescue = pf.rescue_gate(run.s.root, run.root_fd, policy, replaced) if policy.require_rescue else None
    extra = pf.probe_extra_mounts(run.root_fd, policy.extra_mount_checks)
    rows = []
    for la in acts:
        row = pf.Row(la.action.action_id, la.link["target"], "link")
        d = row.data
        d.update({"source": la.link["source"], "current_kind": la.kind, "planned_kind": "symlink",
                  "noop": la.noop, "link_text": la.link["source"]})
        pf.path_policy_gate(row, policy, la.link["target"], la.target.real_rel)
        # An already-swapped target is not written again, so only a changing one needs a writable mount.
        d["mount"] = pf.mount_gate(row, "the target directory of %s" % la.link["target"], la.target.parent_fd,
                                   not la.noop, True)
        src_real, sst, smount = la.src_info
        # The source is only linked to and executed, never written: exec is required, rw is not (docs/preflight.md).
        d["source_mount"] = pf.mount_verdict(row, "source %s of %s" % (la.link["source"], la.link["target"]), smount,
                                             False, True)
        pf.source_trust_gate(row, policy, la.link["source"], src_real, sst, run.s.root, run.root_fd)
        pf.extra_mount_gate(row, extra)
        if not la.noop:
            pf.immutable_gate(row, policy, la.target.parent_fd, la.target.name)
            pf.hazard_gates(row, policy, la.st, la.target.parent_fd, la.target.name)
            text = fs.readlink_at(la.target.parent_fd, la.target.name) if la.kind == "symlink" else None
            pf.ownership_gate(row, policy, names[la.link["target"]], la.st, db, text, alternatives)
            pf.backup_gates(row, ctx, run.store, run.s.backup_dir_rel, la.target, la.kind)
        else:
            d["immutable_detection_method"] = "not_applicable"
        pf.rescue_verdict(row, rescue, (la.link["target"],))
        la.row = row
        rows.append(row)
    return rows, rescue


def _finish_rows(run, rows):
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
        decision = "failure" if (d["stops"] and not d.get("overridden")) else ("warn" if d["warnings"] else "success")
        run.rep.event("preflight", decision, action_id=d["action_id"], path=d["path"], policy_ok=d["policy_ok"],
                      current_kind=d.get("current_kind"), planned_kind=d.get("planned_kind"),
                      stops=[s["msg"] for s in d["stops"]] or None,
                      knobs=sorted(set(s["knob"] for s in d["stops"])) or None, warnings=d["warnings"] or None)
        for w in d["warnings"]:
            run.rep.warnings.append("%s: %s" % (d["path"], w))
    warnings = sum(len(r.data["warnings"]) for r in rows)
    run.rep.event("preflight.summary", "failure" if stops else ("warn" if warnings else "success"), rows=len(rows),
                  stops=len(stops), warnings=warnings,
                  stop_paths=sorted(set(r.data["path"] for r in rows if r.data["stops"] and not r.data.get("overridden"))),
                  overridden=sum(1 for r in rows if r.data.get("overridden")))
    return [r.data for r in rows], stops


def _stop_error(stops, keep_specific=True):
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


# ---------------------------------------------------------------------------------------------

def _file_state(dir_fd, name, st=None):
    """Diff-friendly description of an entry: kind, link target, sha256, mode, owner. Never bytes."""
    st = st if st is not None else fs.lstat_at(dir_fd, name)
    kind = fs.kind_of(st)
    out = {"kind": kind}
    if st is None:
        return out
    out.update({"mode": "%04o" % stat.S_IMODE(st.st_mode), "owner": "%d:%d" % (st.st_uid, st.st_gid)})
    if kind == "symlink":
        out["link_target"] = fs.readlink_at(dir_fd, name)
    elif kind == "file":
        out["sha256"] = fs.sha256_at(dir_fd, name)
        out["size"] = st.st_size
    return out


def preflight(settings, links=None, restores=None, which="latest", fail_on_stop=True):
    """Run every gate for real, change nothing.  Returns (report, error or None)."""
    norm = _normalize_links(settings, links) if links else []
    rrels = _normalize_targets(settings, restores, "restores") if restores else []
    if not norm and not rrels:
        raise PolicyError("safe_preflight needs links and/or restores")
    actions = [Action("link", l["target"], l["source"]) for l in norm] + [Action("restore", r) for r in rrels]
    plan = Plan("preflight", actions)
    run = Run(settings, "preflight", plan.plan_id)
    run.s.check_mode = True  # preflight never mutates, whatever the task's check mode
    run.rep.dry_run = True
    acts = []
    try:
        run.rep.event("plan", actions=len(actions), preset=run.policy.preset)
        run.recover()
        rows = []
        if norm:
            _lplan, acts = _resolve_links(run, norm)
            id_map = dict((a.target, a.action_id) for a in plan.actions if a.op == "link")
            lrows, _rescue = _link_rows(run, acts)
            for r in lrows:
                r.data["action_id"] = id_map[r.data["path"]]
            rows.extend(lrows)
        for a in plan.actions:
            if a.op != "restore":
                continue
            rows.append(_restore_row(run, a, which))
        rows, stops = _finish_rows(run, rows)
        err = _stop_error(stops, keep_specific=False) if (stops and fail_on_stop) else None
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


def _restore_row(run, action, which):
    """Restore readiness: path policy, a writable target directory, a complete verified backup, nothing there that
    restore would refuse to replace, immutable flags and the preservation probe of the target directory."""
    target = resolve_beneath(run.s.root, os.path.join(run.s.root, action.target.lstrip("/")), "restores", run.root_fd)
    try:
        row = pf.Row(action.action_id, action.target, "restore")
        st = target.lstat()
        row.data["current_kind"] = fs.kind_of(st)
        pf.path_policy_gate(row, run.policy, action.target, target.real_rel)
        bdir = run.store.dir_for(target, create=False)
        scan = run.store.scan(target, bdir) if bdir is not None else bk.Scan()
        backups = scan.usable
        try:
            for r in scan.rejected:
                row.warn(r.describe())
            b = pf.restore_ready_gate(row, run.policy, backups, which)
            if b is None and scan.rejected and row.data["stops"]:
                # Name every unusable sidecar (file and field) in the STOP itself, not only in the warnings.
                row.data["stops"][-1]["msg"] += " (%s)" % "; ".join(r.describe() for r in scan.rejected)
            if b is not None:
                row.data["planned_kind"] = b.prior_kind
                row.data["noop"] = bk.target_matches_backup(target, b, run.policy.preservation_tier)
                if not row.data["noop"]:
                    # Restore writes a temp file in the target directory and renames it over the target.
                    row.data["mount"] = pf.mount_gate(row, "the target directory of %s" % action.target, target.parent_fd,
                                                      True, False)
                    pf.restore_target_gate(row, row.data["current_kind"])
                    pf.immutable_gate(row, run.policy, target.parent_fd, target.name)
                    if b.prior_kind == "file":
                        ctx = pf.PreflightContext(run.s.root, run.root_fd, run.policy)
                        pf.preservation_gate(row, ctx, [("the target directory", target.parent_fd)])
        finally:
            if bdir is not None:
                os.close(bdir)
        return row
    finally:
        target.close()


def apply(settings, links, smoke=None):
    """Preflight under the lock, journal, back up, swap, fsync, smoke; roll back on any failure."""
    norm = _normalize_links(settings, links)
    checks = _smoke.validate_checks(smoke)
    run = Run(settings, "apply", None)
    acts = []
    try:
        plan, acts = _resolve_links(run, norm)
        run.rep.plan_id = plan.plan_id
        if run.policy.smoke == "required" and checks is None:
            checks = "resolve"
        run.rep.event("plan", actions=len(acts), preset=run.policy.preset)
        try:
            run.take_lock()
        except LockingError as e:
            # Report the real wait and attempt count: nothing was touched.
            run.rep.event("apply.attempt", "failure", msg=e.msg, **run.lock_facts)
            base = {"root": settings.root, "preset": run.policy.preset, "policy": run.policy.as_dict(), "rows": [],
                    "recovery": []}
            base.update(run.lock_facts)
            return _apply_report(run, acts, base, e, [], False), e, run.rep.warnings
        run.recover()
        # Resolved above only to reject bad input before touching anything (the lock file included);
        # what another run or the recovery changed while we waited is seen only from under the lock.
        stale, acts = acts, []
        for la in stale:
            la.target.close()
        plan, acts = _resolve_links(run, norm)
        rows, _rescue = _link_rows(run, acts)
        rows, stops = _finish_rows(run, rows)
        todo = [la for la in acts if not la.noop]
        base = {"root": settings.root, "preset": run.policy.preset, "policy": run.policy.as_dict(), "rows": rows,
                "recovery": run.recovery}
        base.update(run.lock_facts)
        if stops:
            err = _stop_error(stops)
            run.rep.event("apply.attempt", "failure", msg=err.msg, **run.lock_facts)
            return _apply_report(run, acts, base, err, [], False), err, run.rep.warnings
        run.rep.event("apply.attempt", "success", actions=len(todo), **run.lock_facts)
        for la in acts:
            la.before = _file_state(la.target.parent_fd, la.target.name, la.st)
        if not todo:
            return _apply_report(run, acts, base, None, [], False), None, run.rep.warnings
        if run.s.check_mode:
            for la in todo:
                la.result = "changed"
                _apply_event(run, la, "success")
            return _apply_report(run, acts, base, None, [], False), None, run.rep.warnings
        return _commit(run, plan, acts, todo, checks, base)
    finally:
        for la in acts:
            la.target.close()
        run.rep.flush_audit_log()
        run.close()


def _apply_event(run, la, decision, msg=None):
    run.rep.event("apply.result", decision, action_id=la.action.action_id, path=la.link["target"],
                  source=la.link["source"], result=la.result, hash_alg=fs.HASH_ALG,
                  before_hash=(la.before or {}).get("sha256"),
                  backup_durable=la.backup_durable if la.backup_durable is not None else run.durability.durable, msg=msg)


def _commit(run, plan, acts, todo, checks, base):
    s = run.s
    jdir = None
    journal = None
    bdirs = {}
    try:
        now = _now_ms()
        try:
            jdir = jr.open_state_dir(run.root_fd, s.state_rel.strip("/").split("/"), create=True,
                                     durability=run.durability)
            jactions = []
            for la in todo:
                bdir = run.store.dir_for(la.target, create=True, durability=run.durability)
                bdirs[la.action.action_id] = bdir
                la.backup_ms = run.store.next_ms(la.target, bdir, now)
                jactions.append({"action_id": la.action.action_id, "target": la.link["target"],
                                 "link_text": la.link["source"], "backup_ms": la.backup_ms, "prior_kind": la.kind})
            journal = jr.Journal.begin(jdir, run.run_id, {
                "kind": "apply", "plan_id": plan.plan_id, "run_id": run.run_id, "tag": s.backup_tag, "ts_ms": now,
                "backup_dir_rel": s.backup_dir_rel, "actions": jactions}, run.durability)
        except OSError as e:
            # Nothing was swapped yet: fail the plan without touching any target.
            err = AtomicSwapError("could not write the write-ahead journal under state_dir %s: %s; nothing was changed"
                                  % (s.state_rel, e.strerror or e))
            run.rep.event("apply.result", "failure", msg=err.msg, backup_durable=run.durability.durable)
            return _apply_report(run, acts, base, err, [], False), err, run.rep.warnings
        fs.fault_point("after_journal")
        done = []
        err = None
        failed = None
        for la in todo:
            try:
                _apply_one(run, la, bdirs[la.action.action_id])
                done.append(la)
            except (SwitchyardError, OSError) as e:
                failed = la
                done.append(la)
                err = _classify(e, la)
                break
            try:
                journal.progress(la.action.action_id, "swapped")
            except OSError:
                pass  # advisory only: recovery decides from the filesystem, never from progress records
        smoke_results = []
        if err is None and checks is not None:
            smoke_results = _smoke.run_checks(s.root, checks, [l.link for l in acts],
                                              lambda rel: host_path_beneath(s.root, run.root_fd, rel))
            bad = [r for r in smoke_results if not r["ok"]]
            run.rep.event("apply.result", "failure" if bad else "success", msg="smoke checks",
                          smoke=[dict(r) for r in smoke_results])
            if bad:
                err = SmokeError("smoke check failed: %s" % "; ".join("%s: %s" % (r["name"], r["detail"]) for r in bad))
        if err is None:
            try:
                journal.finish("committed")
                return _apply_report(run, acts, base, None, [], True, smoke_results), None, run.rep.warnings
            except OSError as e:
                # Unrecorded, the commit would be rolled back by the next run anyway: do it now, and say so.
                err = AtomicSwapError("could not record the commit in journal %s: %s" % (journal.name, e.strerror or e))
        rolled = []
        if failed is not None and failed.result is None:
            failed.result = "failed"
        final = "committed"
        if run.policy.auto_rollback:
            rolled, rb_err = _rollback(run, done, bdirs)
            final = "rolled_back" if rb_err is None else "failed_rollback"
            if rb_err is not None:
                err = RestoreFailedError("%s; rollback was incomplete: %s" % (err.msg, rb_err.msg),
                                         cause_ids=err.summary_error_ids)
        try:
            if final == "committed":
                journal.finish(final, note="failure without auto_rollback")
            else:
                journal.finish(final)
        except OSError as e:
            err = err.__class__("%s; journal %s could not be marked %s (%s), so the next run will check this plan "
                                "again" % (err.msg, journal.name, final, e.strerror or e), path=err.path,
                                cause_ids=err.cause_ids)
        report = _apply_report(run, acts, base, err, rolled, True, smoke_results)
        return report, err, run.rep.warnings
    finally:
        if journal is not None:
            journal.close()
        for fd in bdirs.values():
            os.close(fd)
        if jdir is not None:
            os.close(jdir)


def _classify(e, la):
    if isinstance(e, SwitchyardError):
        return e
    if isinstance(e, fs.FsyncFailed):
        return AtomicSwapError("%s: %s (policy.require_backup_durability is true)" % (la.link["target"], e.strerror),
                               path=la.link["target"])
    return AtomicSwapError("%s: %s" % (la.link["target"], e), path=la.link["target"])


def _apply_one(run, la, bdir):
    """Back up (durably), then swap.  On failure after the backup exists, la.backup is set so the
    rollback can restore it; the failing action is rolled back like the others."""
    same = _mounts.same_mount(bdir, la.target.parent_fd)
    st = la.target.lstat()
    if (st is None) != (la.st is None) or (st is not None and (st.st_ino, st.st_dev) != (la.st.st_ino, la.st.st_dev)):
        raise AtomicSwapError("%s changed between preflight and apply; nothing was swapped for it" % la.link["target"],
                              path=la.link["target"])
    failures_before = len(run.durability.failures)
    la.backup = bk.create_backup(la.target, st, bdir, la.backup_ms, run.s.backup_tag,
                                 {"plan_id": run.rep.plan_id, "action_id": la.action.action_id}, run.policy,
                                 run.durability, run.run_id, same,
                                 known_hash=(bk.content_key(la.st), (la.before or {}).get("sha256")) if la.st else None)
    fs.symlink_replace_at(la.target.parent_fd, la.target.name, la.link["source"], run.run_id, run.durability)
    # Per action: did every fsync of *this* action's backup and swap succeed (best-effort mode records failures).
    la.backup_durable = len(run.durability.failures) == failures_before
    la.result = "changed"
    _apply_event(run, la, "success")


def _rollback(run, done, bdirs):
    """Reverse order, the failed action included.  Returns (rolled back paths, error or None)."""
    rolled, errors = [], []
    for la in reversed(done):
        try:
            if la.backup is None:
                # The target was never touched, but a half-made backup may be left: a payload hard link
                # (which would trip the hard-link gate next run), a sidecar whose directory fsync failed, temps.
                _discard_partial_backup(run, la, bdirs[la.action.action_id])
                continue
            swapped = (la.target.kind() == "symlink"
                       and fs.readlink_at(la.target.parent_fd, la.target.name) == la.link["source"])
            if swapped:
                bk.verify_backup(la.backup, run.policy)
                bk.restore_backup(la.target, la.backup, run.policy, run.durability, run.run_id, consume=True)
            else:
                bk.remove_backup(la.backup, run.durability)
            la.result = "rolled_back"
            rolled.append(la.link["target"])
            run.rep.event("rollback", "success", action_id=la.action.action_id, path=la.link["target"])
        except (SwitchyardError, OSError) as e:
            errors.append("%s: %s" % (la.link["target"], getattr(e, "msg", None) or e))
            la.result = "rollback_failed"
            run.rep.event("rollback", "failure", action_id=la.action.action_id, path=la.link["target"],
                          msg=errors[-1])
    run.rep.event("rollback.summary", "failure" if errors else "success", paths=rolled,
                  failed=len(errors))
    return rolled, (RestoreFailedError("; ".join(errors)) if errors else None)


def _apply_report(run, acts, base, err, rolled, committed, smoke_results=()):
    actions = []
    for la in acts:
        after = None
        if la.noop:
            result = "unchanged"
        else:
            result = la.result or ("skipped" if err is not None else "changed")
        if committed:
            after = _file_state(la.target.parent_fd, la.target.name)
        elif result == "changed":
            after = {"kind": "symlink", "link_target": la.link["source"], "mode": "0777", "owner": "0:0"}
        else:
            after = la.before
        a = {"action_id": la.action.action_id, "path": la.link["target"], "source": la.link["source"], "result": result,
             "hash_alg": fs.HASH_ALG, "before_hash": (la.before or {}).get("sha256"),
             "after_hash": (after or {}).get("sha256"), "before": la.before, "after": after,
             "backup_durable": la.backup_durable if la.backup is not None else None}
        if la.backup is not None and result == "changed":
            a["backup"] = la.backup.describe()
        actions.append(a)
    actions.sort(key=lambda a: (a["path"], a["action_id"]))
    if err is None:
        changed = any(a["result"] == "changed" for a in actions)
    else:
        # After a complete rollback the filesystem is as it was; anything else did change it.
        changed = any(a["result"] in ("changed", "rollback_failed") for a in actions)
    summary = {"actions": len(actions), "changed": sum(1 for a in actions if a["result"] == "changed"),
               "unchanged": sum(1 for a in actions if a["result"] == "unchanged"),
               "rolled_back": len(rolled), "backup_durable": run.durability.durable,
               "decision": "failure" if err is not None else "success"}
    if err is not None:
        summary["error_id"] = err.error_id
        summary["summary_error_ids"] = err.summary_error_ids
    report = run.rep.report(summary, actions=actions, rolled_back_paths=rolled, **base)
    report["smoke"] = list(smoke_results)
    report["changed"] = bool(changed)
    return report


def _journal_for_plan(run, plan_id):
    """The newest journal of plan_id (any state), or raise E_BACKUP_MISSING."""
    jdir = jr.open_state_dir(run.root_fd, run.s.state_rel.strip("/").split("/"), create=False)
    found = None
    if jdir is not None:
        try:
            for name, begin, later in jr.list_journals(jdir):
                if begin.get("plan_id") == plan_id and begin.get("kind") == "apply":
                    found = (name, begin, jr.final_state(later))
        finally:
            os.close(jdir)
    if found is not None:
        try:
            jr.check_begin(found[0], found[1])
        except jr.JournalInvalid as e:
            raise RestoreFailedError("%s; nothing was restored from it. Restore by targets instead" % e)
        found = found[1:]
    if found is None:
        raise BackupMissingError("no journal of plan_id %s under state_dir %s; restore by targets instead"
                                 % (plan_id, run.s.state_rel))
    return found


def restore(settings, targets=None, plan_id=None, which="latest"):
    """Restore targets from their latest/previous complete backup, or undo everything one apply did."""
    if bool(targets) == bool(plan_id):
        raise PolicyError("safe_restore needs exactly one of targets or plan_id")
    if which not in ("latest", "previous"):
        raise PolicyError("which=%r must be latest or previous" % (which,))
    run = Run(settings, "restore", None)
    prepared = []
    try:
        if plan_id:
            try:
                uuid.UUID(plan_id)
            except ValueError:
                raise PolicyError("plan_id=%r is not a UUID; use the plan_id a safe_apply returned" % (plan_id,))
            run.rep.plan_id = plan_id
            run.take_lock()
            run.recover()
            begin, state = _journal_for_plan(run, plan_id)
            items = [(a["target"], a["backup_ms"], begin["tag"]) for a in reversed(begin["actions"])]
        else:
            rels = _normalize_targets(settings, targets)
            plan = Plan("restore", [Action("restore", r) for r in rels], extra={"which": which})
            run.rep.plan_id = plan.plan_id
            run.take_lock()
            run.recover()
            items = [(a.target, None, settings.backup_tag) for a in plan.actions]
        run.rep.event("plan", actions=len(items), preset=run.policy.preset)
        results, err = [], None
        rows = []
        if not plan_id:
            # The same gates safe_preflight runs for restores, now under the lock: nothing is touched on a STOP.
            rows, stops = _finish_rows(run, [_restore_row(run, a, which) for a in plan.actions])
            if stops:
                err = _stop_error(stops)
                summary = {"targets": len(items), "changed": 0, "backup_durable": run.durability.durable,
                           "decision": "failure", "error_id": err.error_id, "summary_error_ids": err.summary_error_ids}
                rep = run.rep.report(summary, root=settings.root, preset=run.policy.preset, results=[], rows=rows,
                                     recovery=run.recovery, **run.lock_facts)
                rep["changed"] = any(r["paths"] for r in run.recovery)
                return rep, err, run.rep.warnings
        # Verify everything first: a missing or tampered backup fails before any target is touched.
        for rel, ms, tag in items:
            target = resolve_beneath(settings.root, os.path.join(settings.root, rel.lstrip("/")), "targets", run.root_fd)
            bdir = run.store.dir_for(target, create=False)
            prepared.append((target, bdir))
            store = bk.BackupStore(run.root_fd, settings.backup_dir_rel, tag)
            scan = store.scan(target, bdir) if bdir is not None else bk.Scan()
            backups = scan.usable
            if ms is not None:
                for r in scan.rejected:  # (a restore by targets reported them in its preflight rows)
                    run.rep.warnings.append("%s: %s" % (rel, r.describe()))
                bad = [r for r in scan.rejected if r.ms == ms]
                if bad:
                    raise RestoreFailedError("%s; nothing was restored" % bad[0].describe(), path=rel)
                chosen = [b for b in backups if b.ms == ms]
                if not chosen:
                    results.append({"path": rel, "result": "unchanged", "note": "backup of this plan is gone (already "
                                    "rolled back or pruned)"})
                    prepared[-1] = (target, bdir, None)
                    continue
                b = chosen[0]
            else:
                b = bk.require_backup(backups, which, target, scan.rejected)
            bk.verify_backup(b, run.policy)
            prepared[-1] = (target, bdir, b)
        run.rep.event("apply.attempt", "success", actions=len(items), **run.lock_facts)
        try:
            for entry in prepared:
                target, bdir, b = entry
                if b is None:
                    continue
                rel = target.rel
                before = _file_state(target.parent_fd, target.name)
                if bk.target_matches_backup(target, b, run.policy.preservation_tier):
                    results.append({"path": rel, "result": "unchanged", "before": before, "after": before,
                                    "backup": b.describe(), "sidecar_integrity_verified": True})
                    run.rep.event("restore", "success", path=rel, result="unchanged")
                    continue
                if target.kind() == "file":
                    raise RestoreFailedError("%s is a regular file that differs from its backup; restoring would destroy "
                                             "it. Move it away (or back it up with safe_apply) and restore again" % rel,
                                             path=rel)
                pf_row = pf.Row(None, rel, "restore")
                pf.immutable_gate(pf_row, run.policy, target.parent_fd, target.name)
                if pf_row.data["stops"]:
                    raise PolicyError("; ".join(s["msg"] for s in pf_row.data["stops"]), path=rel)
                applied = {}
                if not run.s.check_mode:
                    applied = bk.restore_backup(target, b, run.policy, run.durability, run.run_id, consume=False)
                after = _file_state(target.parent_fd, target.name) if not run.s.check_mode else {
                    "kind": b.prior_kind, "sha256": b.meta.get("payload_hash"), "link_target": b.meta.get("prior_link_target")}
                results.append({"path": rel, "result": "changed", "before": before, "after": after,
                                "backup": b.describe(), "sidecar_integrity_verified": b.meta.get("payload_hash") is not None
                                or b.prior_kind != "file", "preservation_applied": applied,
                                "hash_alg": fs.HASH_ALG, "before_hash": before.get("sha256"),
                                "after_hash": after.get("sha256")})
                run.rep.event("restore", "success", path=rel, result="changed", preservation_applied=applied or None)
        except (SwitchyardError, OSError) as e:
            err = e if isinstance(e, SwitchyardError) else RestoreFailedError(str(e))
            run.rep.event("restore", "failure", msg=err.msg)
        finally:
            _close_prepared(prepared)
        results.sort(key=lambda r: r["path"])
        changed = any(r["result"] == "changed" for r in results) or any(r["paths"] for r in run.recovery)
        summary = {"targets": len(results), "changed": sum(1 for r in results if r["result"] == "changed"),
                   "backup_durable": run.durability.durable, "decision": "failure" if err else "success",
                   "sidecar_integrity_verified": all(r.get("sidecar_integrity_verified", True) for r in results)}
        if err is not None:
            summary["error_id"] = err.error_id
            summary["summary_error_ids"] = err.summary_error_ids
        rep = run.rep.report(summary, root=settings.root, preset=run.policy.preset, results=results, rows=rows,
                             recovery=run.recovery, **run.lock_facts)
        rep["changed"] = changed
        return rep, err, run.rep.warnings
    finally:
        _close_prepared(prepared)
        run.rep.flush_audit_log()
        run.close()


def _close_prepared(prepared):
    while prepared:
        entry = prepared.pop()
        entry[0].close()
        if entry[1] is not None:
            os.close(entry[1])


def _retained(backups, count, age, now, keep_original):
    """The backups (newest first) prune keeps: the newest always; those within count and age; and, with
    keep_original, the newest one holding regular-file bytes (after file -> link -> link it is the only
    copy of the original file, however old).  Returns (kept, the one kept only for being that copy or None)."""
    keep = []
    for i, b in enumerate(backups):
        too_many = count is not None and i >= count
        too_old = age is not None and (now - b.ms) / 1000.0 > age
        if i == 0 or not (too_many or too_old):
            keep.append(b)
    if keep_original:
        newest_file = next((b for b in backups if b.prior_kind == "file"), None)
        if newest_file is not None and newest_file not in keep:
            keep.append(newest_file)
            return keep, newest_file
    return keep, None


def prune(settings, targets, retention_count=None, retention_age=None):
    """Delete old complete backups of targets; never the newest one, nor (policy.prune_keep_original) the
    newest copy of a regular file.  Also sweeps what a killed prune left: a checked sidecar whose payload is
    gone.  Never deletes a payload without sidecar (it may be the last copy) or a sidecar it cannot parse."""
    rels = _normalize_targets(settings, targets)
    count = retention_count if retention_count is not None else settings.policy.retention_count
    age = retention_age if retention_age is not None else settings.policy.retention_age
    if count is None and age is None:
        raise PolicyError("safe_prune needs retention_count and/or retention_age (or the policy knobs of the same name)")
    if count is not None and (isinstance(count, bool) or int(count) < 1):
        raise PolicyError("retention_count=%r must be >= 1 (the newest backup is always kept)" % (count,))
    plan = Plan("prune", [Action("prune", r) for r in rels], extra={"count": count, "age": age})
    run = Run(settings, "prune", plan.plan_id)
    try:
        run.take_lock()
        run.recover()
        now = _now_ms()
        results = []
        for rel in rels:
            target = resolve_beneath(settings.root, os.path.join(settings.root, rel.lstrip("/")), "targets", run.root_fd)
            try:
                bdir = run.store.dir_for(target, create=False)
                scan = run.store.scan(target, bdir) if bdir is not None else bk.Scan()
                backups = scan.usable
                keep, original = _retained(backups, count, age, now, run.policy.prune_keep_original)
                doomed = [b for b in backups if b not in keep]
                notes = []
                if original is not None:
                    notes.append("kept %s beyond retention: the newest backup holding a regular file "
                                 "(policy.prune_keep_original)" % original.payload)
                for r in scan.rejected:
                    run.rep.warnings.append("%s: %s; prune left it alone" % (rel, r.describe()))
                for _ms, name in scan.orphan_payloads:
                    run.rep.warnings.append("%s: backup payload %s has no sidecar; prune left it alone (it may be the "
                                            "last copy of an original). Restore from it or remove it by hand"
                                            % (rel, run.store.where(target, name)))
                try:
                    if not run.s.check_mode:
                        for b in doomed:
                            bk.remove_backup(b, run.durability)
                        # What a prune (or rollback) killed between its two unlinks left: a checked sidecar whose
                        # payload is gone.  Its name is ours (target, tag, ms) and it holds no bytes of anything.
                        for b in scan.incomplete:
                            fs.fault_point("before_unlink_backup")
                            fs.unlink_at(bdir, b.sidecar)
                        if scan.incomplete:
                            run.durability.fsync(bdir, "backup directory of %s" % rel)
                finally:
                    if bdir is not None:
                        os.close(bdir)
                if scan.incomplete:
                    notes.append("removed %d sidecar(s) whose payload was already gone (an interrupted prune)"
                                 % len(scan.incomplete))
                res = {"path": rel, "kept": len(backups) - len(doomed), "pruned": len(doomed),
                       "pruned_backups": [b.payload or b.sidecar for b in doomed],
                       "result": "changed" if (doomed or scan.incomplete) else "unchanged"}
                if notes:
                    res["note"] = "; ".join(notes)
                results.append(res)
            finally:
                target.close()
        pruned = sum(r["pruned"] for r in results)
        run.rep.event("prune.result", "success", pruned=pruned, targets=len(results))
        summary = {"targets": len(results), "pruned": pruned, "decision": "success",
                   "backup_durable": run.durability.durable}
        rep = run.rep.report(summary, root=settings.root, results=results, recovery=run.recovery, **run.lock_facts)
        rep["changed"] = any(r["result"] == "changed" for r in results) or any(r["paths"] for r in run.recovery)
        return rep, None, run.rep.warnings
    finally:
        run.rep.flush_audit_log()
        run.close()
