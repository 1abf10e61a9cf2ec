# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollback of a failed apply, in reverse order. Private to this collection."""

from __future__ import absolute_import, division, print_function

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._errors import RestoreFailedError
from ansible_collections.switchyard.fs.plugins.module_utils._stages.recovery import _remove_temps


def _discard_partial_backup(run, la, bdir):
    """Remove what create_backup left when it failed: names reserved for this run (backup_ms) and temps."""
    tag = run.s.backup_tag
    _remove_temps(la.target.parent_fd, la.target.name, run.run_id)
    _remove_temps(bdir, bk.payload_name(la.target.name, tag, la.backup_ms), run.run_id)
    _remove_temps(bdir, bk.sidecar_name(la.target.name, tag, la.backup_ms), run.run_id)
    fs.unlink_at(bdir, bk.sidecar_name(la.target.name, tag, la.backup_ms))
    fs.unlink_at(bdir, bk.payload_name(la.target.name, tag, la.backup_ms))
    run.durability.fsync(bdir, "backup directory of %s" % la.link["target"])




def rollback(run, done, bdirs):
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
        except Exception as e:  # noqa: broad-except -- one failed undo must not stop the others
            errors.append("%s: %s" % (la.link["target"], getattr(e, "msg", None) or e))
            la.result = "rollback_failed"
            run.rep.event("rollback", "failure", action_id=la.action.action_id, path=la.link["target"],
                          msg=errors[-1])
    run.rep.event("rollback.summary", "failure" if errors else "success", paths=rolled,
                  failed=len(errors))
    return rolled, (RestoreFailedError("; ".join(errors)) if errors else None)
