# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Link actions: each link resolved beneath root, with the facts of its target and source. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import os
import stat

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts
from ansible_collections.switchyard.fs.plugins.module_utils._errors import AtomicSwapError, PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import follow_beneath, resolve_beneath
from ansible_collections.switchyard.fs.plugins.module_utils._stages.inputs import entry_key, reject_aliases


def _inspect_entry(target, label):
    """(lstat, link text or None) of one consistent state of the entry: a symlink replaced between the lstat
    and the readlink is looked at again, a few times, then reported as a clean error."""
    for _attempt in range(5):
        st = target.lstat()
        if st is None or not stat.S_ISLNK(st.st_mode):
            return st, None
        try:
            text = fs.readlink_at(target.parent_fd, target.name)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                continue
            raise
        again = target.lstat()
        if again is not None and (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino):
            return st, text
    raise AtomicSwapError("%s keeps changing while it is inspected (another process is replacing it); nothing was "
                          "done for it: retry when it is quiet" % label, path=label)


class LinkAction(object):
    """The resolved facts of one planned link, read once and never changed: its action, link, target (open
    beneath root), the target's lstat/link text/kind, whether it is already the link (noop), and the source's
    final file (in-root real path, lstat, mount status).  What apply decides and does with it is elsewhere
    (_stages.apply.Outcome)."""

    def __init__(self, action, link, target, src_info):
        self.action = action
        self.link = link
        self.target = target
        self.src_info = src_info  # (real_rel, lstat, mount status) of the source's final file
        self.st, self.link_text = _inspect_entry(target, link["target_host"])
        self.kind = fs.kind_of(self.st)
        self.noop = self.kind == "symlink" and self.link_text == link["source"]


def resolve_links(run, plan, norm):
    """Resolve every link of plan (plan_of(norm)) beneath root, in the plan's order; refuse aliased targets and
    sources that lead to a target of the plan."""
    by_target = dict((l["target"], l) for l in norm)
    links = [by_target[a.target] for a in plan.actions]
    targets = []
    acts = []
    parents = {}  # one open handle per target directory, however many targets it holds
    mounts = {}   # one mount probe per source directory
    try:
        for link in links:
            targets.append(resolve_beneath(run.s.root, link["target_host"], "target %s" % link["target_host"],
                                           run.root_fd))
            targets[-1].share_parent(parents)
        reject_aliases(targets, ["links[%d].target=%r" % (l["index"], l["target_host"]) for l in links])
        target_keys = dict((entry_key(t.parent_fd, t.name), l) for t, l in zip(targets, links))
        for a, link, target in zip(plan.actions, links, targets):
            src_real, sst, smount = _resolve_source(run, link, target_keys, mounts)
            la = LinkAction(a, link, target, (src_real, sst, smount))
            acts.append(la)
            if la.kind in ("directory", "other"):
                raise PolicyError("target %s is a %s; only files, symlinks and absent paths can be replaced by a link"
                                  % (link["target_host"], la.kind))
    except BaseException:
        for t in targets:
            t.close()
        raise
    return acts


class _SourceLoopError(PolicyError):
    """A source chain that reaches a target of its own plan."""


def dir_mount_status(cache, dir_fd):
    """_mounts.mount_status of a directory, probed once per directory inode in a run (the dict is only read)."""
    st = os.fstat(dir_fd)
    key = (st.st_dev, st.st_ino)
    if key not in cache:
        cache[key] = _mounts.mount_status(dir_fd)
    return cache[key]


def _resolve_source(run, link, target_keys, mounts=None):
    """(in-root real path, lstat, mount status) of the file the source finally resolves to.  A source whose
    chain passes through any target of the plan would make the new link point at itself (or at another
    link of the same plan): invalid input."""
    def visit(dir_fd, name):
        hit = target_keys.get(entry_key(dir_fd, name))
        if hit is not None:
            what = ("itself" if hit is link else "links[%d].target=%r, which this plan replaces"
                    % (hit["index"], hit["target_host"]))
            raise _SourceLoopError("links[%d].source=%r resolves to %s; the swap would create a link loop: point the "
                                   "source at the provider's real file" % (link["index"], link["source_host"], what))
    try:
        sfd, sparent, sname = follow_beneath(run.root_fd, link["source"], "source %s" % link["source_host"], visit)
    except _SourceLoopError:
        raise
    except PolicyError as e:
        raise PolicyError("source %s does not resolve inside root: %s; install the provider or fix the path"
                          % (link["source_host"], e.msg))
    try:
        sst = fs.lstat_at(sfd, sname)
        if sst is None:
            raise PolicyError("source %s does not exist; install the provider first or fix links[].source"
                              % link["source_host"])
        return ((sparent.rstrip("/") + "/" + sname), sst,
                dir_mount_status(mounts, sfd) if mounts is not None else _mounts.mount_status(sfd))
    finally:
        os.close(sfd)
