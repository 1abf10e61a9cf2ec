# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ansible-lint with the production profile over the roles, playbooks and molecule scenarios (config: .ansible-lint)."""

from __future__ import absolute_import, division, print_function

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
LINTED = ("roles", "playbooks", "extensions")  # extensions: the molecule scenarios are playbooks too


def test_roles_and_playbooks_pass_ansible_lint_production_profile():
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("ANSIBLE_"))
    # Modules resolve from this checkout (tests/conftest.py links it there), never from Galaxy.
    env["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, ".build", "collections")
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "").replace(VENV_BIN + os.pathsep, "")
    env["NO_COLOR"] = "1"
    targets = [t for t in LINTED if os.path.isdir(os.path.join(REPO, t))]
    assert targets, "nothing to lint: no roles/ or playbooks/"
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-lint"), "--nocolor", "--profile", "production"] + targets,
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-15000:]
    assert "Profile 'production' was required, and it passed" in proc.stdout, proc.stdout[-5000:]
