# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plans and their deterministic ids (UUIDv5 over the normalised plan). Private to this collection."""

from __future__ import absolute_import, division, print_function

import json
import uuid

# Fixed namespace: the same normalised plan gets the same ids on every host, forever.
PLAN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://galaxy.ansible.com/switchyard/fs/plan")


def _canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class Action(object):
    """One planned step.  `target`/`source` are in-root paths ('/usr/bin/ls')."""

    def __init__(self, op, target, source=None):
        self.op = op
        self.target = target
        self.source = source
        self.action_id = None

    def key(self):
        d = {"op": self.op, "target": self.target}
        if self.source is not None:
            d["source"] = self.source
        return d


class Plan(object):
    def __init__(self, kind, actions, extra=None):
        self.kind = kind
        # Stable order: by target path, then op; ids do not depend on the order the user wrote.
        self.actions = sorted(actions, key=lambda a: (a.target, a.op, a.source or ""))
        body = {"kind": kind, "actions": [a.key() for a in self.actions]}
        if extra:
            body["extra"] = extra
        self.plan_id = str(uuid.uuid5(PLAN_NAMESPACE, _canonical(body)))
        ns = uuid.UUID(self.plan_id)
        for a in self.actions:
            a.action_id = str(uuid.uuid5(ns, _canonical(a.key())))
