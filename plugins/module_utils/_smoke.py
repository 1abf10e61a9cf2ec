# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Smoke checks run after a swap: the resolve and coreutils suites and custom checks. Private to this collection."""

from __future__ import absolute_import, division, print_function

import os
import re
import stat
import subprocess

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError

SUITES = ("resolve", "coreutils")

# Harmless invocations per tool name for the coreutils suite; anything else runs --help.
_COREUTILS_ARGS = {
    "ls": ["/"], "cat": ["/dev/null"], "true": [], "echo": ["switchyard"], "pwd": [], "date": ["+%s"],
    "stat": ["/"], "readlink": ["/"], "sort": ["/dev/null"], "sha256sum": ["/dev/null"], "uname": [],
    "id": [], "whoami": [], "basename": ["/a/b"], "dirname": ["/a/b"], "head": ["-c0", "/dev/null"],
    "tail": ["-c0", "/dev/null"], "wc": ["-c", "/dev/null"], "env": ["true"], "sleep": ["0"],
    "test": ["-d", "/"], "printf": ["x"], "seq": ["1"], "nproc": [], "hostname": [], "mkdir": ["--help"],
}


def validate_checks(smoke):
    """Normalise the `smoke` option: None, a suite name, or a list of {argv, rc, stdout_regex, timeout}."""
    if smoke is None or smoke == [] or smoke == "":
        return None
    if isinstance(smoke, str):
        if smoke not in SUITES:
            raise PolicyError("smoke=%r is not a suite; use one of %s or a list of {argv, rc, stdout_regex, timeout}"
                              % (smoke, ", ".join(SUITES)))
        return smoke
    if not isinstance(smoke, list):
        raise PolicyError("smoke must be a suite name or a list of checks, got %r" % (smoke,))
    out = []
    for i, c in enumerate(smoke):
        if isinstance(c, str) and c in SUITES:
            out.append({"suite": c})
            continue
        if not isinstance(c, dict) or "argv" not in c:
            raise PolicyError("smoke[%d]=%r must be a dict with argv (a list of strings)" % (i, c))
        unknown = sorted(set(c) - {"argv", "rc", "stdout_regex", "timeout", "name"})
        if unknown:
            raise PolicyError("smoke[%d] has unknown key(s) %s; allowed: argv, rc, stdout_regex, timeout, name"
                              % (i, ", ".join(unknown)))
        argv = c["argv"]
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise PolicyError("smoke[%d].argv must be a non-empty list of strings" % i)
        if not argv[0].startswith("/"):
            raise PolicyError("smoke[%d].argv[0]=%r must be an absolute path as seen inside root" % (i, argv[0]))
        rx = c.get("stdout_regex")
        if rx is not None:
            try:
                re.compile(rx)
            except re.error as e:
                raise PolicyError("smoke[%d].stdout_regex=%r is not a valid regular expression: %s" % (i, rx, e))
        timeout = c.get("timeout", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise PolicyError("smoke[%d].timeout must be a positive number of seconds" % i)
        out.append({"argv": argv, "rc": int(c.get("rc", 0)), "stdout_regex": rx, "timeout": float(timeout),
                    "name": c.get("name") or " ".join(argv)})
    return out


def _run(root, host_exe, argv, timeout):
    """Run argv (paths as seen inside root).  Inside a chroot of root when root is not '/' and the
    chroot holds what the program needs; otherwise the resolved host file with argv[0] kept."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    kwargs = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)
    if root != "/":
        try:
            p = subprocess.run(argv, preexec_fn=lambda: (os.chroot(root), os.chdir("/")), check=False, **kwargs)
            loader_missing = p.returncode == 127 and b"error while loading shared libraries" in p.stderr
            if not loader_missing:
                return p, "chroot"
        except OSError:
            pass
    argv0 = os.path.basename(argv[0])
    p = subprocess.run([argv0] + argv[1:], executable=host_exe, check=False, **kwargs)
    return p, "host"


def run_checks(root, checks, links, host_path_of):
    """Returns [{name, ok, rc, detail, mode}]; host_path_of(in_root_path) resolves in-root symlinks
    to the host path of the final file (None when it does not resolve inside root)."""
    results = []
    expanded = []
    for c in ([{"suite": checks}] if isinstance(checks, str) else checks):
        if "suite" in c:
            expanded.extend(_suite(c["suite"], links))
        else:
            expanded.append(c)
    for c in expanded:
        if c.get("resolve"):
            results.append(_resolve_check(c, host_path_of))
            continue
        host_exe = host_path_of(c["argv"][0])
        if host_exe is None:
            results.append({"name": c["name"], "ok": False, "rc": None, "mode": None,
                            "detail": "%s does not resolve to a file inside root" % c["argv"][0]})
            continue
        try:
            p, mode = _run(root, host_exe, c["argv"], c["timeout"])
        except subprocess.TimeoutExpired:
            results.append({"name": c["name"], "ok": False, "rc": None, "mode": None,
                            "detail": "timed out after %.1fs" % c["timeout"]})
            continue
        except OSError as e:
            results.append({"name": c["name"], "ok": False, "rc": None, "mode": None, "detail": "cannot execute: %s" % e})
            continue
        out = p.stdout.decode("utf-8", "replace")
        ok = p.returncode == c["rc"]
        detail = "rc=%d (expected %d)" % (p.returncode, c["rc"])
        if ok and c.get("stdout_regex") and not re.search(c["stdout_regex"], out):
            ok = False
            detail = "stdout does not match %r" % c["stdout_regex"]
        if not ok:
            err = p.stderr.decode("utf-8", "replace").strip()
            if err:
                detail += "; stderr: " + err[-300:]
        results.append({"name": c["name"], "ok": ok, "rc": p.returncode, "mode": mode, "detail": detail})
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
            out.append({"argv": [link["target"]] + args, "rc": 0, "stdout_regex": None, "timeout": 10.0,
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
