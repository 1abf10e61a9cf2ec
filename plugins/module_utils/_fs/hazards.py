# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a symlink swap would lose from a regular file: setuid/setgid, file capabilities, other hard links. Private to this collection.

The one check: preflight's gate runs it on the target it inspected, the backup again on the very fd it is made from."""

from __future__ import absolute_import, division, print_function

import os
import stat

SETID = "setid"            # the setuid or setgid bit
CAPABILITY = "capability"  # a security.capability xattr
HARDLINKS = "hardlinks"    # more than one name for the inode

KNOB = {SETID: "suid_sgid", CAPABILITY: "suid_sgid", HARDLINKS: "hardlinks"}  # the policy knob deciding each


def has_capability_fd(fd):
    """True when the open file carries file capabilities (security.capability)."""
    try:
        return "security.capability" in os.listxattr(fd)
    except OSError:
        return False


def setid_bits(st):
    """'setuid', 'setgid' or 'setuid/setgid' for a mode carrying them."""
    return "/".join(b for b, f in (("setuid", stat.S_ISUID), ("setgid", stat.S_ISGID)) if st.st_mode & f)


def file_hazards(st, fd):
    """The hazards (SETID, CAPABILITY, HARDLINKS, in that order) of a regular file: `st` its stat, `fd` open on
    it (None when it could not be opened: no capability is seen).  Anything but a regular file has none."""
    if st is None or not stat.S_ISREG(st.st_mode):
        return []
    found = []
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        found.append(SETID)
    if fd is not None and has_capability_fd(fd):
        found.append(CAPABILITY)
    if st.st_nlink > 1:
        found.append(HARDLINKS)
    return found
