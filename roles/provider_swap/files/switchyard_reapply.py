# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""switchyard.fs apt hook runner: re-apply this host's last committed swap after dpkg ran.

Installed by the switchyard.fs.provider_swap role (provider_swap_apt_hook: true) as
<dir>/reapply.py, next to plan.json (the committed links and settings, written by the role) and
a copy of the collection's engine (<dir>/ansible_collections/switchyard/fs/plugins/module_utils,
copied from the collection, never edited by hand). /etc/apt/apt.conf.d/80switchyard-reapply runs
it from DPkg::Post-Invoke, so a package that wrote its files over swapped links (apt-get install
--reinstall coreutils, an upgrade) is swapped back, with a backup of the bytes it wrote.

Standard library only; no Ansible on the host. It takes the same lock as the modules (the
engine's apply does), runs the same preflight gates and smoke checks, and rolls back on failure.
It never fails dpkg: every outcome is one JSON line in the log file (--log PATH, given by the
apt.conf.d snippet so that even a refused plan is logged where the operator looks); a re-swap or a
failure also prints one line on stderr (apt shows it); the exit status is 0 unless --strict is given.

    python3 -I -S reapply.py [--log PATH] [--strict]
"""
from __future__ import absolute_import, division, print_function

import json
import os
import stat
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
PLAN = "plan.json"
DEFAULT_LOG = "/var/log/switchyard/apt-hook.log"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Refused(Exception):
    pass


def _check_owner(st, what):
    """Root-owned and writable by root only: anything else may have been written by someone less trusted."""
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise Refused("%s is owned by uid %d with mode %04o; it must be owned by root and not group/world "
                      "writable (re-run the role with provider_swap_apt_hook: true to reinstall it)"
                      % (what, st.st_uid, stat.S_IMODE(st.st_mode)))


def _check_tree(top):
    """Every directory and file the runner reads or imports, without following symlinks."""
    for dirpath, dirnames, filenames in os.walk(top):
        _check_owner(os.lstat(dirpath), dirpath)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise Refused("%s is a symlink; the runner's files must be plain files" % path)
            _check_owner(st, path)


def read_plan(here):
    for d in (os.path.dirname(here), here):
        _check_owner(os.lstat(d), d)
    _check_tree(here)
    fd = os.open(os.path.join(here, PLAN), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "r") as f:
        plan = json.load(f)
    if not isinstance(plan, dict) or not isinstance(plan.get("links"), list) or not isinstance(plan.get("settings"), dict):
        raise Refused("%s has no links list and settings object" % os.path.join(here, PLAN))
    return plan


def write_log(path, entry):
    """One JSON line per run, appended; the directory is created root-only."""
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d, 0o750)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o640)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def reapply(plan, here):
    sys.path.insert(0, here)
    from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply
    from ansible_collections.switchyard.fs.plugins.module_utils._report.entries import expand_entries

    settings = Settings(**plan["settings"])
    report, err, warnings = apply(settings, plan["links"], smoke=plan.get("smoke"))
    actions = expand_entries(report)  # the report is compact (docs/facts.md)
    entry = {
        "plan_id": report.get("plan_id"),
        "recorded_plan_id": plan.get("plan_id"),
        "run_id": report.get("run_id"),
        "changed": [a["path"] for a in actions if a["result"] == "changed"],
        "unchanged": sum(1 for a in actions if a["result"] == "unchanged"),
        "backups": dict((a["path"], {"backup_name": a["backup"].get("backup_name"),
                                     "payload_hash": a["backup"].get("payload_hash")})
                        for a in actions if isinstance(a.get("backup"), dict)),
        "smoke": ["%s: %s" % (c.get("name"), "ok" if c.get("ok") else c.get("detail")) for c in report.get("smoke", [])],
        "rolled_back": report.get("rolled_back_paths", []),
        "warnings": list(warnings),
        "decision": "failure" if err is not None else "success",
    }
    if err is not None:
        entry.update(error_id=err.error_id, msg=err.msg)
    return entry


def main(argv):
    strict = "--strict" in argv
    log = DEFAULT_LOG
    if "--log" in argv and argv.index("--log") + 1 < len(argv):
        log = argv[argv.index("--log") + 1]
    here = HERE
    t0 = time.time()
    entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "pid": os.getpid(), "runner": __file__}
    os.environ["PATH"] = SAFE_PATH
    os.environ["LC_ALL"] = "C"
    try:
        plan = read_plan(here)
        entry.update(reapply(plan, here))
    except Refused as e:
        entry.update(decision="refused", error_id="E_POLICY", msg=str(e))
    except Exception as e:  # noqa: broad-except -- a hook must never break dpkg; the trace goes to the log
        entry.update(decision="error", error_id=getattr(e, "error_id", "E_INTERNAL"), msg=getattr(e, "msg", None) or str(e),
                     trace=traceback.format_exc())
    entry["duration_ms"] = int((time.time() - t0) * 1000)
    try:
        write_log(log, entry)
    except OSError as e:
        sys.stderr.write("switchyard apt hook: cannot write the log %s: %s\n" % (log, e))
    if entry["decision"] != "success":
        sys.stderr.write("switchyard apt hook: re-apply %s (%s): %s; see %s\n"
                         % (entry["decision"], entry.get("error_id"), entry.get("msg", "")[:300], log))
        return 1 if strict else 0
    if entry["changed"]:
        sys.stderr.write("switchyard apt hook: swapped %d target(s) back to plan %s (%s); backups of the files the "
                         "package wrote are kept; see %s\n"
                         % (len(entry["changed"]), entry["plan_id"], " ".join(entry["changed"][:10]), log))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
