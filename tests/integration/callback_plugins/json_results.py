# Test-only stdout callback: the whole run as one JSON document (ansible-core 2.19 ships no json callback).
from __future__ import absolute_import, division, print_function

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = '''
name: json_results
type: stdout
short_description: whole run as one JSON document (tests only)
description: [Collects every task result per host and prints one JSON document at the end.]
'''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "json_results"

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.plays = []
        self.stats = {}

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def _task(self, task):
        tasks = self.plays[-1]["tasks"]
        if not tasks or tasks[-1]["_uuid"] != task._uuid:
            tasks.append({"_uuid": task._uuid, "task": {"name": task.get_name()}, "hosts": {}})
        return tasks[-1]

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task(task)

    def _record(self, result, **flags):
        res = dict(result._result)
        res.update(flags)
        self._task(result._task)["hosts"][result._host.get_name()] = json.loads(json.dumps(res, default=str))

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        for h in sorted(stats.processed):
            self.stats[h] = stats.summarize(h)
        for p in self.plays:
            for t in p["tasks"]:
                t.pop("_uuid", None)
        self._display.display(json.dumps({"plays": self.plays, "stats": self.stats}, default=str))
