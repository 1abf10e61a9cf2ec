# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Everything that touches the filesystem under root, through directory handles. Private to this collection.

Atoms, swaps, durability, the one walk, side paths, backups, journal, lock, preservation.
"""
