# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inputs: Settings, link and target normalisation, alias and name-budget checks, plans. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup_store as bks
from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._plan import Action, Plan
from ansible_collections.switchyard.fs.plugins.module_utils._policy import resolve_policy
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import NAME_MAX, normalize_root, relative_to_root, resolve_beneath
from ansible_collections.switchyard.fs.plugins.module_utils._fs.sidepath import side_path


SIDE_KINDS = ("restore", "prune")


class Settings(object):
    """The options every module shares, validated before anything is touched (check_mode is only read)."""

    def __init__(self, root="/", preset="default", policy=None, lock_path=None, lock_timeout=5.0, state_dir=None,
                 backup_tag="switchyard", audit_log=None, check_mode=False):
        self.root = normalize_root(root)
        self.policy = resolve_policy(preset or "default", policy or {})
        # Side paths (docs/security.md "Side paths"): inside root, or outside only when the knob says so.
        outside = self.policy.allow_side_paths_outside_root
        self.lock_path = lock_path or os.path.join(self.root, "run/lock/switchyard.lock")
        self.lock_side = side_path(self.root, self.lock_path, "lock_path", outside)
        if lock_timeout is None or lock_timeout < 0:
            raise PolicyError("lock_timeout=%r must be a number of seconds >= 0" % (lock_timeout,))
        self.lock_timeout = float(lock_timeout)
        self.state_side = side_path(self.root, state_dir or os.path.join(self.root, "var/lib/switchyard"), "state_dir",
                                    outside)
        self.state_rel = self.state_side.rel
        self.backup_tag = backup_tag
        bks.BackupStore(None, None, backup_tag)  # validates the tag
        self.audit_log = audit_log
        self.audit_side = side_path(self.root, audit_log, "audit_log", outside) if audit_log else None
        self.check_mode = check_mode
        self.backup_dir_rel = None
        if self.policy.backup_dir:
            self.backup_dir_rel = relative_to_root(self.root, os.path.join(self.root, self.policy.backup_dir.lstrip("/")),
                                                   "policy.backup_dir")


# Input validation: everything fails with E_POLICY before anything is touched.

def normalize_links(settings, links):
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
        _check_backup_name_budget(settings, trel, "links[%d].target" % i, link["target"])
        seen[trel] = i
        out.append({"target": trel, "source": srel, "target_host": link["target"], "source_host": link["source"],
                    "index": i})
    return out


def _check_backup_name_budget(settings, rel, option, given):
    """The longest name a run derives from a target (the temp name of its sidecar) must fit in one component:
    a name that cannot work is refused here, not discovered halfway through an apply."""
    name = rel.rsplit("/", 1)[-1]
    longest = fs.temp_name(bks.sidecar_name(name, settings.backup_tag, 10 ** 14), "0" * 36)
    if len(os.fsencode(longest)) > NAME_MAX:
        raise PolicyError("%s=%r: its backup and temp names would be %d bytes, over the %d-byte limit of a file name; "
                          "use a shorter backup_tag (now %r) or a shorter file name"
                          % (option, given, len(os.fsencode(longest)), NAME_MAX, settings.backup_tag))


def reject_aliases(resolved, labels):
    """Two inputs naming one directory entry (however spelled: /bin/ls and /usr/bin/ls on a merged-/usr root)
    are one target: refuse the plan, naming both.  Identity is (parent dev, parent inode, name)."""
    seen = {}
    for r, label in zip(resolved, labels):
        key = entry_key(r.parent_fd, r.name)
        if key in seen:
            raise PolicyError("%s and %s name the same file (%s); list each target once"
                              % (seen[key], label, r.real_rel))
        seen[key] = label


def check_target_aliases(run, rels, option):
    """Refuse restore/prune targets that name one entry twice (before the lock, before anything is touched)."""
    resolved = []
    try:
        for i, rel in enumerate(rels):
            resolved.append(resolve_beneath(run.s.root, os.path.join(run.s.root, rel.lstrip("/")),
                                            "%s[%d]" % (option, i), run.root_fd))
        reject_aliases(resolved, ["%s[%d]=%r" % (option, i, os.path.join(run.s.root, rel.lstrip("/")))
                                  for i, rel in enumerate(rels)])
    finally:
        for r in resolved:
            r.close()


def entry_key(dir_fd, name):
    st = os.fstat(dir_fd)
    return (st.st_dev, st.st_ino, name)


def normalize_targets(settings, targets, option="targets"):
    if not isinstance(targets, list) or not targets:
        raise PolicyError("%s must be a non-empty list of paths" % option)
    rels, seen = [], set()
    for i, t in enumerate(targets):
        rel = relative_to_root(settings.root, t, "%s[%d]" % (option, i))
        _check_backup_name_budget(settings, rel, "%s[%d]" % (option, i), t)
        if rel in seen:
            raise PolicyError("%s[%d]=%r is listed twice" % (option, i, t))
        seen.add(rel)
        rels.append(rel)
    return rels


def plan(settings, links):
    """The plan apply(settings, links) will run, with the same plan_id and action_ids; touches nothing.

    Validates the links exactly as apply does (raises PolicyError naming the bad input)."""
    return plan_of(normalize_links(settings, links))


def plan_of(norm):
    return Plan("apply", [Action("link", link["target"], link["source"]) for link in norm])


def restore_plan(rels, which):
    """The plan of safe_restore targets=rels which=which; safe_preflight restores=... uses the same ids."""
    return Plan("restore", [Action("restore", r) for r in rels], extra={"which": which})
