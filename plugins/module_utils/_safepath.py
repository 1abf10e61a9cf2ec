# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SafePath: resolve a path beneath root with directory handles. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import os

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fsatoms import DIR_FLAGS, lstat_at, kind_of

_MAX_SYMLINK_HOPS = 40
NAME_MAX = 255   # bytes in one path component (Linux, every common filesystem)
PATH_MAX = 4096  # bytes in a path, its terminating NUL included


def normalize_root(root):
    if not isinstance(root, str) or not root.startswith("/"):
        raise PolicyError("root=%r must be an absolute path, e.g. / or /srv/image" % (root,))
    real = os.path.realpath(root)
    if not os.path.isdir(real):
        raise PolicyError("root=%r is not an existing directory; create it or fix root" % (root,))
    return real


def relative_to_root(root, path, option="path"):
    """Map a host path (absolute, inside root) to its normalised in-root path ('/usr/bin/ls').

    Lexical only: '..' and '.' components and relative paths are rejected, never interpreted."""
    if not isinstance(path, str) or not path:
        raise PolicyError("%s=%r must be a non-empty absolute path" % (option, path))
    if "\x00" in path:
        raise PolicyError("%s=%r contains a NUL byte" % (option, path))
    if not path.startswith("/"):
        raise PolicyError("%s=%r is relative; give an absolute host path inside root %s, e.g. %s"
                          % (option, path, root, os.path.join(root, path)))
    parts = [p for p in path.split("/") if p not in ("",)]
    if any(p in (".", "..") for p in parts):
        raise PolicyError("%s=%r contains '.' or '..'; write the normalised absolute path" % (option, path))
    root_parts = [p for p in root.split("/") if p]
    if parts[:len(root_parts)] != root_parts:
        raise PolicyError("%s=%r is outside root %s; give a path inside root, e.g. %s"
                          % (option, path, root, os.path.join(root, path.lstrip("/"))))
    inner = parts[len(root_parts):]
    if not inner:
        raise PolicyError("%s=%r is root itself; name a file inside root" % (option, path))
    for p in parts:
        if len(os.fsencode(p)) > NAME_MAX:
            raise PolicyError("%s=%r has a component of %d bytes (%s...); no filesystem here allows more than %d: "
                              "fix the path" % (option, path, len(os.fsencode(p)), p[:32], NAME_MAX))
    if len(os.fsencode(path)) >= PATH_MAX:
        raise PolicyError("%s=%r is %d bytes long; paths are limited to %d bytes: fix the path"
                          % (option, path, len(os.fsencode(path)), PATH_MAX - 1))
    return "/" + "/".join(inner)


class ResolvedPath(object):
    """A path resolved beneath root: an open handle on its parent directory and the final name.

    `rel` is the path as written by the user (inside root), `parent_rel` the in-root path of the
    directory actually opened (after following in-root intermediate symlinks)."""

    def __init__(self, root, rel, parent_fd, parent_rel, name):
        self.root = root
        self.rel = rel
        self.parent_fd = parent_fd
        self.parent_rel = parent_rel
        self.name = name

    @property
    def host_path(self):
        return os.path.join(self.root, self.rel.lstrip("/"))

    @property
    def real_rel(self):
        return (self.parent_rel.rstrip("/") + "/" + self.name) if self.parent_rel != "/" else "/" + self.name

    def lstat(self):
        return lstat_at(self.parent_fd, self.name)

    def kind(self):
        return kind_of(self.lstat())

    def close(self):
        if self.parent_fd is not None:
            os.close(self.parent_fd)
            self.parent_fd = None


def _split(path):
    return [p for p in path.split("/") if p]


def open_root(root):
    return os.open(root, DIR_FLAGS & ~os.O_NOFOLLOW)


def open_dir_beneath(root_fd, rel_parts, option, original):
    """Walk directories from root_fd one component at a time with O_DIRECTORY|O_NOFOLLOW.

    An intermediate symlink is followed only when it resolves inside root (absolute link text
    is taken relative to root, as a chroot would); '..' may not climb above root.
    Returns (fd, in-root path of the directory)."""
    stack = []  # [(name, fd)] of the in-root directory chain below root
    queue = list(rel_parts)
    hops = 0
    cur = os.dup(root_fd)
    try:
        while queue:
            part = queue.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    raise PolicyError("%s=%r: a symlink on the way climbs above root; it cannot be followed safely"
                                      % (option, original))
                os.close(cur)
                stack.pop()
                cur = os.dup(stack[-1][1]) if stack else os.dup(root_fd)
                continue
            try:
                nfd = os.open(part, DIR_FLAGS, dir_fd=cur)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    raise PolicyError("%s=%r: directory %s does not exist inside root; create it or fix the path"
                                      % (option, original, "/" + "/".join([n for n, _f in stack] + [part])))
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = lstat_at(cur, part)
                if st is None or kind_of(st) != "symlink":
                    raise PolicyError("%s=%r: %s is not a directory" % (option, original, part))
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise PolicyError("%s=%r: too many symlinks on the way (loop?)" % (option, original))
                text = os.readlink(part, dir_fd=cur)
                if text.startswith("/"):
                    for _n, f in stack:
                        os.close(f)
                    stack = []
                    os.close(cur)
                    cur = os.dup(root_fd)
                queue = _split(text) + queue
                continue
            stack.append((part, nfd))
            os.close(cur)
            cur = os.dup(nfd)
        return cur, "/" + "/".join(n for n, _f in stack)
    except BaseException:
        os.close(cur)
        raise
    finally:
        for _n, f in stack:
            os.close(f)


def resolve_beneath(root, path, option="path", root_fd=None):
    """Resolve a host path inside root to (parent handle, final name).  The final component is never followed."""
    rel = relative_to_root(root, path, option)
    parts = _split(rel)
    own_root = root_fd is None
    rfd = open_root(root) if own_root else root_fd
    try:
        parent_fd, parent_rel = open_dir_beneath(rfd, parts[:-1], option, path)
    finally:
        if own_root:
            os.close(rfd)
    return ResolvedPath(root, rel, parent_fd, parent_rel, parts[-1])


def follow_beneath(root_fd, rel, option="path", visit=None):
    """Resolve an in-root path following every symlink, the final one included, without leaving root.
    Returns (parent_fd, parent_rel, name) of the final non-symlink entry; parent_fd is the caller's to close.
    visit(parent_fd, name), when given, sees every entry the chain passes through, the final one included."""
    parts = _split(rel)
    for _hop in range(_MAX_SYMLINK_HOPS):
        if not parts:
            raise PolicyError("%s=%r resolves to root itself" % (option, rel))
        parent_fd, parent_rel = open_dir_beneath(root_fd, parts[:-1], option, rel)
        name = parts[-1]
        if name in ("..", "."):
            os.close(parent_fd)
            raise PolicyError("%s=%r: a symlink on the way ends in '%s'" % (option, rel, name))
        if visit is not None:
            try:
                visit(parent_fd, name)
            except BaseException:
                os.close(parent_fd)
                raise
        st = lstat_at(parent_fd, name)
        if st is None or kind_of(st) != "symlink":
            return parent_fd, parent_rel, name
        try:
            text = os.readlink(name, dir_fd=parent_fd)
        except OSError as e:
            os.close(parent_fd)
            if e.errno in (errno.EINVAL, errno.ENOENT):
                # Replaced between lstat and readlink: walk again from the top.
                parts = _split(rel)
                continue
            raise
        os.close(parent_fd)
        parts = _split(text) if text.startswith("/") else _split(parent_rel) + _split(text)
    raise PolicyError("%s=%r: too many symlinks (loop?)" % (option, rel))


def host_path_beneath(root, root_fd, rel):
    """Host path of the final file an in-root path resolves to, or None when it does not resolve."""
    try:
        fd, parent_rel, name = follow_beneath(root_fd, rel)
    except (PolicyError, OSError):
        return None
    try:
        if lstat_at(fd, name) is None:
            return None
    finally:
        os.close(fd)
    return os.path.join(root, parent_rel.lstrip("/"), name)
