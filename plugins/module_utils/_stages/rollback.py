# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollback of a failed apply, in reverse order. Private to this collection."""

from __future__ import absolute_import, division, print_function

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup_store as bks
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk
from ansible_collections.switchyard.fs.plugins.module_utils._errors import RestoreFailedError


def _discard_partial_backup(run, o, bdir):
    """Remove what create_backup left when it failed: names reserved for this run (backup_ms) and temps."""
    tag = run.s.backup_tag
    fs.remove_dead_temps(o.target.parent_fd, o.target.name, run_id=run.run_id)
    fs.remove_dead_temps(bdir, bks.payload_name(o.target.name, tag, o.backup_ms), run_id=run.run_id)
    fs.remove_dead_temps(bdir, bks.sidecar_name(o.target.name, tag, o.backup_ms), run_id=run.run_id)
    fs.unlink_at(bdir, bks.sidecar_name(o.target.name, tag, o.backup_ms))
    fs.unlink_at(bdir, bks.payload_name(o.target.name, tag, o.backup_ms))
    run.durability.fsync(bdir, "backup directory of %s" % o.link["target"])


def rollback(run, done, bdirs):
    """Undo the outcomes done (apply's Outcome objects) in reverse order, the failed action included; each
    outcome's result says what became of it.  Returns (rolled back paths, error or None)."""
    rolled, errors = [], []
    for o in reversed(done):
        try:
            if o.backup is None:
                # The target was never touched, but a half-made backup may be left: a payload hard link
                # (which would trip the hard-link gate next run), a sidecar whose directory fsync failed, temps.
                _discard_partial_backup(run, o, bdirs[o.action.action_id])
                continue
            swapped = (o.target.kind() == "symlink"
                       and fs.readlink_at(o.target.parent_fd, o.target.name) == o.link["source"])
            if swapped:
                bk.verify_backup(o.backup, run.policy)
                bk.restore_backup(o.target, o.backup, run.policy, run.durability, run.run_id, consume=True)
            else:
                bk.remove_backup(o.backup, run.durability)
            o.result = "rolled_back"
            rolled.append(o.link["target"])
            run.events.rolled_back(o.action.action_id, o.link["target"])
        except Exception as e:  # noqa: broad-except -- one failed undo must not stop the others
            errors.append("%s: %s" % (o.link["target"], getattr(e, "msg", None) or e))
            o.result = "rollback_failed"
            run.events.rollback_failed(o.action.action_id, o.link["target"], errors[-1])
    run.events.rollback_summary(rolled, len(errors))
    return rolled, (RestoreFailedError("; ".join(errors)) if errors else None)
