# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SafePath: the one walk that resolves a path beneath root with directory handles. Private to this collection."""

from __future__ import absolute_import, division, print_function

import errno
import os

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.atoms import DIR_FLAGS, lstat_at, kind_of

MAX_SYMLINK_HOPS = 40
NAME_MAX = 255   # bytes in one path component (Linux, every common filesystem)
PATH_MAX = 4096  # bytes in a path, its terminating NUL included


class OutsideRootError(PolicyError):
    """A path lies (lexically) outside root."""


class NotFoundBeneath(PolicyError):
    """A directory on the way does not exist (and was not to be created)."""


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
    parts = components(path)
    if any(p in (".", "..") for p in parts):
        raise PolicyError("%s=%r contains '.' or '..'; write the normalised absolute path" % (option, path))
    root_parts = components(root)
    if parts[:len(root_parts)] != root_parts:
        raise OutsideRootError("%s=%r is outside root %s; give a path inside root, e.g. %s"
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

    def __init__(self, rel, parent_fd, parent_rel, name):
        self.rel = rel
        self.parent_fd = parent_fd
        self.parent_rel = parent_rel
        self.name = name
        self._refs = None  # [count] of the paths sharing parent_fd (share_parent), None while it is this one's own

    @property
    def real_rel(self):
        return (self.parent_rel.rstrip("/") + "/" + self.name) if self.parent_rel != "/" else "/" + self.name

    def lstat(self):
        return lstat_at(self.parent_fd, self.name)

    def kind(self):
        return kind_of(self.lstat())

    def close(self):
        if self.parent_fd is None:
            return
        fd, self.parent_fd = self.parent_fd, None
        if self._refs is not None:
            self._refs[0] -= 1
            if self._refs[0] > 0:
                return  # another path still uses the shared handle; the last one closes it
        os.close(fd)

    def share_parent(self, seen):
        """Use one handle per parent directory inode across a plan: when `seen` ({(st_dev, st_ino): path}) already
        holds a path whose parent is the same directory, close this one's handle and share that one's (the *at
        calls act on the inode, not on the handle).  A plan's open fds then grow with its directories, not its
        targets, so ten thousand targets fit a default 1024-fd limit."""
        st = os.fstat(self.parent_fd)
        key = (st.st_dev, st.st_ino)
        first = seen.get(key)
        if first is None or first.parent_fd is None:
            seen[key] = self
            return
        if first._refs is None:
            first._refs = [1]
        first._refs[0] += 1
        os.close(self.parent_fd)
        self.parent_fd, self._refs = first.parent_fd, first._refs


def components(path):
    """The non-empty components of a slash path ("/usr//bin/" -> ["usr", "bin"]): the one splitter of in-root paths."""
    return [p for p in path.split("/") if p]


def open_root(root):
    return os.open(root, DIR_FLAGS & ~os.O_NOFOLLOW)


def open_dir_beneath(root_fd, rel_parts, option, original, create_mode=None, durability=None):
    """Walk directories from root_fd one component at a time with O_DIRECTORY|O_NOFOLLOW.

    An intermediate symlink is followed only when it resolves inside root (absolute link text
    is taken relative to root, as a chroot would); '..' may not climb above root.
    With create_mode, a missing directory named by rel_parts is created with that mode (exactly, whatever
    the umask; its parent fsynced through durability); one named by a symlink's text never is: a dangling
    symlink is an error, not a place to mkdir.  Returns (fd, in-root path of the directory)."""
    stack = []  # [(name, fd)] of the in-root directory chain below root
    queue = [(p, False) for p in rel_parts]  # (component, named by a symlink's text?)
    hops = 0
    made = None  # the name this walk just created in `cur`
    retries = 0
    cur = os.dup(root_fd)
    try:
        while queue:
            part, from_link = queue.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    raise PolicyError("%s=%r: a symlink on the way climbs above root; it cannot be followed safely"
                                      % (option, original))
                os.close(cur)
                os.close(stack.pop()[1])
                cur = os.dup(stack[-1][1]) if stack else os.dup(root_fd)
                continue
            try:
                nfd = os.open(part, DIR_FLAGS, dir_fd=cur)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    where = "/" + "/".join([n for n, _f in stack] + [part])
                    if create_mode is not None and not from_link and retries < MAX_SYMLINK_HOPS:
                        retries += 1
                        made = part if _mkdir_at(cur, part, create_mode, durability) else None
                        queue.insert(0, (part, from_link))
                        continue
                    if create_mode is not None and from_link:
                        raise NotFoundBeneath("%s=%r: directory %s, where a symlink on the way points, does not exist; "
                                              "it is not created through a symlink: create it or fix the symlink"
                                              % (option, original, where))
                    raise NotFoundBeneath("%s=%r: directory %s does not exist inside root; create it or fix the path"
                                          % (option, original, where))
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = lstat_at(cur, part)
                if st is not None and kind_of(st) == "directory":
                    # A symlink replaced by a directory since the open: look at it again, a bounded number of times.
                    retries = _changed_again(retries, option, original, part)
                    queue.insert(0, (part, from_link))
                    continue
                if st is None or kind_of(st) != "symlink":
                    raise PolicyError("%s=%r: %s is not a directory" % (option, original, part))
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise PolicyError("%s=%r: too many symlinks on the way (loop?)" % (option, original))
                try:
                    text = os.readlink(part, dir_fd=cur)
                except OSError as e2:
                    if e2.errno not in (errno.EINVAL, errno.ENOENT):
                        raise
                    hops -= 1  # no longer a symlink (replaced since the lstat): look at it again
                    retries = _changed_again(retries, option, original, part)
                    queue.insert(0, (part, from_link))
                    continue
                if text.startswith("/"):
                    for _n, f in stack:
                        os.close(f)
                    stack = []
                    os.close(cur)
                    cur = os.dup(root_fd)
                queue = [(p, True) for p in components(text)] + queue
                continue
            stack.append((part, nfd))
            if made == part:
                os.fchmod(nfd, create_mode)  # exactly create_mode: a umask of 077 must not make parents private
            made = None
            os.close(cur)
            cur = os.dup(nfd)
        return cur, "/" + "/".join(n for n, _f in stack)
    except BaseException:
        os.close(cur)
        raise
    finally:
        for _n, f in stack:
            os.close(f)


def _changed_again(retries, option, original, part):
    """Count one more look at a component that changed under the walk; a clean E_POLICY when it keeps changing."""
    if retries >= MAX_SYMLINK_HOPS:
        raise PolicyError("%s=%r: %s keeps changing between a directory and a symlink while it is resolved; "
                          "nothing was done: retry when it is quiet" % (option, original, part))
    return retries + 1


def resolve_beneath(root, path, option="path", root_fd=None):
    """Resolve a host path inside root to (parent handle, final name).  The final component is never followed."""
    rel = relative_to_root(root, path, option)
    parts = components(rel)
    own_root = root_fd is None
    rfd = open_root(root) if own_root else root_fd
    try:
        parent_fd, parent_rel = open_dir_beneath(rfd, parts[:-1], option, path)
    finally:
        if own_root:
            os.close(rfd)
    return ResolvedPath(rel, parent_fd, parent_rel, parts[-1])


def follow_beneath(root_fd, rel, option="path", visit=None):
    """Resolve an in-root path following every symlink, the final one included, without leaving root.
    Returns (parent_fd, parent_rel, name) of the final non-symlink entry; parent_fd is the caller's to close.
    visit(parent_fd, name), when given, sees every entry the chain passes through, the final one included."""
    parts = components(rel)
    for _hop in range(MAX_SYMLINK_HOPS):
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
                parts = components(rel)
                continue
            raise
        os.close(parent_fd)
        parts = components(text) if text.startswith("/") else components(parent_rel) + components(text)
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


def _mkdir_at(dir_fd, name, mode, durability):
    """True when this call created the directory; False when something else got there first."""
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.EEXIST:  # a concurrent run made it: open it like any existing one
            raise
        return False
    if durability is not None:
        durability.new_directory(dir_fd, name)
    return True
