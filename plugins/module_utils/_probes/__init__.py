# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only host facts: mounts, inode flags, package ownership, smoke execution, capability probes. Private to this collection."""
