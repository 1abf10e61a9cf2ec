# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The example in docs/api.md runs as written (root substituted) against a sandbox root."""

from __future__ import absolute_import, division, print_function

import os
import re

from harness import REPO
from test_examples import _production_sandbox

DOC_ROOT = "/srv/image"


def _example_code():
    with open(os.path.join(REPO, "docs", "api.md")) as f:
        text = f.read()
    section = text[text.index("## Example"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_api_doc_example_swaps_and_undoes_for_real(tmp_path):
    root = _production_sandbox(tmp_path)
    target = os.path.join(root, "usr/bin/ls")
    with open(target, "rb") as f:
        original = f.read()
    code = _example_code()
    assert DOC_ROOT in code
    namespace = {}
    exec(compile(code.replace(DOC_ROOT, root), "docs/api.md", "exec"), namespace)  # pylint: disable=exec-used
    assert namespace["plan_id"]
    assert namespace["report"]["changed"] is True, "the restore undid nothing: the apply did not swap"
    assert not os.path.islink(target)
    with open(target, "rb") as f:
        assert f.read() == original
