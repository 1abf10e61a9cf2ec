# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reports (ansible_facts.switchyard_<stage>) and their audit events. Private to this collection."""

from __future__ import absolute_import, division, print_function

import datetime
import json
import os
import uuid

from ansible_collections.switchyard.fs.plugins.module_utils._errors import SwitchyardError

SCHEMA_VERSION = 2
COLLECTION_VERSION = "0.2.0"
# The stage of the event that says a run's audit log could not be written: the run's own closing stage.
CLOSING_STAGE = {"preflight": "preflight.summary", "apply": "apply.result", "restore": "restore",
                 "prune": "prune.result"}


def utc_ts():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Reporter(object):
    """Collects the events of one module run and builds its report."""

    def __init__(self, stage, plan_id, run_id, dry_run, audit_log=None, durability=None, audit_open=None):
        """audit_log names the host file (messages only); audit_open() returns an fd open on it for appending."""
        self.stage = stage
        self.plan_id = plan_id
        self.run_id = run_id
        self.dry_run = dry_run
        self.events = []
        self.warnings = []
        self.audit_log = audit_log
        self.audit_open = audit_open
        self.durability = durability
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


# ---------------------------------------------------------------------------------------------
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
ENVELOPE_KEYS = ("schema_version", "collection_version", "plan_id", "run_id", "dry_run")
# The entry fields each per-action event repeats (the same names in the event).
EVENT_FIELDS = {"preflight": ("action_id", "path", "policy_ok", "current_kind", "planned_kind"),
                "apply.result": ("action_id", "path", "source", "result", "hash_alg", "before_hash"),
                "rollback": ("action_id", "path"),
                "restore": ("path", "result", "preservation_applied")}
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_MISSING = object()


def event_id(run_id, seq):
    """Event ids are derived: the same run and sequence number always give the same id."""
    return str(uuid.uuid5(uuid.UUID(run_id), "event/%d" % seq))


def _kind(x):
    if x is None or isinstance(x, bool):
        return x  # None, True, False: their own kind (True is not 1)
    for t in (str, int, float, dict, list):
        if isinstance(x, t):
            return t
    return type(x)


def _same(a, b):
    """JSON equality: equal values of the same JSON type (1 is not 1.0 nor true)."""
    if a is _MISSING or b is _MISSING or _kind(a) is not _kind(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and _same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _copy(value):
    return json.loads(json.dumps(value))


def _plain_link(entry):
    return {"kind": "symlink", "link_target": entry.get("source"), "mode": "0777", "owner": "0:0"}


def _derive_after(stage, entry):
    if stage != "apply" or "result" not in entry:
        return _MISSING
    if entry["result"] == "changed":
        return _plain_link(entry)
    return entry.get("before", _MISSING)


def _derive_sidecar(entry):
    name = entry.get("backup", {}).get("backup_name")
    if not isinstance(name, str):
        return _MISSING
    return name if name.endswith(".meta.json") else name + ".meta.json"


def _derive_prior_kind(entry):
    before = entry.get("before")
    return before.get("kind") if isinstance(before, dict) else "absent"


def _derive_before_sha(entry):
    return entry.get("before_hash") if entry.get("before_hash") is not None else _MISSING


def _derive_after_hash(entry):
    after = entry.get("after")
    return after.get("sha256") if isinstance(after, dict) else None


# (container or None, key, derive(stage, entry)).  expand applies them in this order, compact in reverse, so
# each rule sees exactly the fields the other side sees.
_RULES = (
    (None, "notes", lambda st, e: [] if "policy_ok" in e else _MISSING),
    (None, "stops", lambda st, e: [] if "policy_ok" in e else _MISSING),
    (None, "warnings", lambda st, e: [] if "policy_ok" in e else _MISSING),
    (None, "link_text", lambda st, e: e.get("source", _MISSING)),
    ("before", "sha256", lambda st, e: _derive_before_sha(e)),
    (None, "after", _derive_after),
    (None, "after_hash", lambda st, e: _derive_after_hash(e) if "result" in e and "hash_alg" in e else _MISSING),
    ("backup", "sidecar", lambda st, e: _derive_sidecar(e)),
    ("backup", "prior_kind", lambda st, e: _derive_prior_kind(e)),
    ("backup", "payload_hash", lambda st, e: e.get("before_hash", _MISSING)),
)


def _key(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return (_kind(value), value)


def _majority(values):
    """(value, count) of the most frequent value (first seen wins a tie)."""
    values = list(values)
    if values and all(_same(v, values[0]) for v in values):
        return values[0], len(values)  # the usual case, without serialising every value
    counts, first = {}, {}
    for v in values:
        k = _key(v)
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, v)
    if not counts:
        return _MISSING, 0
    best = max(counts, key=lambda k: (counts[k], -list(first).index(k)))
    return first[best], counts[best]


def _rule_name(container, key):
    return key if container is None else "%s.%s" % (container, key)


def _compact_entry_rules(stage, entry):
    absent = []
    for container, key, derive in reversed(_RULES):
        holder = entry if container is None else entry.get(container)
        if not isinstance(holder, dict):
            continue
        if key not in holder:
            if derive(stage, entry) is not _MISSING:
                absent.append(_rule_name(container, key))  # expand would invent it: say it is not there
        elif _same(holder[key], derive(stage, entry)):
            del holder[key]
    if absent:
        entry["absent"] = sorted(absent)


def _expand_entry_rules(stage, entry, absent):
    for container, key, derive in _RULES:
        holder = entry if container is None else entry.get(container)
        if not isinstance(holder, dict) or key in holder or _rule_name(container, key) in absent:
            continue
        value = derive(stage, entry)
        if value is not _MISSING:
            holder[key] = value  # shared here; expand_entries returns a copy


def compact_report(rep):
    """Rewrite a verbose report (entries under ENTRY_KEYS[stage], full events) into the compact form, in place."""
    key = ENTRY_KEYS.get(rep.get("stage"))
    entries = rep.get(key) if key else None
    full = entries if isinstance(entries, list) else []
    if isinstance(entries, list):
        # Compaction removes keys from the entries and from their before/after/backup: copy just those levels
        # (the verbose entries stay as they were, for the events below).
        rep[key] = [_compact_entry(rep["stage"], _shallow(e)) for e in entries]
        entries = rep[key]
        plan = _compact_plan(entries)
        if plan:
            rep["plan"] = plan
    maps = _index_maps(full)
    rep["events"] = _group([compact_event(ev, rep, full, i, maps) for i, ev in enumerate(rep.get("events", []))])
    return rep


def _group(events):
    """Consecutive events of one stage for consecutive entries that say nothing else become one record:
    {"stage", "a": first entry, "n": count, "dt_us": offset of the first, "gaps_us": [time since the previous]}."""
    out = []
    for ev in events:
        last = out[-1] if out else None
        if (set(ev) == {"stage", "a", "dt_us"} and last is not None and last.get("stage") == ev["stage"]
                and set(last) - {"n", "gaps_us"} == {"stage", "a", "dt_us"} and last["a"] + last.get("n", 1) == ev["a"]):
            prev = last["dt_us"] + sum(last.get("gaps_us", ()))
            last["n"] = last.get("n", 1) + 1
            last.setdefault("gaps_us", []).append(ev["dt_us"] - prev)
            continue
        out.append(ev)
    return out


def _ungroup(events):
    out = []
    for ev in events:
        if "n" not in ev:
            out.append(ev)
            continue
        dt = ev["dt_us"]
        for i in range(ev["n"]):
            if i:
                dt += ev["gaps_us"][i - 1]
            out.append({"stage": ev["stage"], "a": ev["a"] + i, "dt_us": dt})
    return out


def _shallow(entry):
    out = dict(entry)
    for k in NESTED_COMMON_KEYS:
        if isinstance(out.get(k), dict):
            out[k] = dict(out[k])
    return out


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
            if _same(known, info):
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
                    if _same(d[f], value):
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
            elif _same(e[k], value):
                del e[k]
    return plan


def expand_entries(rep):
    """The report's entries (rows, actions or results) with every field spelled out: a new list."""
    key = ENTRY_KEYS.get(rep.get("stage"))
    entries = rep.get(key) if key else None
    if not isinstance(entries, list):
        return []
    plan = rep.get("plan") or {}
    mounts = plan.get("mounts") or {}
    out = []
    for e in _copy(entries):
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
    return _copy(out)


_TS_CACHE = {}


def _ts_us(ts):
    if ts in _TS_CACHE:
        return _TS_CACHE[ts]
    if len(_TS_CACHE) > 100000:
        _TS_CACHE.clear()
    _TS_CACHE[ts] = value = _parse_ts_us(ts)
    return value


def _parse_ts_us(ts):
    if len(ts) == 27 and ts[4] == "-" and ts[10] == "T" and ts[19] == "." and ts[26] == "Z":
        try:
            d = datetime.datetime(int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]), int(ts[14:16]),
                                  int(ts[17:19]), int(ts[20:26]))
        except ValueError:
            d = datetime.datetime.strptime(ts, _TS_FORMAT)
    else:
        d = datetime.datetime.strptime(ts, _TS_FORMAT)
    return ((d.toordinal() * 86400 + d.hour * 3600 + d.minute * 60 + d.second) * 1000000) + d.microsecond


def _ts_from_us(us):
    days, rest = divmod(us, 86400 * 1000000)
    d = datetime.datetime.fromordinal(days) + datetime.timedelta(microseconds=rest)
    return d.strftime(_TS_FORMAT)


def _index_maps(entries):
    by_id, by_path = {}, {}
    for i, e in enumerate(entries):
        if e.get("action_id") is not None:
            by_id.setdefault(e["action_id"], i)
        if e.get("path") is not None:
            by_path.setdefault(e["path"], i)
    return by_id, by_path


def _event_entry_index(ev, maps):
    by_id, by_path = maps
    if ev.get("action_id") is not None:
        return by_id.get(ev["action_id"])
    if ev.get("path") is not None:
        return by_path.get(ev["path"])
    return None


def _event_base(rep, seq, stage, entry):
    """What an event of this stage, at this position, linked to this (expanded) entry, says without being told."""
    base = dict((k, rep.get(k)) for k in ENVELOPE_KEYS)
    base["seq"] = seq
    base["event_id"] = event_id(rep["run_id"], seq)
    base["decision"] = "success"
    if entry is None:
        return base
    for k in EVENT_FIELDS.get(stage, ()):
        if entry.get(k) is not None:
            base[k] = entry[k]
    if stage == "preflight":
        stops = entry.get("stops") or []
        if stops:
            base["stops"] = [s["msg"] for s in stops]
            base["knobs"] = sorted(set(s["knob"] for s in stops))
        if entry.get("warnings"):
            base["warnings"] = entry["warnings"]
        base["decision"] = ("failure" if (stops and not entry.get("overridden"))
                            else ("warn" if entry.get("warnings") else "success"))
    elif stage == "apply.result":
        durable = entry.get("backup_durable")
        base["backup_durable"] = durable if durable is not None else (rep.get("summary") or {}).get("backup_durable")
    return base


def compact_event(ev, rep, entries, seq=None, maps=None):
    """One audit event as the report carries it: only what the report and its entry do not already say."""
    seq = ev.get("seq") if seq is None else seq
    stage = ev.get("stage")
    index = _event_entry_index(ev, maps or _index_maps(entries)) if stage in EVENT_FIELDS else None
    base = _event_base(rep, seq, stage, entries[index] if index is not None else None)
    out = {"stage": stage}
    if index is not None:
        out["a"] = index
    for k, v in ev.items():
        if k == "ts":
            out["dt_us"] = _ts_us(v) - _ts_us(rep["ts"])  # both cached
        elif k != "stage" and not _same(base.get(k, _MISSING), v):
            out[k] = v
    omit = sorted(k for k in base if k not in ev)
    if omit:
        out["omit"] = omit
    return out


def expand_events(rep):
    """The report's events exactly as the host wrote them to audit_log (a new list)."""
    events = rep.get("events") or []
    if events and "dt_us" not in events[0] and "event_id" in events[0]:
        return _copy(events)  # already verbose
    entries = expand_entries(rep)
    out = []
    for seq, ev in enumerate(_ungroup(events)):
        index = ev.get("a")
        entry = entries[index] if isinstance(index, int) and 0 <= index < len(entries) else None
        full = _event_base(rep, ev.get("seq", seq), ev.get("stage"), entry)
        for k in ev.get("omit", ()):
            full.pop(k, None)
        for k, v in ev.items():
            if k not in ("a", "dt_us", "omit"):
                full[k] = v
        if "dt_us" in ev:
            full["ts"] = _ts_from_us(_ts_us(rep["ts"]) + ev["dt_us"])
        out.append(full)
    return _copy(out)
