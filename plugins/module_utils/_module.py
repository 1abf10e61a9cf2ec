# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module glue: the shared argument specs (options, links), the runner, errors and messages. Private to this collection."""

from __future__ import absolute_import, division, print_function

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.switchyard.fs.plugins.module_utils._errors import SwitchyardError, PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings
from ansible_collections.switchyard.fs.plugins.module_utils._policy import KNOBS, PRESETS
from ansible_collections.switchyard.fs.plugins.module_utils._facts import FACT_KEY
from ansible_collections.switchyard.fs.plugins.module_utils._report.entries import ENTRY_KEYS, expand_entries


def _knob_spec(name):
    default, allowed, _desc = KNOBS[name]
    if isinstance(allowed, tuple):
        return {"type": "str", "choices": list(allowed)}
    if allowed is bool:
        return {"type": "bool"}
    if allowed is int:
        return {"type": "int"}
    if allowed is float:
        return {"type": "float"}
    if allowed is list:
        return {"type": "list", "elements": "str"}
    return {"type": "str"}


POLICY_OPTIONS = dict((name, _knob_spec(name)) for name in KNOBS)

COMMON_ARGUMENT_SPEC = {
    "root": {"type": "path", "default": "/"},
    "preset": {"type": "str", "default": "default", "choices": sorted(PRESETS)},
    "policy": {"type": "dict", "default": {}, "options": POLICY_OPTIONS},
    "lock_path": {"type": "path"},
    "lock_timeout": {"type": "float", "default": 5.0},
    "state_dir": {"type": "path"},
    "backup_tag": {"type": "str", "default": "switchyard"},
    "audit_log": {"type": "path"},
}

# The links of safe_apply (required there) and safe_preflight; documented by the switchyard.fs.common.links fragment.
LINKS_SPEC = {"type": "list", "elements": "dict",
              "options": {"source": {"type": "path", "required": True}, "target": {"type": "path", "required": True}}}


class ArgumentSpec(object):
    """The shared options plus a module's own, with the module's constraint lists."""

    def __init__(self, argument_spec=None, mutually_exclusive=None, required_one_of=None):
        self.argument_spec = dict(COMMON_ARGUMENT_SPEC)
        self.argument_spec.update(argument_spec or {})
        self.mutually_exclusive = mutually_exclusive or []
        self.required_one_of = required_one_of or []

    def create_module(self):
        return _SwitchyardModule(argument_spec=self.argument_spec, mutually_exclusive=self.mutually_exclusive,
                                 required_one_of=self.required_one_of, supports_check_mode=True)


class _SwitchyardModule(AnsibleModule):
    """AnsibleModule whose argument checking (unknown option or policy key, wrong type or choice) fails like
    every other invalid input: error_id E_POLICY, exit_code 10, before anything is touched."""

    _checking_arguments = False

    def __init__(self, *args, **kwargs):
        self._checking_arguments = True
        super(_SwitchyardModule, self).__init__(*args, **kwargs)
        self._checking_arguments = False

    def fail_json(self, msg, **kwargs):
        if self._checking_arguments and "error_id" not in kwargs:
            err = PolicyError(msg)
            kwargs.update(error_id=err.error_id, exit_code=err.exit_code, summary_error_ids=err.summary_error_ids,
                          changed=False)
            msg = "invalid input: %s; fix the task's options (see the module documentation)" % msg
        super(_SwitchyardModule, self).fail_json(msg=msg, **kwargs)


def settings_from(module):
    p = module.params
    policy = dict((k, v) for k, v in (p.get("policy") or {}).items() if v is not None)
    return Settings(root=p["root"], preset=p["preset"], policy=policy, lock_path=p["lock_path"],
                    lock_timeout=p["lock_timeout"], state_dir=p["state_dir"], backup_tag=p["backup_tag"],
                    audit_log=p["audit_log"], check_mode=module.check_mode)


def _diff(report):
    """before/after per path: kind, link target, sha256, mode, owner.  Never file bytes."""
    before, after = {}, {}
    for a in expand_entries(report):
        if a.get("result") in ("changed",) and a.get("before") is not None:
            before[a["path"]] = a["before"]
            after[a["path"]] = a.get("after")
    if not before:
        return None

    def fmt(states):
        lines = []
        for path in sorted(states):
            s = states[path] or {"kind": "absent"}
            fields = ("kind", "link_target", "sha256", "mode", "owner")
            lines.append("%s: %s" % (path, ", ".join("%s=%s" % (k, s[k]) for k in fields if s.get(k))))
        return "\n".join(lines) + "\n"
    return {"before": fmt(before), "after": fmt(after), "before_header": "switchyard (before)",
            "after_header": "switchyard (after)"}


def run_module(spec, stage, call):
    """Build the module, run `call(module, settings) -> (report, error, warnings)`, exit."""
    module = spec.create_module()
    try:
        settings = settings_from(module)
        report, err, warnings = call(module, settings)
    except SwitchyardError as e:
        module.fail_json(msg=e.msg, error_id=e.error_id, exit_code=e.exit_code,
                         summary_error_ids=e.summary_error_ids, rolled_back=False, rolled_back_paths=[], changed=False)
    except Exception as e:  # noqa: broad-except -- an engine bug must still fail clearly, with the trace
        module.fail_json(msg="switchyard internal error: %s" % e, exception=traceback.format_exc(),
                         error_id="E_INTERNAL", exit_code=90, summary_error_ids=["E_INTERNAL"], changed=False)
    for w in warnings:
        module.warn(w)
    result = {"changed": bool(report.pop("changed", False)), "plan_id": report["plan_id"],
              "ansible_facts": {FACT_KEY[stage]: report}}
    # Only apply and restore support diff mode (the module documentation says so for preflight and prune).
    diff = _diff(report) if module._diff and stage in ("apply", "restore") else None
    if diff:
        result["diff"] = diff
    invocation = _invocation(module, report)
    if invocation is not None:
        result["invocation"] = invocation
    rolled = report.get("rolled_back_paths", [])
    if err is not None:
        result.update(msg=_failure_msg(stage, report, err), error_id=err.error_id, exit_code=err.exit_code,
                      summary_error_ids=err.summary_error_ids, rolled_back=bool(rolled), rolled_back_paths=rolled)
        if getattr(err, "trace", None):
            result["exception"] = err.trace
        module.fail_json(**result)
    result["msg"] = _success_msg(stage, report)
    module.exit_json(**result)


def _invocation(module, report):
    """Ansible's echo of the arguments (result.invocation, shown at -vvv) with `links` as a count when the report
    already lists every link as an entry (in-root path and source: report.root + path is the target); None (the
    full echo) otherwise. The echo would repeat every link, at about half the size of the report itself."""
    links = module.params.get("links")
    root = report.get("root")
    if not links or not isinstance(root, str):
        return None
    prefix = root.rstrip("/")
    # path and source are never elided from a compact entry (docs/facts.md), so no expansion is needed here.
    listed = set((e.get("path"), e.get("source")) for e in report.get(ENTRY_KEYS.get(report.get("stage")), ()) or ())
    for link in links:
        target, source = link.get("target") or "", link.get("source") or ""
        if not (target.startswith(prefix + "/") and source.startswith(prefix + "/")
                and (target[len(prefix):], source[len(prefix):]) in listed):
            return None
    args = dict(module.params)
    args["links"] = "%d link(s), each an entry of ansible_facts.%s (path and source inside root)" % (
        len(links), FACT_KEY[report["stage"]])
    return {"module_args": args}


# A failure message stays readable at default verbosity: at most this many names, and the engine's text cut at
# MSG_TEXT_LIMIT characters (the report keeps every detail).
MSG_NAMES_LIMIT = 10
MSG_TEXT_LIMIT = 1000


def _names(items):
    items = list(items)
    if len(items) <= MSG_NAMES_LIMIT:
        return ", ".join(items)
    return "%s and %d more" % (", ".join(items[:MSG_NAMES_LIMIT]), len(items) - MSG_NAMES_LIMIT)


def _failing(report, err):
    """(targets, smoke check names) that failed: STOP rows, failed actions, the error's own path, failed checks."""
    targets = []
    entries = expand_entries(report)
    for path in ([r["path"] for r in entries if r.get("stops") and not r.get("overridden")]
                 + [a["path"] for a in entries if a.get("result") in ("failed", "rollback_failed")]
                 + [err.path]):
        if path and path not in targets:
            targets.append(path)
    return targets, [c["name"] for c in report.get("smoke", []) if not c.get("ok")]


def _failure_msg(stage, report, err):
    """Error id, plan id (apply: what a rollback by plan needs), failing targets and checks, then the engine's text."""
    targets, checks = _failing(report, err)
    head = "%s: %s failed" % (err.error_id, stage)
    if stage == "apply":
        head += " (plan_id=%s)" % report["plan_id"]
    parts = [head]
    if targets:
        parts.append("failing target(s): %s" % _names(targets))
    if checks:
        parts.append("failing smoke check(s): %s" % _names(checks))
    rolled = report.get("rolled_back_paths") or []
    if rolled:
        parts.append("rolled back %d target(s)" % len(rolled))
    text = err.msg
    if len(text) > MSG_TEXT_LIMIT:
        text = "%s... (%d more characters: see the report, ansible_facts.%s of the registered result)" % (
            text[:MSG_TEXT_LIMIT], len(text) - MSG_TEXT_LIMIT, FACT_KEY[stage])
    return "%s. %s" % ("; ".join(parts), text)


def _success_msg(stage, report):
    s = report["summary"]
    verb = "would be " if report.get("dry_run") and stage != "preflight" else ""
    if stage == "apply":
        # The plan id is what safe_restore plan_id=... (the rollback playbook's plan_id) needs.
        return "%d link(s) %sswapped, %d already in place; plan_id=%s" % (
            s["changed"], verb, s["unchanged"], report["plan_id"])
    if stage == "restore":
        return "%d target(s) %srestored" % (s["changed"], verb)
    if stage == "prune":
        return "%d backup(s) %spruned" % (s["pruned"], verb)
    return "preflight: %d row(s), %d STOP(s), %d warning(s)" % (s["rows"], s["stops"], s["warnings"])
