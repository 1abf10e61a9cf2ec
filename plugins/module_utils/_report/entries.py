# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compact form of a report's entries (docs/facts.md "Compact form"): plan-level facts, derived fields. Private to this collection."""

from __future__ import absolute_import, division, print_function

import json

# The compact report (schema_version 2, docs/facts.md "Compact form").
#
# One entry per action (preflight: rows, apply: actions, restore/prune: results).  What every entry would repeat
# is said once in report["plan"]; what an entry can derive from its own fields is left out; per-action events
# reference their entry ("a") instead of repeating it.  Every elision is checked to be exact when it is made,
# so expand_entries / expand_events give back exactly the verbose facts and the audit events the host wrote.

ENTRY_KEYS = {"preflight": "rows", "apply": "actions", "restore": "results", "prune": "results"}
# Entry keys that move to report["plan"] when (most) entries agree on them.
COMMON_KEYS = ("op", "policy_ok", "current_kind", "planned_kind", "noop", "mount", "source_mount", "extra_mounts",
               "source_trusted", "immutable_detection_method", "immutable_check", "provenance", "backup_same_fs",
               "preservation", "preservation_supported", "restore_ready", "rescue", "hash_alg", "backup_durable",
               "swap_method", "sidecar_integrity_verified", "preservation_applied", "note")
# Entry dicts whose fields move to report["plan"][key] when every one of them has the field and most agree.
NESTED_COMMON_KEYS = ("before", "after", "backup")
MOUNT_KEYS = ("mount", "source_mount")
MISSING = object()


def _kind(x):
    if x is None or isinstance(x, bool):
        return x  # None, True, False: their own kind (True is not 1)
    for t in (str, int, float, dict, list):
        if isinstance(x, t):
            return t
    return type(x)


_PLAIN = (str, int, float, bool, type(None))


def same(a, b):
    """JSON equality: equal values of the same JSON type (1 is not 1.0 nor true)."""
    ta = type(a)
    if ta is type(b):  # the usual case: both plain JSON values of one type, compared without _kind
        if ta is dict:
            return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items())
        if ta is list:
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if ta in _PLAIN:
            return a == b
    if a is MISSING or b is MISSING or _kind(a) is not _kind(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def json_copy(value):
    return json.loads(json.dumps(value))


def _plain_link(entry):
    return {"kind": "symlink", "link_target": entry.get("source"), "mode": "0777", "owner": "0:0"}


def _derive_after(stage, entry):
    if stage != "apply" or "result" not in entry:
        return MISSING
    if entry["result"] == "changed":
        return _plain_link(entry)
    return entry.get("before", MISSING)


def _derive_sidecar(entry):
    name = entry.get("backup", {}).get("backup_name")
    if not isinstance(name, str):
        return MISSING
    return name if name.endswith(".meta.json") else name + ".meta.json"


def _derive_prior_kind(entry):
    before = entry.get("before")
    return before.get("kind") if isinstance(before, dict) else "absent"


def _derive_before_sha(entry):
    return entry.get("before_hash") if entry.get("before_hash") is not None else MISSING


def _derive_after_hash(entry):
    after = entry.get("after")
    return after.get("sha256") if isinstance(after, dict) else None


# (container or None, key, derive(stage, entry)).  expand applies them in this order, compact in reverse, so
# each rule sees exactly the fields the other side sees.
_RULES = (
    (None, "notes", lambda st, e: [] if "policy_ok" in e else MISSING),
    (None, "stops", lambda st, e: [] if "policy_ok" in e else MISSING),
    (None, "warnings", lambda st, e: [] if "policy_ok" in e else MISSING),
    (None, "link_text", lambda st, e: e.get("source", MISSING)),
    ("before", "sha256", lambda st, e: _derive_before_sha(e)),
    (None, "after", _derive_after),
    (None, "after_hash", lambda st, e: _derive_after_hash(e) if "result" in e and "hash_alg" in e else MISSING),
    ("backup", "sidecar", lambda st, e: _derive_sidecar(e)),
    ("backup", "prior_kind", lambda st, e: _derive_prior_kind(e)),
    ("backup", "payload_hash", lambda st, e: e.get("before_hash", MISSING)),
)


def _key(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return (_kind(value), value)


def _majority(values):
    """(value, count) of the most frequent value (first seen wins a tie)."""
    values = list(values)
    if not values:
        return MISSING, 0
    if all(same(v, values[0]) for v in values):
        return values[0], len(values)  # the usual case, without serialising every value
    counts, first = {}, {}
    for v in values:
        k = _key(v)
        if k in counts:
            counts[k] += 1
        else:
            counts[k], first[k] = 1, (len(first), v)  # first-seen order, for the tie
    best = max(counts, key=lambda k: (counts[k], -first[k][0]))
    return first[best][1], counts[best]


def _rule_name(container, key):
    return key if container is None else "%s.%s" % (container, key)


def _compact_entry_rules(stage, entry):
    absent = []
    for container, key, derive in reversed(_RULES):
        holder = entry if container is None else entry.get(container)
        if not isinstance(holder, dict):
            continue
        if key not in holder:
            if derive(stage, entry) is not MISSING:
                absent.append(_rule_name(container, key))  # expand would invent it: say it is not there
        elif same(holder[key], derive(stage, entry)):
            del holder[key]
    if absent:
        entry["absent"] = sorted(absent)


def _expand_entry_rules(stage, entry, absent):
    for container, key, derive in _RULES:
        holder = entry if container is None else entry.get(container)
        if not isinstance(holder, dict) or key in holder or _rule_name(container, key) in absent:
            continue
        value = derive(stage, entry)
        if value is not MISSING:
            holder[key] = value  # shared here; expand_entries returns a copy


def _own_nested(entry):
    """The entry with its own copies of before/after/backup: compaction deletes fields from them, and the same
    dicts may be held by an audit event or by the caller."""
    for k in NESTED_COMMON_KEYS:
        if isinstance(entry.get(k), dict):
            entry[k] = dict(entry[k])
    return entry


def _compact_entry(stage, entry):
    if "absent" in entry:
        raise ValueError("an entry may not have a key named 'absent'")
    _compact_entry_rules(stage, entry)
    return entry


def _compact_plan(entries):
    plan = {}
    mounts = {}
    for e in entries:
        for k in MOUNT_KEYS:
            m = e.get(k)
            if not isinstance(m, dict) or not isinstance(m.get("mountpoint"), str):
                continue
            info = dict((f, v) for f, v in m.items() if f != "mountpoint")
            known = mounts.setdefault(m["mountpoint"], info)
            if same(known, info):
                e[k] = m["mountpoint"]
    if mounts:
        plan["mounts"] = mounts
    for k in NESTED_COMMON_KEYS:
        dicts = [e[k] for e in entries if isinstance(e.get(k), dict)]
        fields = set()
        for d in dicts:
            fields.update(d)
        common = {}
        for f in sorted(fields):
            if not all(f in d for d in dicts):
                continue
            value, count = _majority(d[f] for d in dicts)
            if count >= 2:
                common[f] = value
                for d in dicts:
                    if same(d[f], value):
                        del d[f]
        if common:
            plan[k] = common
    for k in COMMON_KEYS:
        having = [e for e in entries if k in e]
        value, count = _majority(e[k] for e in having)
        if count < 2 or count <= len(entries) - len(having):
            continue
        plan[k] = value
        for e in entries:
            if k not in e:
                e["absent"] = sorted(e.get("absent", []) + [k])
            elif same(e[k], value):
                del e[k]
    return plan


def compact_entries(stage, entries):
    """(compacted entries, plan-level facts) of a verbose entry list.  The entry dicts are compacted in place (the
    caller hands them over; a copy of every entry doubled the report's peak memory); their before/after/backup
    are copied first, as other holders may share them."""
    compacted = [_compact_entry(stage, _own_nested(e)) for e in entries]
    return compacted, _compact_plan(compacted)


def expand_entries(rep):
    """The report's entries (rows, actions or results) with every field spelled out: a new list."""
    key = ENTRY_KEYS.get(rep.get("stage"))
    entries = rep.get(key) if key else None
    if not isinstance(entries, list):
        return []
    plan = rep.get("plan") or {}
    mounts = plan.get("mounts") or {}
    out = []
    for e in json_copy(entries):
        absent = e.pop("absent", [])
        for k in COMMON_KEYS:
            if k in plan and k not in e and k not in absent:
                e[k] = plan[k]
        for k in NESTED_COMMON_KEYS:
            if isinstance(e.get(k), dict):
                for f, v in (plan.get(k) or {}).items():
                    e[k].setdefault(f, v)
        for k in MOUNT_KEYS:
            if isinstance(e.get(k), str) and e[k] in mounts:
                m = {"mountpoint": e[k]}
                m.update(mounts[e[k]])
                e[k] = m
        _expand_entry_rules(rep["stage"], e, absent)
        out.append(e)
    return json_copy(out)
