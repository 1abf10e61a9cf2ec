# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin base: run the module, validate its report against the schema. Private to this collection."""

from __future__ import absolute_import, division, print_function

from ansible.plugins.action import ActionBase

from ansible_collections.switchyard.fs.plugins.module_utils._facts import FACT_KEY, MODULE
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import (
    ensure_validator, preload_validator, validation_errors)


class SwitchyardAction(ActionBase):
    """Runs switchyard.fs.<module> on the host and fails the task when its report does not validate."""

    _supports_check_mode = True
    _supports_async = False
    stage = None  # a key of _facts.FACT_KEY, set by each action plugin

    def run(self, tmp=None, task_vars=None):
        result = super(SwitchyardAction, self).run(tmp, task_vars)
        del tmp
        fact_key, module_name = FACT_KEY[self.stage], MODULE[self.stage]
        try:
            # Before the module runs: a report that cannot be validated must not follow a swap already made.
            ensure_validator()
        except ImportError as e:
            result.update(failed=True, changed=False, error_id="E_POLICY", exit_code=10, summary_error_ids=["E_POLICY"],
                          msg="switchyard.fs needs the Python package jsonschema on the controller (%s) to validate "
                          "%s; install it (pip install jsonschema) into the Python that runs ansible-playbook. "
                          "%s was not run, nothing was changed" % (e, fact_key, module_name))
            return result
        result.update(self._execute_module(module_name=module_name, module_args=self._task.args, task_vars=task_vars))
        report = (result.get("ansible_facts") or {}).get(fact_key)
        if report is None:
            return result  # argument errors and the like fail before a report exists
        errors = validation_errors(report)
        if errors:
            result["failed"] = True
            result["msg"] = ("%s report from %s does not validate against schemas/report.schema.json (the report schema "
                             "in the switchyard.fs collection): %s" % (fact_key, module_name, "; ".join(errors[:10])))
            result["schema_errors"] = errors
        return result


# ansible-playbook's strategies load each task's action class in the main process (class_only, to read
# BYPASS_HOST_LOOP) before they fork a worker per host, and the workers inherit what it imported. Building the
# validator here, at that first load, makes jsonschema's import and the schema's load happen once per run instead
# of once per host per task (about 70 ms of CPU each: 2.8 s over a 40-host batch).
preload_validator()
