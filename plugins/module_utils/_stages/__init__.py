# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One module per stage of a run: inputs and plan, run, recovery, preflight, apply, rollback, restore, prune. Private to this collection."""
