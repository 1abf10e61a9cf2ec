# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Smoke checks run after a swap: the resolve and coreutils suites and custom checks, validated then run. Private to this collection.

What runs (docs/role.md, "Smoke checks"):
- root '/': argv[0] itself (the swapped path, i.e. the link) is executed, so a multicall provider,
  binary or '#!' script, sees the link's name.  Mode "host".
- another root: argv[0] is executed inside a chroot of root (the link itself, seen from inside).
  Mode "chroot".  When that cannot work (the root lacks the loader, a library or the '#!'
  interpreter) and policy.smoke_host_fallback is true, the file argv[0] resolves to beneath root
  is opened without following any symlink out of root and executed by that descriptor (fexecve)
  on the host, with argv[0] kept.  Mode "host_fd".  Never by a path that could be swapped meanwhile.

How one check's processes are run, bounded and killed: _probes/runner.py.
"""

from __future__ import absolute_import, division, print_function

import math
import os
import re
import stat
import subprocess

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._probes import runner
from ansible_collections.switchyard.fs.plugins.module_utils._fs.atoms import lstat_at, kind_of
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import components, follow_beneath, host_path_beneath

SUITES = ("resolve", "coreutils")

# Limits of a custom check list (validate_checks); generous for a smoke check, far below the kernel's.
MAX_CHECKS = 256
MAX_ARGV_ITEMS = 256
MAX_ARGV_BYTES = 64 * 1024  # the sum over argv of each item's bytes plus its terminating NUL
MAX_PATH_BYTES = 4095  # PATH_MAX - 1
MAX_NAME_BYTES = 255  # NAME_MAX
MAX_TIMEOUT = 3600.0
MAX_LABEL_CHARS = 200  # `name`
MAX_REGEX_CHARS = 4096
DEFAULT_TIMEOUT = 10.0

# Harmless invocations per tool name for the coreutils suite; anything else runs --help.
_COREUTILS_ARGS = {
    "ls": ["/"], "cat": ["/dev/null"], "true": [], "echo": ["switchyard"], "pwd": [], "date": ["+%s"],
    "stat": ["/"], "readlink": ["/"], "sort": ["/dev/null"], "sha256sum": ["/dev/null"], "uname": [],
    "id": [], "whoami": [], "basename": ["/a/b"], "dirname": ["/a/b"], "head": ["-c0", "/dev/null"],
    "tail": ["-c0", "/dev/null"], "wc": ["-c", "/dev/null"], "env": ["true"], "sleep": ["0"],
    "test": ["-d", "/"], "printf": ["x"], "seq": ["1"], "nproc": [], "hostname": [], "mkdir": ["--help"],
}


# -- validation (before the lock, before anything is touched) ------------------------------------

def _label(i, c):
    name = c.get("name") if isinstance(c, dict) else None
    return "smoke[%d] (%s)" % (i, name) if isinstance(name, str) and name and "\x00" not in name else "smoke[%d]" % i


def _validate_argv(label, argv):
    if not isinstance(argv, list) or not argv:
        raise PolicyError("%s.argv=%r must be a non-empty list of strings, e.g. [/usr/bin/ls, /]" % (label, argv))
    if len(argv) > MAX_ARGV_ITEMS:
        raise PolicyError("%s.argv has %d items; at most %d are allowed in a smoke check"
                          % (label, len(argv), MAX_ARGV_ITEMS))
    total = 0
    for j, a in enumerate(argv):
        if not isinstance(a, str):
            raise PolicyError("%s.argv[%d]=%r is a %s; every argv item must be a string (quote it in YAML)"
                              % (label, j, a, type(a).__name__))
        if "\x00" in a:
            raise PolicyError("%s.argv[%d]=%r contains a NUL byte, which no process argument can hold; remove it"
                              % (label, j, a))
        try:
            total += len(os.fsencode(a)) + 1
        except UnicodeError:
            raise PolicyError("%s.argv[%d]=%r cannot be encoded as bytes for exec (a lone surrogate); fix the text"
                              % (label, j, a))
    if total > MAX_ARGV_BYTES:
        raise PolicyError("%s.argv is %d bytes; at most %d are allowed in a smoke check" % (label, total, MAX_ARGV_BYTES))
    exe = argv[0]
    if not exe.startswith("/"):
        raise PolicyError("%s.argv[0]=%r must be an absolute path as seen inside root, e.g. /usr/bin/ls" % (label, exe))
    parts = components(exe)
    if not parts or exe.endswith("/"):
        raise PolicyError("%s.argv[0]=%r must name a file, e.g. /usr/bin/ls" % (label, exe))
    if any(p in (".", "..") for p in parts):
        raise PolicyError("%s.argv[0]=%r contains '.' or '..'; write the normalised absolute path" % (label, exe))
    if len(os.fsencode(exe)) > MAX_PATH_BYTES or any(len(os.fsencode(p)) > MAX_NAME_BYTES for p in parts):
        raise PolicyError("%s.argv[0]=%r is longer than a path (%d bytes) or a name (%d bytes) can be"
                          % (label, exe, MAX_PATH_BYTES, MAX_NAME_BYTES))


def _validate_one(i, c):
    label = _label(i, c)
    unknown = sorted(str(k) for k in set(c) - {"argv", "rc", "stdout_regex", "timeout", "name"})
    if unknown:
        raise PolicyError("%s has unknown key(s) %s; allowed: argv, rc, stdout_regex, timeout, name"
                          % (label, ", ".join(unknown)))
    argv = c["argv"]
    _validate_argv(label, argv)
    name = c.get("name")
    if name is not None and (not isinstance(name, str) or not name or "\x00" in name or len(name) > MAX_LABEL_CHARS):
        raise PolicyError("%s.name=%r must be a non-empty string of at most %d characters without NUL"
                          % (label, name, MAX_LABEL_CHARS))
    rc = c.get("rc", 0)
    if isinstance(rc, bool) or not isinstance(rc, int) or not 0 <= rc <= 255:
        raise PolicyError("%s.rc=%r must be the expected exit status, an integer from 0 to 255" % (label, rc))
    rx = c.get("stdout_regex")
    if rx is not None:
        if not isinstance(rx, str) or len(rx) > MAX_REGEX_CHARS:
            raise PolicyError("%s.stdout_regex=%r must be a string of at most %d characters"
                              % (label, rx, MAX_REGEX_CHARS))
        try:
            re.compile(rx)
        except re.error as e:
            raise PolicyError("%s.stdout_regex=%r is not a valid regular expression: %s" % (label, rx, e))
    timeout = c.get("timeout", DEFAULT_TIMEOUT)
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout)
            or not 0 < timeout <= MAX_TIMEOUT):
        raise PolicyError("%s.timeout=%r must be a number of seconds greater than 0 and at most %d"
                          % (label, timeout, MAX_TIMEOUT))
    return {"argv": list(argv), "rc": rc, "stdout_regex": rx, "timeout": float(timeout),
            "name": name or " ".join(argv)}


def validate_checks(smoke):
    """Normalise the `smoke` option: None, a suite name, or a list of {argv, rc, stdout_regex, timeout, name}.

    Everything a check could fail on before its program runs is refused here with E_POLICY,
    naming the check and the fix: this runs before the lock is taken and before anything changes."""
    if smoke is None or smoke == [] or smoke == "":
        return None
    if isinstance(smoke, str):
        if smoke not in SUITES:
            raise PolicyError("smoke=%r is not a suite; use one of %s or a list of {argv, rc, stdout_regex, timeout}"
                              % (smoke, ", ".join(SUITES)))
        return smoke
    if not isinstance(smoke, list):
        raise PolicyError("smoke must be a suite name or a list of checks, got %r" % (smoke,))
    if len(smoke) > MAX_CHECKS:
        raise PolicyError("smoke has %d checks; at most %d are allowed" % (len(smoke), MAX_CHECKS))
    out = []
    for i, c in enumerate(smoke):
        if isinstance(c, str) and c in SUITES:
            out.append({"suite": c})
            continue
        if not isinstance(c, dict) or "argv" not in c:
            raise PolicyError("smoke[%d]=%r must be a suite name (%s) or a dict with argv (a list of strings)"
                              % (i, c, ", ".join(SUITES)))
        out.append(_validate_one(i, c))
    return out


# -- running the checks (their processes: runner) ------------------------------------------------

def _open_exe(root_fd, rel):
    """Open the final file rel resolves to beneath root (in-root symlinks followed, nothing outside
    root, the final entry opened with O_NOFOLLOW).  Returns (fd, None) or (None, why)."""
    try:
        pfd, _prel, name = follow_beneath(root_fd, rel, "smoke argv[0]")
    except PolicyError as e:
        return None, "%s does not resolve inside root: %s" % (rel, e.msg)
    except OSError as e:
        return None, "%s cannot be resolved inside root: %s" % (rel, e.strerror or e)
    try:
        before = lstat_at(pfd, name)
        if before is None:
            return None, "%s does not resolve to a file inside root" % rel
        if not stat.S_ISREG(before.st_mode):
            return None, "%s resolves to a %s inside root, not a regular file" % (rel, kind_of(before))
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=pfd)
        except OSError as e:
            return None, "%s cannot be opened inside root: %s" % (rel, e.strerror or e)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            os.close(fd)
            return None, "%s changed while it was being opened inside root" % rel
        return fd, None
    finally:
        os.close(pfd)


def _loader_missing(rc, err):
    return rc == 127 and any(b"error while loading shared libraries" in t for t in (bytes(err.head), bytes(err.tail)))


def _execute(root, root_fd, c, host_fallback):
    """Run one custom check.  Returns (mode, rc or None, out, err, timed_out, why-not-run or None)."""
    argv = c["argv"]
    fd, why = _open_exe(root_fd, argv[0])
    if fd is None:
        return None, None, None, None, False, why
    try:
        if root == "/":
            rc, out, err, timed_out = runner.run_once(argv, c["timeout"], {})
            return "host", rc, out, err, timed_out, None
        reason = None
        try:
            rc, out, err, timed_out = runner.run_once(argv, c["timeout"], {"preexec_fn": runner.chroot_into(root)})
            if timed_out or not _loader_missing(rc, err):
                return "chroot", rc, out, err, timed_out, None
            reason = "its loader or a shared library is missing in root"
        except OSError as e:
            reason = "exec inside root failed: %s" % (e.strerror or e)
        except subprocess.SubprocessError as e:
            reason = "cannot chroot into root: %s" % e
        if not host_fallback:
            return ("chroot", None, None, None, False,
                    "cannot run inside a chroot of root (%s) and policy.smoke_host_fallback is false; put what the "
                    "program needs into root or set policy.smoke_host_fallback: true" % reason)
        script = os.pread(fd, 2, 0) == b"#!"
        rc, out, err, timed_out = runner.run_once(argv, c["timeout"], {"preexec_fn": runner.exec_fd(fd, argv, script)})
        return "host_fd", rc, out, err, timed_out, None
    finally:
        os.close(fd)


def _result(c, mode, rc, out, err, timed_out):
    r = {"name": c["name"], "ok": False, "rc": rc, "mode": mode,
         "stdout_bytes": out.total, "stderr_bytes": err.total,
         "stdout_truncated": out.truncated, "stderr_truncated": err.truncated}
    if timed_out:
        r["detail"] = "timed out after %.1fs; every process of the check was killed" % c["timeout"]
    else:
        r["ok"] = rc == c["rc"]
        r["detail"] = "rc=%d (expected %d)" % (rc, c["rc"])
        rx = c.get("stdout_regex")
        if r["ok"] and rx and not any(re.search(rx, t) for t in out.texts()):
            r["ok"] = False
            r["detail"] = "stdout does not match %r" % rx
    for what, buf in (("stdout", out), ("stderr", err)):
        if buf.truncated:
            r["detail"] += "; %s truncated: kept the first %d and last %d of %d bytes" % (
                what, len(buf.head), len(buf.tail), buf.total)
    if not r["ok"]:
        tail = err.texts()[-1].strip()
        if tail:
            r["detail"] += "; stderr: " + tail[-300:]
    return r


def run_checks(root, root_fd, checks, links, host_fallback=True):
    """Returns [{name, ok, rc, mode, detail, ...}].  Never raises for a check: a check that cannot
    run is a failed check (and so a rollback), whatever the reason."""
    results = []
    expanded = []
    for c in ([{"suite": checks}] if isinstance(checks, str) else checks):
        if "suite" in c:
            expanded.extend(_suite(c["suite"], links))
        else:
            expanded.append(c)
    for c in expanded:
        if c.get("resolve"):
            results.append(_resolve_check(c, lambda rel: host_path_beneath(root, root_fd, rel)))
            continue
        try:
            mode, rc, out, err, timed_out, why = _execute(root, root_fd, c, host_fallback)
        except Exception as e:  # noqa: B902 -- after the swap a check that cannot run fails (and rolls back), it never raises
            results.append({"name": c["name"], "ok": False, "rc": None, "mode": None,
                            "detail": "cannot execute: %s: %s" % (type(e).__name__, e)})
            continue
        if why is not None:
            results.append({"name": c["name"], "ok": False, "rc": None, "mode": mode, "detail": why})
            continue
        results.append(_result(c, mode, rc, out, err, timed_out))
    return results


def _suite(name, links):
    out = []
    for link in links:
        if name == "resolve":
            out.append({"resolve": True, "name": "resolve %s" % link["target"], "target": link["target"],
                        "source": link["source"]})
        else:
            tool = os.path.basename(link["target"])
            args = _COREUTILS_ARGS.get(tool, ["--help"])
            out.append({"argv": [link["target"]] + args, "rc": 0, "stdout_regex": None, "timeout": DEFAULT_TIMEOUT,
                        "name": "coreutils %s" % " ".join([link["target"]] + args)})
    return out


def _resolve_check(c, host_path_of):
    tgt = host_path_of(c["target"])
    src = host_path_of(c["source"])
    if tgt is None or src is None or tgt != src:
        return {"name": c["name"], "ok": False, "rc": None, "mode": "resolve",
                "detail": "%s resolves to %s, expected %s" % (c["target"], tgt, src)}
    try:
        st = os.stat(src)
    except OSError as e:
        return {"name": c["name"], "ok": False, "rc": None, "mode": "resolve", "detail": str(e)}
    ok = stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)
    return {"name": c["name"], "ok": ok, "rc": None, "mode": "resolve",
            "detail": "resolves to an executable file" if ok else "%s is not an executable regular file" % c["source"]}
