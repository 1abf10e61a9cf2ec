# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Append every switchyard audit event of every host to one JSONL file on the controller."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: audit_jsonl
type: notification
short_description: Append switchyard audit events to a JSON lines file on the controller
version_added: "0.1.0"
author: switchyard.fs contributors (@switchyard)
description:
  - Collects the audit C(events) that the C(switchyard.fs) modules return in
    C(ansible_facts.switchyard_preflight), C(switchyard_apply), C(switchyard_restore) and
    C(switchyard_prune), from every host, and appends each event as one JSON object per
    line to a file on the controller.
  - Events are taken from successful and failed task results alike (a failed
    C(safe_apply) still reports the rollback it did), and from every item of a loop.
  - Each line is the event exactly as the host wrote it to the modules' C(audit_log) (the facts carry events in
    compact form; they are expanded first), plus C(host) (the inventory
    hostname), C(task) (the task name), C(task_action) and C(play). When the event itself
    already has one of those keys with a different value, the event's value is kept under
    C(event_<key>).
  - The file is opened with C(O_APPEND) so concurrent C(ansible-playbook) runs writing the
    same file never overwrite each other, and with C(O_NOFOLLOW); a symlink at the path, or anything
    but a regular file, is refused (an error is displayed and nothing is written). Every batch of lines is flushed with one
    C(write) per line and C(fsync)ed before the callback returns. A new file is created with
    mode C(0600) and its directory is fsynced so the file survives a crash.
  - An event is written once per host even when the same result reaches the callback twice
    (loop items and the loop's summary result); events are identified by C(run_id) and
    C(event_id).
  - Meant for fleets outside AWX/Tower; under AWX the job events already hold the facts.
requirements:
  - Enable it with C(callbacks_enabled = switchyard.fs.audit_jsonl) in C(ansible.cfg) or
    C(ANSIBLE_CALLBACKS_ENABLED=switchyard.fs.audit_jsonl).
options:
  path:
    description:
      - The JSONL file on the controller to append to. Missing parent directories are
        created with mode C(0700).
      - When unset the callback warns once and stays inactive.
    type: path
    env:
      - name: SWITCHYARD_AUDIT_JSONL
    ini:
      - section: callback_audit_jsonl
        key: path
  fsync:
    description:
      - Call C(fsync) on the file after every batch of lines (one batch per task result).
      - Turning it off trades durability on controller crash for speed on very large fleets.
    type: bool
    default: true
    env:
      - name: SWITCHYARD_AUDIT_JSONL_FSYNC
    ini:
      - section: callback_audit_jsonl
        key: fsync
"""

EXAMPLES = r"""
# ansible.cfg
# [defaults]
# callbacks_enabled = switchyard.fs.audit_jsonl
# [callback_audit_jsonl]
# path = /var/log/switchyard/audit.jsonl

# or from the environment:
# ANSIBLE_CALLBACKS_ENABLED=switchyard.fs.audit_jsonl \
# SWITCHYARD_AUDIT_JSONL=/var/log/switchyard/audit.jsonl \
#   ansible-playbook switchyard.fs.swap -e target_hosts=canary

# one line of the file (wrapped here):
# {"collection_version":"0.2.0","decision":"success","dry_run":false,"event_id":"...",
#  "host":"web01","plan_id":"...","play":"Swap","run_id":"...","schema_version":1,
#  "seq":3,"stage":"apply.result","task":"Swap binaries","task_action":"switchyard.fs.safe_apply",
#  "ts":"2025-01-01T00:00:00Z", ...}
"""

import errno
import json
import os
import stat

from ansible.plugins.callback import CallbackBase
from ansible_collections.switchyard.fs.plugins.module_utils._facts import FACT_KEY
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events

CONTEXT_KEYS = ("host", "task", "task_action", "play")


def _jsonable(value):
    """Fallback for json.dumps: tagged or custom scalars become plain strings."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def events_from_result(result_dict):
    """Every audit event in one task result dict, in fact-key order then event order."""
    if not isinstance(result_dict, dict):
        return []
    facts = result_dict.get("ansible_facts")
    if not isinstance(facts, dict):
        return []
    events = []
    for key in sorted(FACT_KEY.values()):
        report = facts.get(key)
        if not isinstance(report, dict):
            continue
        stage_events = report.get("events")
        if isinstance(stage_events, list):
            try:
                # The facts carry compact events; the log gets each one whole, as the host's audit_log has it.
                stage_events = expand_events(report)
            except Exception:  # noqa: broad-except -- a report that does not expand is logged as it came
                pass
            events.extend(e for e in stage_events if isinstance(e, dict))
    return events


def event_record(event, context):
    """The line written for one event: the event plus controller context."""
    record = dict(event)
    for key in CONTEXT_KEYS:
        value = context.get(key)
        if key in record and record[key] != value:
            record["event_" + key] = record[key]
        record[key] = value
    return record


def event_identity(host, event):
    """Key that makes one event of one host unique across repeated results."""
    if event.get("event_id") is not None:
        return (host, str(event.get("run_id")), str(event.get("event_id")))
    return (host, json.dumps(event, sort_keys=True, default=_jsonable))


class JsonlAppender(object):
    """One O_APPEND file descriptor; each line is a single write, each batch fsynced."""

    def __init__(self, path, fsync=True):
        self.path = path
        self.fsync = fsync
        self._fd = None

    def _open(self):
        parent = os.path.dirname(self.path) or "."
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o700)
        # Never through a final symlink, never blocking on a FIFO; created exclusively, or an existing regular file.
        flags = (os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_NOCTTY", 0))
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            fd = self._open_existing(flags)
            created = False
        self._fd = fd
        if created and self.fsync:
            # The new directory entry must be durable too, not only the file's contents.
            dfd = os.open(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _open_existing(self, flags):
        try:
            fd = os.open(self.path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "it is a symlink; refusing to follow it", self.path)
            if exc.errno == errno.ENXIO:
                raise OSError(errno.ENXIO, "it is not a regular file", self.path)
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "it is not a regular file", self.path)
        return fd

    def append(self, records):
        if not records:
            return
        if self._fd is None:
            self._open()
        for record in records:
            line = json.dumps(record, sort_keys=True, separators=(",", ":"), default=_jsonable)
            data = (line + "\n").encode("utf-8")
            # One write per line: with O_APPEND the kernel places it at the end atomically.
            while data:
                try:
                    written = os.write(self._fd, data)
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                data = data[written:]
        if self.fsync:
            os.fsync(self._fd)

    def close(self):
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class CallbackModule(CallbackBase):
    """Write switchyard audit events from every task result to a controller JSONL file."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "switchyard.fs.audit_jsonl"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super(CallbackModule, self).__init__(display=display)
        self._appender = None
        self._seen = set()
        self._play_name = None
        self._warned_unset = False

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super(CallbackModule, self).set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        path = self.get_option("path")
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        if path:
            self._appender = JsonlAppender(os.path.abspath(os.path.expanduser(path)),
                                           fsync=bool(self.get_option("fsync")))

    # -- collection -------------------------------------------------------------------

    @staticmethod
    def _result_dict(result):
        data = getattr(result, "_result", None)
        return data if isinstance(data, dict) else {}

    def _context(self, result):
        task = getattr(result, "_task", None)
        host = getattr(result, "_host", None)
        return {
            "host": host.get_name() if host is not None else None,
            "task": task.get_name() if task is not None else None,
            "task_action": getattr(task, "action", None),
            "play": self._play_name,
        }

    def _record(self, result):
        if self._appender is None:
            if not self._warned_unset:
                self._warned_unset = True
                self._display.warning("switchyard.fs.audit_jsonl is enabled but no path is set "
                                      "(SWITCHYARD_AUDIT_JSONL or [callback_audit_jsonl] path); "
                                      "audit events are not written.")
            return
        data = self._result_dict(result)
        # A loop's summary result carries each item's result under 'results'.
        candidates = [data] + [r for r in data.get("results", []) or [] if isinstance(r, dict)]
        context = self._context(result)
        records = []
        for candidate in candidates:
            for event in events_from_result(candidate):
                identity = event_identity(context["host"], event)
                if identity in self._seen:
                    continue
                self._seen.add(identity)
                records.append(event_record(event, context))
        if not records:
            return
        try:
            self._appender.append(records)
        except (IOError, OSError) as exc:
            # A notification callback cannot fail the play; make the loss impossible to miss.
            self._display.error("switchyard.fs.audit_jsonl could not append %d audit event(s) to %s: %s"
                                % (len(records), self._appender.path, exc))

    # -- callback hooks ---------------------------------------------------------------

    def v2_playbook_on_play_start(self, play):
        self._play_name = play.get_name()

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result)

    def v2_runner_item_on_ok(self, result):
        self._record(result)

    def v2_runner_item_on_failed(self, result):
        self._record(result)

    def v2_runner_on_async_ok(self, result):
        self._record(result)

    def v2_runner_on_async_failed(self, result):
        self._record(result)

    def v2_playbook_on_stats(self, stats):
        if self._appender is not None:
            self._appender.close()
