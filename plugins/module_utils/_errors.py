# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed errors and the single error table. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# error_id -> (exit_code, when).  The one place the error table lives; docs/errors.md is
# checked against it by a test.
ERROR_TABLE = {
    "E_POLICY": (10, "a preflight STOP, a SafePath violation, invalid input"),
    "E_OWNERSHIP": (20, "ownership/provenance check failed"),
    "E_LOCKING": (30, "lock not acquired within lock_timeout"),
    "E_ATOMIC_SWAP": (40, "the swap itself failed"),
    "E_EXDEV": (50, "cross-filesystem and degraded mode not allowed"),
    "E_BACKUP_MISSING": (60, "no complete backup to restore"),
    "E_RESTORE_FAILED": (70, "restore or rollback failed, or the backup hash does not match"),
    "E_SMOKE": (80, "a smoke check failed (after automatic rollback)"),
    "E_INTERNAL": (90, "an unexpected exception (after rollback of whatever was changed)"),
}


class SwitchyardError(Exception):
    """Base of every error the engine raises on purpose.

    ``cause_ids`` are more specific error ids that led to this one; ``summary_error_ids``
    lists them first and the classification (``error_id``) last.
    """

    error_id = "E_POLICY"

    def __init__(self, msg, path=None, cause_ids=()):
        super(SwitchyardError, self).__init__(msg)
        self.msg = msg
        self.path = path
        self.cause_ids = tuple(cause_ids)

    @property
    def exit_code(self):
        return ERROR_TABLE[self.error_id][0]

    @property
    def summary_error_ids(self):
        ids = [c for c in self.cause_ids if c != self.error_id]
        ids.append(self.error_id)
        return ids


class PolicyError(SwitchyardError):
    error_id = "E_POLICY"


class OwnershipError(SwitchyardError):
    error_id = "E_OWNERSHIP"


class LockingError(SwitchyardError):
    error_id = "E_LOCKING"


class AtomicSwapError(SwitchyardError):
    error_id = "E_ATOMIC_SWAP"


class ExdevError(SwitchyardError):
    error_id = "E_EXDEV"


class BackupMissingError(SwitchyardError):
    error_id = "E_BACKUP_MISSING"


class RestoreFailedError(SwitchyardError):
    error_id = "E_RESTORE_FAILED"


class SmokeError(SwitchyardError):
    error_id = "E_SMOKE"


class InternalError(SwitchyardError):
    """An unexpected exception (an engine bug or an errno nobody planned for), reported with its own id."""

    error_id = "E_INTERNAL"


ERROR_CLASSES = dict(
    (cls.error_id, cls)
    for cls in (PolicyError, OwnershipError, LockingError, AtomicSwapError, ExdevError,
                BackupMissingError, RestoreFailedError, SmokeError, InternalError)
)
