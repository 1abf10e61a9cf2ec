# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Side paths (lock_path, audit_log, state_dir, policy.backup_dir): validated, then opened beneath root (or an allowed /). Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import os

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import (
    NotFoundBeneath, OutsideRootError, components, open_dir_beneath, open_root, relative_to_root)

OUTSIDE_KNOB = "allow_side_paths_outside_root"

_KIND_WORDS = {"symlink": "a symlink", "file": "a file", "other": "a special file"}


class SidePath(object):
    """A side path option mapped to the directory it is resolved from: root, or -- only when
    policy.allow_side_paths_outside_root allows a path outside root -- the host's /."""

    def __init__(self, option, host_path, rel, outside):
        self.option = option
        self.host_path = host_path
        self.rel = rel
        self.outside = outside

    @property
    def parts(self):
        return components(self.rel)

    def __repr__(self):
        return "SidePath(%s=%r, rel=%r, outside=%r)" % (self.option, self.host_path, self.rel, self.outside)


def side_path(root, path, option, allow_outside=False):
    """Validate a side path option: absolute, normalised, inside root -- or outside only when allowed."""
    try:
        return SidePath(option, path, relative_to_root(root, path, option), False)
    except OutsideRootError:
        if not allow_outside:
            raise PolicyError("%s=%r is outside root %s; give a path inside root, e.g. %s, or set policy.%s: true "
                              "to allow it" % (option, path, root, os.path.join(root, path.lstrip("/")), OUTSIDE_KNOB))
    return SidePath(option, path, relative_to_root("/", path, option), True)


def open_anchor(side, root_fd):
    """A new fd on the directory `side` is resolved from (root, or / for an allowed outside path)."""
    return open_root("/") if side.outside else os.dup(root_fd)


def open_dirs_below(dir_fd, parts, create, mode, option, original, durability=None):
    """Open (with create: make, mode `mode`) directories below dir_fd following no symlink at all; None when
    one is missing and not create.  A symlink or a non-directory on the way is a clean E_POLICY."""
    try:
        if create:
            return fs.makedirs_at(dir_fd, parts, mode, durability)
        return fs.open_dirs_at(dir_fd, parts)
    except OSError as e:
        if e.errno == errno.ENOENT and not create:
            return None
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    # Find which component is wrong, for the message.
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            kind = fs.kind_of(fs.lstat_at(fd, part))
            if kind in ("symlink", "file", "other"):
                raise PolicyError("%s=%r: %s is %s, not a directory; side directories are never followed through a "
                                  "symlink: remove it or point %s at a real directory"
                                  % (option, original, part, _KIND_WORDS[kind], option))
            if kind == "absent":
                break
            try:
                nfd = fs.open_dir_at(fd, part)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                    raise
                break  # it changed again since the lstat: the message below says so
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    raise PolicyError("%s=%r: a directory on the way changed while it was opened; try again" % (option, original))


def open_side_dir(anchor_fd, side, create, mode=0o700, parent_mode=0o755, durability=None):
    """An fd on a side directory (state_dir, policy.backup_dir), or None when it is absent and not create.

    Its parents are found by the one walk (in-root symlinks followed, created with parent_mode through no
    symlink); the directory itself is never a symlink and is created with `mode`."""
    parts = side.parts
    try:
        parent_fd, _rel = open_dir_beneath(anchor_fd, parts[:-1], side.option, side.host_path,
                                           create_mode=parent_mode if create else None, durability=durability)
    except NotFoundBeneath:
        if create:
            raise
        return None
    try:
        return open_dirs_below(parent_fd, parts[-1:], create, mode, side.option, side.host_path, durability)
    finally:
        os.close(parent_fd)


def open_side_file(anchor_fd, side, flags, mode=0o600, parent_mode=0o755):
    """An fd on a side file (audit_log): parents by the one walk (created with parent_mode), the file created
    exclusively or, when it exists, used only if it is a regular file of ours with one link (never a symlink)."""
    parts = side.parts
    parent_fd, _rel = open_dir_beneath(anchor_fd, parts[:-1], side.option, side.host_path, create_mode=parent_mode)
    try:
        try:
            fd, _created = fs.open_or_create_at(parent_fd, parts[-1], flags, mode)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise PolicyError("%s=%r is a symlink; it is never followed: remove it or point %s at a regular file"
                                  % (side.option, side.host_path, side.option))
            raise
    finally:
        os.close(parent_fd)
    try:
        problem = fs.regular_file_problem(os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    if problem:
        os.close(fd)
        raise PolicyError("%s=%r %s; refusing to write to it: remove it or point %s elsewhere"
                          % (side.option, side.host_path, problem, side.option))
    return fd
