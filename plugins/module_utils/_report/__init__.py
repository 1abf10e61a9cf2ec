# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reports (ansible_facts.switchyard_<stage>): the Reporter, the compact form of entries and of events. Private to this collection."""
