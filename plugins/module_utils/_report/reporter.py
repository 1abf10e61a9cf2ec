# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Reporter: collects the events of one module run, builds its report, writes audit_log. Private to this collection."""

from __future__ import absolute_import, division, print_function

import datetime
import json
import os

from ansible_collections.switchyard.fs.plugins.module_utils._errors import SwitchyardError
from ansible_collections.switchyard.fs.plugins.module_utils._report.entries import expand_entries
from ansible_collections.switchyard.fs.plugins.module_utils._report.events import compact_event, compact_report, event_id

SCHEMA_VERSION = 2
COLLECTION_VERSION = "0.2.0"
# The stage of the event that says a run's audit log could not be written: the run's own closing stage.
CLOSING_STAGE = {"preflight": "preflight.summary", "apply": "apply.result", "restore": "restore",
                 "prune": "prune.result"}


def utc_ts():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Reporter(object):
    """Collects the events of one module run and builds its report."""

    def __init__(self, stage, plan_id, run_id, dry_run, audit_log=None, audit_open=None):
        """audit_log names the host file (messages only); audit_open() returns an fd open on it for appending."""
        self.stage = stage
        self.plan_id = plan_id
        self.run_id = run_id
        self.dry_run = dry_run
        self.events = []
        self.warnings = []
        self.audit_log = audit_log
        self.audit_open = audit_open
        self._built = None  # the last report built: events added later (audit_log trouble) are appended to it

    def event(self, stage, decision="success", **fields):
        ev = {
            "schema_version": SCHEMA_VERSION,
            "collection_version": COLLECTION_VERSION,
            "ts": utc_ts(),
            "plan_id": self.plan_id,
            "run_id": self.run_id,
            "event_id": event_id(self.run_id, len(self.events)),
            "seq": len(self.events),
            "stage": stage,
            "decision": decision,
            "dry_run": self.dry_run,
        }
        for k, v in fields.items():
            if v is not None:
                ev[k] = v
        self.events.append(ev)
        if self._built is not None:
            self._built["events"].append(compact_event(ev, self._built, expand_entries(self._built)))
        if decision == "warn" and fields.get("msg"):
            self.warnings.append(fields["msg"])
        return ev

    def report(self, summary, **sections):
        rep = {
            "schema_version": SCHEMA_VERSION,
            "collection_version": COLLECTION_VERSION,
            "stage": self.stage,
            "plan_id": self.plan_id,
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "ts": utc_ts(),
            "summary": summary,
        }
        rep.update(sections)
        rep["events"] = self.events
        compact_report(rep)
        self._built = rep
        return rep

    def flush_audit_log(self):
        """Append every event as one JSON line to audit_log on the host, fsynced.

        Never raises: the run's result (a committed apply included) stands whatever happens to its log.  A
        failure (EISDIR, ENOSPC, EACCES, a planted symlink...) becomes a warn event in the report and a module
        warning."""
        if not self.audit_log or not self.events:
            return
        payload = "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.events).encode("utf-8")
        count = len(self.events)
        fd = None
        try:
            if self.audit_open is None:
                raise SwitchyardError("no way to open it beneath root was given")
            fd = self.audit_open()
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except (OSError, SwitchyardError) as e:
            reason = e.msg if isinstance(e, SwitchyardError) else "%s (errno %s)" % (e.strerror or e, e.errno)
            torn = " (the log may end in a partial line)" if fd is not None else ""
            self.event(CLOSING_STAGE.get(self.stage, self.stage), "warn", audit_log=self.audit_log,
                       msg="audit_log %s: %d event(s) of this run were not written%s: %s"
                           % (self.audit_log, count, torn, reason))
