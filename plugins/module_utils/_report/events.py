# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compact form of a report's events and compact_report (docs/facts.md "Events"). Private to this collection."""

from __future__ import absolute_import, division, print_function

import datetime
import uuid

from ansible_collections.switchyard.fs.plugins.module_utils._report.entries import (
    MISSING, ENTRY_KEYS, compact_entries, expand_entries, json_copy, same)

ENVELOPE_KEYS = ("schema_version", "collection_version", "plan_id", "run_id", "dry_run")
# The entry fields each per-action event repeats (the same names in the event).
EVENT_FIELDS = {"preflight": ("action_id", "path", "policy_ok", "current_kind", "planned_kind"),
                "apply.result": ("action_id", "path", "source", "result", "hash_alg", "before_hash"),
                "rollback": ("action_id", "path"),
                "restore": ("path", "result", "preservation_applied")}
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def event_id(run_id, seq):
    """Event ids are derived: the same run and sequence number always give the same id."""
    return str(uuid.uuid5(uuid.UUID(run_id), "event/%d" % seq))


def compact_report(rep):
    """Rewrite a verbose report (entries under ENTRY_KEYS[stage], full events) into the compact form, in place."""
    key = ENTRY_KEYS.get(rep.get("stage"))
    entries = rep.get(key) if key else None
    full = entries if isinstance(entries, list) else []
    # Events first: they are compacted against the verbose entries, which are then compacted in place.
    maps = _index_maps(full)
    rep["events"] = _group([compact_event(ev, rep, full, i, maps) for i, ev in enumerate(rep.get("events", []))])
    if isinstance(entries, list):
        rep[key], plan = compact_entries(rep["stage"], entries)
        if plan:
            rep["plan"] = plan
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
        elif k != "stage" and not same(base.get(k, MISSING), v):
            out[k] = v
    omit = sorted(k for k in base if k not in ev)
    if omit:
        out["omit"] = omit
    return out


def expand_events(rep):
    """The report's events exactly as the host wrote them to audit_log (a new list)."""
    events = rep.get("events") or []
    if events and "dt_us" not in events[0] and "event_id" in events[0]:
        return json_copy(events)  # already verbose
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
    return json_copy(out)
