# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rescue toolset probe: PATH mapped inside root, tools found through in-root symlinks, run inside root. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat
import subprocess

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs
from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import components, follow_beneath, open_dir_beneath

RESCUE_TOOLS = ("cp", "mv", "rm", "ln", "stat", "readlink", "sha256sum", "sort", "date", "ls")


def path_dirs(path_env=None):
    """Absolute, de-duplicated PATH entries of the module environment (relative ones never count)."""
    raw = os.environ.get("PATH", os.defpath) if path_env is None else path_env
    out = []
    for d in raw.split(os.pathsep):
        d = "/" + "/".join(components(d)) if d.startswith("/") else None
        if d and d not in out:
            out.append(d)
    return out


def target_keys(root_fd, paths):
    """{(st_dev, st_ino of its directory, name): value} for in-root paths {rel: value}: each target's identity is
    its directory's inode and its name, each directory resolved inside root once.  A path whose directory does
    not resolve is left out: no PATH walk can pass through it either."""
    dirs, out = {}, {}
    for rel, value in paths.items():
        parts = components(rel)
        if not parts:
            continue
        key = tuple(parts[:-1])
        if key not in dirs:
            dirs[key] = None
            try:
                dfd, _drel = open_dir_beneath(root_fd, parts[:-1], "PATH", rel)
            except (PolicyError, OSError):
                continue
            try:
                st = os.fstat(dfd)
                dirs[key] = (st.st_dev, st.st_ino)
            finally:
                os.close(dfd)
        if dirs[key] is not None:
            out.setdefault(dirs[key] + (parts[-1],), value)
    return out


class _Replaced(Exception):
    """A hop of a tool's symlink chain is a target of the plan (raised out of follow_beneath's visit)."""

    def __init__(self, target):
        Exception.__init__(self, target)
        self.target = target


def find_tool(root_fd, dir_rel, tool, replaced):
    """('ok', in-root path of the PATH entry) / ('replaced', target) / None, for `tool` in PATH directory dir_rel,
    its symlinks followed inside root by the one walk (safepath.follow_beneath).

    Every hop of a symlink chain is compared with the plan's targets (`replaced`, from target_keys): a tool
    reached through a target is gone (or is the new provider) after the swap, so it cannot be the rescue."""
    entry = "/" + "/".join(components(dir_rel) + [tool])

    def visit(dfd, name):
        st = os.fstat(dfd)
        target = replaced.get((st.st_dev, st.st_ino, name))
        if target is not None:
            raise _Replaced(target)

    try:
        dfd, _drel, name = follow_beneath(root_fd, entry, "PATH", visit)
    except _Replaced as e:
        return ("replaced", e.target)
    except (PolicyError, OSError):
        return None
    try:
        st = fs.lstat_at(dfd, name)
    finally:
        os.close(dfd)
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
        return ("ok", entry)
    return None


NO_LOADER = "exec failed with ENOENT although the file exists"
NO_LIBRARY = "exit 127"


def exec_problem(root, rel, tool):
    """Run the tool (inside root via chroot when root is not /); None when it ran (exit 0, or 1 for usage), else why
    not, from the exec error or the exit status (never from its output)."""
    argv = [rel, "--help"] if tool != "busybox" else [rel, "true"]
    env = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    kwargs = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
              "timeout": 5, "env": env}
    if root != "/":
        kwargs["preexec_fn"] = lambda: (os.chroot(root), os.chdir("/"))
    try:
        rc = subprocess.run(argv, check=False, **kwargs).returncode
    except subprocess.TimeoutExpired:
        return "did not finish within 5 s"
    except OSError as e:
        if e.errno == errno.ENOENT:
            # The file was found as an executable regular file: what the kernel could not find is its
            # program interpreter, the dynamic loader named in the ELF header (or a #! interpreter).
            return ("%s: its dynamic loader (ld-linux, from libc6) or #! interpreter is missing inside root"
                    % NO_LOADER)
        if e.errno == errno.ENOEXEC:
            return "not an executable format for this kernel (ENOEXEC)"
        return "could not be started: %s" % (e.strerror or e)
    except subprocess.SubprocessError as e:
        return "could not be started: %s" % e
    if rc in (0, 1):
        return None
    if rc == 127:
        return "%s: the loader ran but a shared library it needs (e.g. libc.so.6) is missing inside root" % NO_LIBRARY
    if rc < 0:
        return "killed by signal %d" % -rc
    return "exit %d on %s" % (rc, " ".join(argv[1:]))
