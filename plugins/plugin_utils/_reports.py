# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of the report: schema validation, compact entries and events spelled out, redaction. Private to this collection."""

from __future__ import absolute_import, division, print_function

import copy
import json
import os

from ansible_collections.switchyard.fs.plugins.module_utils._report import entries as _rentries, events as _revents

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "schemas", "report.schema.json")

_VALIDATOR = None


def load_schema():
    with open(SCHEMA_PATH) as f:
        return json.load(f)


def _validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema  # controller-only dependency, imported lazily so the error can say how to install it
        schema = load_schema()
        cls = jsonschema.validators.validator_for(schema)
        # No check_schema here: the schema ships with the collection and a unit test checks it against its
        # metaschema; checking it in every task's worker process cost more than validating a 200-link report.
        # The same schema with its local $refs written out: resolving a $ref per field per entry costs more
        # than checking the field (a 200-link report validates in a few ms instead of tens).
        _VALIDATOR = cls(_inline_refs(schema, schema))
    return _VALIDATOR


def _resolve(schema, ref):
    node = schema
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _inline_refs(node, schema, depth=0):
    """node with every local "$ref" replaced by its target (the schema is not recursive; depth guards that)."""
    if depth > 50:
        raise ValueError("report schema: $ref nesting too deep (a recursive $ref?)")
    if isinstance(node, list):
        return [_inline_refs(v, schema, depth) for v in node]
    if not isinstance(node, dict):
        return node
    out = dict((k, _inline_refs(v, schema, depth)) for k, v in node.items() if k != "$ref")
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target = _inline_refs(_resolve(schema, ref), schema, depth + 1)
        if any(k in out for k in target):
            out = {"allOf": [out, target]}
        else:
            out.update(target)
    elif ref is not None:
        out["$ref"] = ref
    return out


def ensure_validator():
    """Load jsonschema and the schema now; raises ImportError when jsonschema is missing on the controller."""
    _validator()


def preload_validator():
    """ensure_validator() where a missing jsonschema is not an error yet: the action plugin calls this when
    ansible-playbook first loads it, so the task reports a missing jsonschema later, with its own message."""
    try:
        _validator()
    except ImportError:
        pass


def validation_errors(report):
    """Every schema violation of a report, as 'path: message' strings (empty when valid)."""
    errs = sorted(_validator().iter_errors(report), key=lambda e: list(e.absolute_path))
    return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(report)", e.message) for e in errs]


# Keys whose values differ between a check-mode run and a commit of the same plan on the same host.
REMOVED_KEYS = frozenset((
    "run_id", "event_id", "dry_run", "lock_wait_ms", "lock_attempts", "lock_backend",
    "before_hash", "after_hash", "payload_hash", "sha256", "backup", "backup_durable", "duration_ms",
    "created_ms", "recovered_run_id", "mode", "owner", "after",
    # Compact events: when each event happened (offset from the report's ts, and the gaps of a group).
    "dt_us", "gaps_us",
    # Smoke checks run only when the swap is committed: their results and the event carrying them.
    "smoke",
    # Which rename flag the filesystem accepted is known only once the rename ran.
    "swap_method",
))
ZEROED_KEYS = frozenset(("ts",))
ZERO_TS = "1970-01-01T00:00:00.000000Z"


def _is_commit_only_event(value):
    # An event (compact or full), not the report (which has a stage and smoke results too).
    return isinstance(value, dict) and "stage" in value and "smoke" in value and "summary" not in value


def expand_events(report):
    """A report's events exactly as the host wrote them to its audit_log: every envelope field, event_id, seq,
    ts, and every field an event shares with its entry (docs/facts.md "Events").  A new list."""
    return _revents.expand_events(report)


def entries(report):
    """A report's entries (rows, actions or results) with the plan-level and derived fields written out."""
    return _rentries.expand_entries(report)


def redact(value):
    """Timestamps zeroed; durations, hashes, ids of runs/events and commit-only details removed."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in REMOVED_KEYS:
                continue
            out[k] = ZERO_TS if k in ZEROED_KEYS else redact(v)
        return out
    if isinstance(value, list):
        return [redact(v) for v in value if not _is_commit_only_event(v)]
    return copy.deepcopy(value)
