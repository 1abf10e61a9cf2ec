# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only fault injection, all of it in one place; inert unless a SWITCHYARD_TEST_* variable is set. Private to this collection.

The variables are never set outside the test suite (tests/crash, tests/unit):

- SWITCHYARD_TEST_KILL_AT=<name>[:<n>]  SIGKILL this process the n-th time kill_point(<name>) is reached.
- SWITCHYARD_TEST_FAIL_FSYNC=<n>        the n-th fsync or syncfs of one Durability fails with EIO (1-based).
- SWITCHYARD_TEST_DISABLE_IOCTL=1       FS_IOC_GETFLAGS answers "unsupported", so the lsattr fallback runs.
"""

from __future__ import absolute_import, division, print_function

import os
import signal

KILL_AT_ENV = "SWITCHYARD_TEST_KILL_AT"
FAIL_FSYNC_ENV = "SWITCHYARD_TEST_FAIL_FSYNC"
DISABLE_IOCTL_ENV = "SWITCHYARD_TEST_DISABLE_IOCTL"

_KILL_COUNTS = {}


def kill_point(name):
    """A named crash point: SIGKILL here when SWITCHYARD_TEST_KILL_AT names it (and its count is reached)."""
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    want, _sep, nth = spec.partition(":")
    if want != name:
        return
    count = _KILL_COUNTS.get(name, 0) + 1
    _KILL_COUNTS[name] = count
    if count >= (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_failure_at():
    """Which fsync (1-based) a new Durability fails with EIO, or None."""
    fail_at = os.environ.get(FAIL_FSYNC_ENV)
    return int(fail_at) if fail_at and fail_at.isdigit() else None


def ioctl_disabled():
    """True when the test suite wants the FS_IOC_GETFLAGS ioctl treated as unsupported."""
    return os.environ.get(DISABLE_IOCTL_ENV) == "1"
