# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reports (ansible_facts.switchyard_<stage>) and their audit events. Private to this collection."""

from __future__ import absolute_import, division, print_function

import datetime
import json
import os
import uuid

SCHEMA_VERSION = 1
COLLECTION_VERSION = "0.1.0"


def utc_ts():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Reporter(object):
    """Collects the events of one module run and builds its report."""

    def __init__(self, stage, plan_id, run_id, dry_run, audit_log=None, durability=None):
        self.stage = stage
        self.plan_id = plan_id
        self.run_id = run_id
        self.dry_run = dry_run
        self.events = []
        self.warnings = []
        self.audit_log = audit_log
        self.durability = durability

    def event(self, stage, decision="success", **fields):
        ev = {
            "schema_version": SCHEMA_VERSION,
            "collection_version": COLLECTION_VERSION,
            "ts": utc_ts(),
            "plan_id": self.plan_id,
            "run_id": self.run_id,
            "event_id": str(uuid.uuid4()),
            "seq": len(self.events),
            "stage": stage,
            "decision": decision,
            "dry_run": self.dry_run,
        }
        for k, v in fields.items():
            if v is not None:
                ev[k] = v
        self.events.append(ev)
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
        return rep

    def flush_audit_log(self):
        """Append every event as one JSON line to audit_log on the host, fsynced."""
        if not self.audit_log or not self.events:
            return
        parent = os.path.dirname(self.audit_log)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        fd = os.open(self.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            payload = "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.events).encode("utf-8")
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
