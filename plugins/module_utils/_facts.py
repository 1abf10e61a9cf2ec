# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one table of stages: each stage's fact key and the module that returns it. Private to this collection.

Each module returns its report under a fact key of its own (``ansible_facts.switchyard_<stage>``), so the
reports of several stages never overwrite each other through shallow fact merging. The modules
(``_module.run_module``), the action plugins and the ``audit_jsonl`` callback all read the keys here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

STAGES = ("preflight", "apply", "restore", "prune")

# stage -> ansible_facts key of its report
FACT_KEY = {
    "preflight": "switchyard_preflight",
    "apply": "switchyard_apply",
    "restore": "switchyard_restore",
    "prune": "switchyard_prune",
}

# stage -> fully qualified name of the module that runs it
MODULE = {
    "preflight": "switchyard.fs.safe_preflight",
    "apply": "switchyard.fs.safe_apply",
    "restore": "switchyard.fs.safe_restore",
    "prune": "switchyard.fs.safe_prune",
}
