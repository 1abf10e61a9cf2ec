# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup sidecars are untrusted input: one parser that checks every field. Private to this collection.

A sidecar may have been written by anyone who can write in the backup directory.  parse_sidecar()
accepts only a bounded JSON object whose every known field has the right type, range and size, and
returns a BackupSidecar whose ``meta`` holds the checked fields only (unknown keys are dropped, so no
caller can use an unchecked value).  The payload name is derived from the sidecar's own name; the
sidecar's "payload" field must agree with it and is never used as a path.
"""

from __future__ import absolute_import, division, print_function

import base64
import binascii
import json
import os
import re

SIDECAR_SUFFIX = ".bak.meta.json"
PAYLOAD_SUFFIX = ".bak"
KNOWN_SCHEMAS = ("backup_meta.v1", "backup_meta.v2")
PRIOR_KINDS = ("file", "symlink", "absent")
BACKUP_METHODS = ("hardlink", "copy", "symlink", "none")
TIERS = ("basic", "extended", "full")
# What a copy-path backup recorded of each field; "unsupported" is how 0.1.0 spelled skipped-unsupported.
PRESERVATION_STATUSES = ("applied", "skipped-unsupported", "unsupported", "failed")
PRESERVATION_FIELDS = ("mode", "uid", "gid", "atime", "mtime", "xattrs")

MAX_SIDECAR_BYTES = 1 << 20          # a real sidecar is well under 4 KiB plus its xattrs
MAX_NAME_BYTES = 255                 # NAME_MAX
MAX_PATH_BYTES = 4095                # PATH_MAX (4096) minus the terminating NUL
MAX_ID_CHARS = 64
MAX_XATTRS = 128
MAX_XATTR_VALUE_BYTES = 65536        # XATTR_SIZE_MAX
MAX_XATTR_TOTAL_BYTES = 512 * 1024
MAX_INT = (1 << 63) - 1              # st_size, created_ms and friends fit in an off_t / int64
MAX_ID = (1 << 32) - 2               # uid/gid; (uid_t)-1 means "unchanged" to chown
MAX_TIME_SEC = MAX_INT // (10 ** 9) - 1
_NS = 10 ** 9

TAG_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,%d}$" % MAX_ID_CHARS)
_XATTR_NAMESPACES = ("user.", "trusted.", "security.", "system.")


class SidecarInvalid(ValueError):
    """A sidecar that cannot be used.  ``name`` is the sidecar file, ``field`` the JSON field at fault
    (or a pseudo field: "(file)", "(json)"), ``reason`` says what is wrong.  Never carries file bytes."""

    def __init__(self, name, field, reason):
        super(SidecarInvalid, self).__init__("backup sidecar %s: field %s: %s" % (name, field, reason))
        self.name = name
        self.field = field
        self.reason = reason


class BackupSidecar(object):
    """A checked sidecar: ``name`` (the sidecar file), ``payload_name`` (derived from ``name``; None
    for prior_kind absent), ``meta`` (only checked fields)."""

    def __init__(self, name, payload_name, meta):
        self.name = name
        self.payload_name = payload_name
        self.meta = meta

    @property
    def prior_kind(self):
        return self.meta["prior_kind"]


def payload_name_for(sidecar_name):
    """The payload a sidecar describes: its own name without '.meta.json' (same directory, one component)."""
    if not isinstance(sidecar_name, str) or not sidecar_name.endswith(SIDECAR_SUFFIX) or "/" in sidecar_name \
            or "\x00" in sidecar_name or sidecar_name in (".", ".."):
        raise SidecarInvalid(sidecar_name, "(name)", "not a sidecar file name (.<name>.<tag>.<ms>%s)" % SIDECAR_SUFFIX)
    return sidecar_name[:-len(".meta.json")]


def _fsbytes(value):
    """The bytes a str stands for on this system (surrogateescape), or None when it cannot be encoded."""
    try:
        return os.fsencode(value)
    except (UnicodeError, ValueError):
        return None


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


class _Duplicate(ValueError):
    def __init__(self, key):
        super(_Duplicate, self).__init__(key)
        self.key = key


def _reject_constant(name):
    raise ValueError("%s is not valid JSON" % name)


def _bounded_int(text):
    """Integers of at most 24 digits: int() of a huge digit string is quadratic on Pythons without
    the str->int digit limit, and no sidecar field needs more."""
    if len(text.lstrip("-")) > 24:
        raise ValueError("integer with more than 24 digits")
    return int(text)


def _load_json_object(data, name):
    """A JSON object from at most MAX_SIDECAR_BYTES of strict UTF-8, duplicate keys and NaN refused."""
    if not isinstance(data, bytes):
        raise SidecarInvalid(name, "(file)", "not bytes")
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarInvalid(name, "(file)", "larger than %d bytes" % MAX_SIDECAR_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SidecarInvalid(name, "(file)", "not valid UTF-8 at byte %d" % e.start)
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
                         parse_int=_bounded_int)
    except _Duplicate as e:
        raise SidecarInvalid(name, _field_label(e.key), "appears more than once")
    except RecursionError:
        raise SidecarInvalid(name, "(json)", "nested too deeply")
    except (ValueError, TypeError, OverflowError) as e:
        raise SidecarInvalid(name, "(json)", "not valid JSON (%s)" % (str(e).split(":", 1)[0][:80],))
    if not isinstance(obj, dict):
        raise SidecarInvalid(name, "(json)", "top level is a %s, not an object" % type(obj).__name__)
    return obj


def _field_label(key):
    if isinstance(key, str) and re.match(r"^[A-Za-z0-9_.]{1,64}$", key):
        return key
    return repr(key)[:80]


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker(object):
    def __init__(self, name, raw):
        self.name = name
        self.raw = raw
        self.meta = {}

    def bad(self, field, reason):
        raise SidecarInvalid(self.name, field, reason)

    def has(self, field):
        return field in self.raw and self.raw[field] is not None

    def int_field(self, field, lo, hi, required=False):
        if not self.has(field):
            if required:
                self.bad(field, "is missing")
            return None
        value = self.raw[field]
        if not _is_int(value):
            self.bad(field, "must be an integer, got %s" % type(value).__name__)
        if value < lo or value > hi:
            self.bad(field, "out of range (%d..%d)" % (lo, hi))
        self.meta[field] = value
        return value

    def choice(self, field, allowed, required=False, default=None):
        if not self.has(field):
            if required:
                self.bad(field, "is missing")
            if default is not None:
                self.meta[field] = default
            return default
        value = self.raw[field]
        if not isinstance(value, str) or value not in allowed:
            self.bad(field, "must be one of %s" % ", ".join(allowed))
        self.meta[field] = value
        return value

    def regex(self, field, rx, what, required=False):
        if not self.has(field):
            if required:
                self.bad(field, "is missing")
            return None
        value = self.raw[field]
        if not isinstance(value, str) or not rx.match(value):
            self.bad(field, "must be %s" % what)
        self.meta[field] = value
        return value


def _check_link_text(chk, field, value):
    if not isinstance(value, str) or not value:
        chk.bad(field, "must be a non-empty string")
    raw = _fsbytes(value)
    if raw is None:
        chk.bad(field, "cannot be encoded as a file name")
    if b"\x00" in raw:
        chk.bad(field, "contains a NUL byte")
    if len(raw) > MAX_PATH_BYTES:
        chk.bad(field, "longer than %d bytes" % MAX_PATH_BYTES)
    return value


def _check_target(chk, value):
    """The in-root path the backup was made for ('/usr/bin/ls'): informational, never used as a path."""
    _check_link_text(chk, "target", value)
    parts = value.split("/")
    if not value.startswith("/") or any(p in (".", "..") for p in parts[1:]) \
            or any(len(_fsbytes(p)) > MAX_NAME_BYTES for p in parts):
        chk.bad("target", "must be a normalised absolute in-root path without '.' or '..'")


def _check_xattrs(chk, value):
    if not isinstance(value, dict):
        chk.bad("xattrs", "must be an object of name -> base64 value")
    if len(value) > MAX_XATTRS:
        chk.bad("xattrs", "has more than %d entries" % MAX_XATTRS)
    total = 0
    out = {}
    for key in sorted(value):
        label = "xattrs." + _field_label(key)
        raw_name = _fsbytes(key)
        if raw_name is None or not raw_name or b"\x00" in raw_name or len(raw_name) > MAX_NAME_BYTES \
                or not key.startswith(_XATTR_NAMESPACES) or key in _XATTR_NAMESPACES:
            chk.bad(label, "is not an extended attribute name (user., trusted., security. or system. namespace, "
                           "at most %d bytes)" % MAX_NAME_BYTES)
        encoded = value[key]
        if not isinstance(encoded, str) or len(encoded) > (MAX_XATTR_VALUE_BYTES * 4) // 3 + 4:
            chk.bad(label, "must be base64 of at most %d bytes" % MAX_XATTR_VALUE_BYTES)
        try:
            decoded = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeError, ValueError):
            chk.bad(label, "is not valid base64")
        if len(decoded) > MAX_XATTR_VALUE_BYTES:
            chk.bad(label, "value longer than %d bytes" % MAX_XATTR_VALUE_BYTES)
        total += len(decoded) + len(raw_name)
        if total > MAX_XATTR_TOTAL_BYTES:
            chk.bad("xattrs", "values add up to more than %d bytes" % MAX_XATTR_TOTAL_BYTES)
        out[key] = encoded
    chk.meta["xattrs"] = out


def _check_backup_preservation(chk, value):
    if not isinstance(value, dict) or len(value) > len(PRESERVATION_FIELDS):
        chk.bad("backup_preservation", "must be an object of field -> status")
    for key, status in value.items():
        if key not in PRESERVATION_FIELDS or status not in PRESERVATION_STATUSES:
            chk.bad("backup_preservation", "entry %s must map one of %s to one of %s"
                    % (_field_label(key), ", ".join(PRESERVATION_FIELDS), ", ".join(PRESERVATION_STATUSES)))
    chk.meta["backup_preservation"] = dict(value)


def parse_sidecar(data, sidecar_name, tag=None):
    """Check a sidecar's bytes; return a BackupSidecar or raise SidecarInvalid naming the file and field.

    ``tag``, when given, is the backup tag the caller looked for: the sidecar must say the same."""
    payload = payload_name_for(sidecar_name)
    raw = _load_json_object(data, sidecar_name)
    chk = _Checker(sidecar_name, raw)
    chk.choice("schema", KNOWN_SCHEMAS, required=True)
    got_tag = chk.regex("tag", TAG_RE, "1-64 letters, digits, '_' or '-'")
    if tag is not None and got_tag is not None and got_tag != tag:
        chk.bad("tag", "does not match the tag in the file name")
    if chk.has("target"):
        _check_target(chk, raw["target"])
        chk.meta["target"] = raw["target"]
    chk.int_field("created_ms", 0, MAX_INT)
    for field in ("plan_id", "action_id", "run_id"):
        chk.regex(field, _ID_RE, "an id of 1-%d letters, digits, '-', '_', '.' or ':'" % MAX_ID_CHARS)
    kind = chk.choice("prior_kind", PRIOR_KINDS, default="file")
    chk.choice("hash_alg", ("sha256",))
    chk.choice("backup_method", BACKUP_METHODS)
    chk.choice("tier", TIERS)
    chk.regex("payload_hash", _HEX64_RE, "64 lowercase hex digits (sha256)")
    # The payload is named after the sidecar, never after what the sidecar says.
    if kind == "absent":
        if chk.has("payload"):
            chk.bad("payload", "must be null for prior_kind absent")
        if chk.has("payload_hash"):
            chk.bad("payload_hash", "must be null for prior_kind absent")
        payload = None
    elif raw.get("payload") != payload:
        chk.bad("payload", "must be the sidecar's own name without .meta.json")
    chk.meta["payload"] = payload
    if kind == "symlink":
        if not chk.has("prior_link_target"):
            chk.bad("prior_link_target", "is missing for prior_kind symlink")
        chk.meta["prior_link_target"] = _check_link_text(chk, "prior_link_target", raw["prior_link_target"])
        if chk.has("payload_hash"):
            chk.bad("payload_hash", "must be null for prior_kind symlink")
    elif chk.has("prior_link_target"):
        chk.bad("prior_link_target", "must be null for prior_kind %s" % kind)
    else:
        chk.meta["prior_link_target"] = None
    chk.int_field("mode", 0, 0o7777)
    chk.int_field("size", 0, MAX_INT)
    uid = chk.int_field("uid", 0, MAX_ID)
    gid = chk.int_field("gid", 0, MAX_ID)
    if (uid is None) != (gid is None):
        chk.bad("uid" if uid is None else "gid", "uid and gid must be recorded together")
    for which in ("atime", "mtime"):
        sec = chk.int_field(which + "_sec", -MAX_TIME_SEC, MAX_TIME_SEC)
        nsec = chk.int_field(which + "_nsec", 0, _NS - 1)
        if (sec is None) != (nsec is None):
            chk.bad(which + "_sec" if sec is None else which + "_nsec",
                    "%s_sec and %s_nsec must be recorded together" % (which, which))
    if chk.has("xattrs"):
        _check_xattrs(chk, raw["xattrs"])
    if chk.has("backup_preservation"):
        _check_backup_preservation(chk, raw["backup_preservation"])
    if kind == "file" and "mode" not in chk.meta:
        chk.bad("mode", "is missing for prior_kind file (restore would leave the file at 0600)")
    return BackupSidecar(sidecar_name, payload, chk.meta)
