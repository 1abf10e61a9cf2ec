# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mount gates: the target, source and extra_mount_checks paths must be on rw/exec mounts. Private to this collection."""

from __future__ import absolute_import, division, print_function

from ansible_collections.switchyard.fs.plugins.module_utils._probes import mounts as _mounts


def mount_info(ms):
    return {"mountpoint": ms.get("mountpoint"), "fstype": ms.get("fstype"), "rw": ms.get("rw"),
            "exec": ms.get("exec"), "method": ms.get("method")}


def mount_verdict(row, subject, ms, need_rw, need_exec, knob="override_preflight", fix=None):
    """STOP when a needed rw/exec property is missing or unknown (unknown fails closed).
    `subject` names the thing and the row's path, e.g. "the target directory of /usr/bin/ls"."""
    fix = fix or "only policy.%s: true skips this gate" % knob
    where = "%s, %s" % (ms.get("mountpoint"), ms.get("fstype"))
    if not ms.get("known"):
        row.stop("%s: its mount cannot be determined (statvfs and /proc/self/mounts both failed); failing closed (%s)"
                 % (subject, fix), knob)
    else:
        if need_rw and not ms.get("rw"):
            row.stop("%s is on a read-only mount (%s); remount it read-write (%s)" % (subject, where, fix), knob)
        if need_exec and not ms.get("exec"):
            row.stop("%s is on a noexec mount (%s); remount it exec (%s)" % (subject, where, fix), knob)
    return mount_info(ms)


def mount_gate(row, subject, fd_or_path, need_rw, need_exec, knob="override_preflight", fix=None):
    return mount_verdict(row, subject, _mounts.mount_status(fd_or_path), need_rw, need_exec, knob, fix)


def extra_mount_gate(row, extra):
    """Every present extra_mount_checks path must be on a rw, exec mount; absent ones are noted, not failed."""
    infos = []
    for e in extra:
        if not e["present"]:
            row.note("extra_mount_checks path %s skipped: %s" % (e["path"], e["detail"]))
            continue
        info = mount_verdict(row, "extra_mount_checks path %s (checked for %s)" % (e["path"], row.data["path"]),
                             e["status"], True, True, "extra_mount_checks",
                             "or remove it from policy.extra_mount_checks")
        info["path"] = e["path"]
        infos.append(info)
    row.data["extra_mounts"] = infos
