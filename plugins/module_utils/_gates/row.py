# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight rows and their per-run context: the gate framework every gate writes into. Private to this collection.

Every STOP message names the row's path and says `policy.<knob>` for the knob that changes it;
docs/preflight.md lists each gate, its message and its knob (a test checks both)."""

from __future__ import absolute_import, division, print_function

import os

from ansible_collections.switchyard.fs.plugins.module_utils._probes import preservation as ppres


def under(path, prefixes):
    """The first of `prefixes` that `path` is at or below, or None."""
    for p in prefixes:
        p = p.rstrip("/") or "/"
        if p == "/" or path == p or path.startswith(p + "/"):
            return p
    return None


class Row(object):
    """One preflight row.  stop()/warn()/note() record findings; hazard() honours a stop|warn|allow knob value."""

    def __init__(self, action_id, path, op):
        self.data = {"action_id": action_id, "path": path, "op": op, "policy_ok": True, "notes": [],
                     "stops": [], "warnings": []}

    def stop(self, msg, knob, error_id="E_POLICY"):
        self.data["policy_ok"] = False
        self.data["stops"].append({"msg": msg, "knob": knob, "error_id": error_id})

    def warn(self, msg):
        self.data["warnings"].append(msg)

    def note(self, msg):
        self.data["notes"].append(msg)

    def hazard(self, level, msg, knob, error_id="E_POLICY"):
        """stop: a STOP; warn: a warning; allow: silent (only a note in the row, no warning)."""
        if level == "stop":
            self.stop("%s (set policy.%s: warn or allow to proceed)" % (msg, knob), knob, error_id)
        elif level == "warn":
            self.warn(msg)
        else:
            self.note(msg)


class PreflightContext(object):
    """Per-run caches: one preservation probe per directory."""

    def __init__(self, root, root_fd, policy):
        self.root = root
        self.root_fd = root_fd
        self.policy = policy
        self._pres = {}

    def preservation_probe(self, dir_fd):
        st = os.fstat(dir_fd)
        key = (st.st_dev, st.st_ino)
        if key not in self._pres:
            self._pres[key] = ppres.probe_capabilities(dir_fd, self.policy.preservation_tier)
        return self._pres[key]
