# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Journal records are untrusted input: the checks a begin record passes before recovery or restore uses it. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import re

from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import components

MAX_ACTIONS = 65536
MAX_PATH_BYTES = 4095
MAX_NAME_BYTES = 255
MAX_MS = (1 << 63) - 1
ACTION_KINDS = ("file", "symlink", "absent", "directory", "other")
_TAG_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_KIND_RE = re.compile(r"^[a-z_]{1,32}$")


class JournalInvalid(ValueError):
    """A journal record that fails validation: ``journal`` (file name), ``field``, ``reason``."""

    def __init__(self, journal, field, reason):
        super(JournalInvalid, self).__init__("journal %s: field %s: %s" % (journal, field, reason))
        self.journal = journal
        self.field = field
        self.reason = reason


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _text_ok(value, max_bytes):
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    try:
        raw = os.fsencode(value)
    except (UnicodeError, ValueError):
        return False
    return len(raw) <= max_bytes


def check_in_root_path(value, allow_none=False):
    """None when value is an in-root path like option input ('/usr/bin/ls': absolute as seen from root, no
    '.' or '..', no NUL, no empty component beyond slashes, sane lengths), else why not."""
    if value is None and allow_none:
        return None
    if not _text_ok(value, MAX_PATH_BYTES):
        return "must be a non-empty path of at most %d bytes without NUL" % MAX_PATH_BYTES
    if not value.startswith("/"):
        return "must be an absolute in-root path (it is relative)"
    parts = components(value)
    if not parts:
        return "must name something below root"
    for p in parts:
        if p in (".", ".."):
            return "must not contain '.' or '..'"
        if len(os.fsencode(p)) > MAX_NAME_BYTES:
            return "has a component longer than %d bytes" % MAX_NAME_BYTES
    return None


def check_begin(name, begin, kinds=("apply",)):
    """Validate a begin record exactly like option input before recovery or restore uses any of it.

    Returns the record; raises JournalInvalid naming the journal and the field.  Nothing outside the
    checked fields may be used by a caller."""
    def bad(field, reason):
        raise JournalInvalid(name, field, reason)
    if not isinstance(begin, dict):
        bad("(record)", "the begin record is not an object")
    kind = begin.get("kind", "apply")
    if not isinstance(kind, str) or not _KIND_RE.match(kind) or kind not in kinds:
        bad("kind", "must be one of %s" % ", ".join(kinds))
    for field in ("plan_id", "run_id"):
        if not isinstance(begin.get(field), str) or not UUID_RE.match(begin[field]):
            bad(field, "must be a UUID")
    if not isinstance(begin.get("tag"), str) or not _TAG_RE.match(begin["tag"]):
        bad("tag", "must be 1-64 letters, digits, '_' or '-'")
    if "ts_ms" in begin and (not _is_int(begin["ts_ms"]) or not 0 <= begin["ts_ms"] <= MAX_MS):
        bad("ts_ms", "must be an integer timestamp in milliseconds")
    why = check_in_root_path(begin.get("backup_dir_rel"), allow_none=True)
    if why:
        bad("backup_dir_rel", why)
    actions = begin.get("actions")
    if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
        bad("actions", "must be a list of at most %d actions" % MAX_ACTIONS)
    seen = set()
    for i, act in enumerate(actions):
        where = "actions[%d]" % i
        if not isinstance(act, dict):
            bad(where, "must be an object")
        if kind == "apply" and (not isinstance(act.get("action_id"), str) or not UUID_RE.match(act["action_id"])):
            bad(where + ".action_id", "must be a UUID")
        why = check_in_root_path(act.get("target"))
        if why:
            bad(where + ".target", why)
        key = (act["target"], act.get("backup_ms")) if kind == "prune" else act["target"]
        if key in seen:  # a prune deletes several backups of one target
            bad(where + ".target", "appears twice in one plan")
        seen.add(key)
        if kind == "apply" and not _text_ok(act.get("link_text"), MAX_PATH_BYTES):
            bad(where + ".link_text", "must be a non-empty link text of at most %d bytes without NUL" % MAX_PATH_BYTES)
        # apply and prune journals name backups by timestamp; a restore journal names only its targets.
        if kind != "restore" and (not _is_int(act.get("backup_ms")) or not 0 <= act["backup_ms"] <= MAX_MS):
            bad(where + ".backup_ms", "must be an integer in 0..%d" % MAX_MS)
        if "prior_kind" in act and act["prior_kind"] not in ACTION_KINDS:
            bad(where + ".prior_kind", "must be one of %s" % ", ".join(ACTION_KINDS))
    return begin


def sort_key_ms(begin):
    """begin's ts_ms when it is a sane integer, else 0: sorting never compares garbage."""
    ts = begin.get("ts_ms") if isinstance(begin, dict) else None
    return ts if _is_int(ts) and 0 <= ts <= MAX_MS else 0
