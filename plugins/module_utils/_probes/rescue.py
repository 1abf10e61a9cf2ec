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
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import MAX_SYMLINK_HOPS, components, open_dir_beneath

RESCUE_TOOLS = ("cp", "mv", "rm", "ln", "stat", "readlink", "sha256sum", "sort", "date", "ls")


def _join(parent_rel, name):
    return (parent_rel.rstrip("/") + "/" + name) if parent_rel not in ("", "/") else "/" + name


def path_dirs(path_env=None):
    """Absolute, de-duplicated PATH entries of the module environment (relative ones never count)."""
    raw = os.environ.get("PATH", os.defpath) if path_env is None else path_env
    out = []
    for d in raw.split(os.pathsep):
        d = "/" + "/".join(components(d)) if d.startswith("/") else None
        if d and d not in out:
            out.append(d)
    return out


def find_tool(root_fd, dir_rel, tool, replaced):
    """('ok', in-root path of the entry, in-root path of the final file) / ('replaced', hop, target) / None.

    Every hop of a symlink chain is compared with the plan's targets: a tool reached through a
    target is gone (or is the new provider) after the swap, so it cannot be the rescue."""
    parts = components(dir_rel) + [tool]
    entry = None
    try:
        for _hop in range(MAX_SYMLINK_HOPS):
            dfd, drel = open_dir_beneath(root_fd, parts[:-1], "PATH", dir_rel)
            try:
                name = parts[-1]
                if name in (".", ".."):
                    return None
                here = _join(drel, name)
                entry = entry or _join(dir_rel, tool)
                if here in replaced:
                    return ("replaced", here, replaced[here])
                st = fs.lstat_at(dfd, name)
                if st is None:
                    return None
                if stat.S_ISLNK(st.st_mode):
                    text = os.readlink(name, dir_fd=dfd)
                    parts = components(text) if text.startswith("/") else components(drel) + components(text)
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                    return ("ok", entry, here)
                return None
            finally:
                os.close(dfd)
    except (PolicyError, OSError):
        return None
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
