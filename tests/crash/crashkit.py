"""Sandboxes, engine processes, real tmpfs mounts and the consistency checks of the crash suite.

A sandbox is a root directory with N targets under usr/bin (distinct random bytes, mode 0755,
root-owned; a few are symlinks) and one provider file per target under opt/prov/bin.  Every
engine call runs in its own process (crash_driver.py) so that it can be SIGKILLed for real.
"""
import contextlib
import hashlib
import json
import os
import random
import stat
import subprocess
import sys
import time

import jsonschema
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DRIVER = os.path.join(HERE, "crash_driver.py")
SCHEMA_PATH = os.path.join(REPO, "schemas", "report.schema.json")
TEMP_MARKER = ".swy-tmp."

with open(SCHEMA_PATH) as _f:
    _VALIDATOR = jsonschema.Draft202012Validator(json.load(_f))


# -- sandboxes ------------------------------------------------------------------------------------

class Sandbox(object):
    """A root with `n` targets.  `originals` maps each target (root-relative) to what was there."""

    def __init__(self, root, n=120, symlinks=2, seed=None, big=(0, 1, 2)):
        self.root = str(root)
        self.rng = random.Random(seed)
        self.bin = os.path.join(self.root, "usr", "bin")
        self.prov = os.path.join(self.root, "opt", "prov", "bin")
        os.makedirs(self.bin, exist_ok=True)
        os.makedirs(self.prov, exist_ok=True)
        self.originals = {}
        self.links = []
        for i in range(n):
            name = "t%03d" % i
            rel = "/usr/bin/" + name
            if i >= n - symlinks:
                text = "/usr/lib/alt/%s" % name
                os.symlink(text, os.path.join(self.bin, name))
                self.originals[rel] = ("symlink", text)
            else:
                size = 200 * 1024 if i in big else self.rng.choice((0, 1, 100, 4095, 4096, 9000))
                data = bytes(self.rng.getrandbits(8) for _unused in range(min(size, 64))) + os.urandom(max(0, size - 64))
                path = os.path.join(self.bin, name)
                with open(path, "wb") as f:
                    f.write(data)
                os.chmod(path, 0o755)
                self.originals[rel] = ("file", hashlib.sha256(data).hexdigest(), 0o755)
            src = os.path.join(self.prov, name)
            with open(src, "wb") as f:
                f.write(b"#!/bin/sh\n# provider %s %s\n" % (name.encode(), os.urandom(8).hex().encode()))
            os.chmod(src, 0o755)
            self.links.append({"source": src, "target": os.path.join(self.root, rel.lstrip("/"))})
        self.sources = dict(("/" + os.path.relpath(l["target"], self.root), "/" + os.path.relpath(l["source"], self.root))
                            for l in self.links)

    def host(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def targets(self):
        return [l["target"] for l in self.links]

    def state_of(self, rel):
        """('original'|'link'|'other', detail) of one target."""
        path = self.host(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "missing", None
        orig = self.originals[rel]
        if stat.S_ISLNK(st.st_mode):
            text = os.readlink(path)
            if text == self.sources[rel]:
                return "link", text
            if orig[0] == "symlink" and text == orig[1]:
                return "original", text
            return "other", "symlink to %r" % text
        if stat.S_ISREG(st.st_mode) and orig[0] == "file":
            if sha256_file(path) == orig[1] and stat.S_IMODE(st.st_mode) == orig[2]:
                return "original", None
            return "other", "file with different bytes or mode"
        return "other", "mode %o" % st.st_mode


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- engine processes -----------------------------------------------------------------------------

def engine_env(kill_at=None, fail_fsync=None):
    env = dict(os.environ)
    env.pop("SWITCHYARD_TEST_KILL_AT", None)
    env.pop("SWITCHYARD_TEST_FAIL_FSYNC", None)
    if kill_at:
        env["SWITCHYARD_TEST_KILL_AT"] = kill_at
    if fail_fsync is not None:
        env["SWITCHYARD_TEST_FAIL_FSYNC"] = str(fail_fsync)
    return env


def engine_request(sb, op, **kw):
    req = {"op": op, "root": sb.root}
    if op in ("apply", "preflight"):
        req.setdefault("links", sb.links)
    if op in ("restore", "prune") and "plan_id" not in kw:
        req["targets"] = sb.targets()
    req.update(kw)
    return req


def start_engine(sb, op, kill_at=None, fail_fsync=None, quiet=False, **kw):
    """Popen of one engine call (stdout: one JSON line; quiet: no pipes, for polling without reading)."""
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen([sys.executable, DRIVER, json.dumps(engine_request(sb, op, **kw))],
                            stdout=out, stderr=out, env=engine_env(kill_at, fail_fsync), universal_newlines=True)


class EngineResult(object):
    def __init__(self, proc, out, err):
        self.rc = proc.returncode
        self.killed = proc.returncode == -9
        self.stderr = err
        self.data = json.loads(out.strip().splitlines()[-1]) if out.strip() and not self.killed else {}
        self.report = self.data.get("report")
        self.error_id = self.data.get("error_id")
        self.raised = self.data.get("raised", False)
        if self.report is not None:
            # As the action plugin sees it (the module pops "changed").  The crash suite holds the
            # parts it is about to the schema: recovery, audit events, summary (backup_durable).
            checked = dict((k, v) for k, v in self.report.items() if k != "changed")
            errors = sorted((e for e in _VALIDATOR.iter_errors(checked)
                             if list(e.path)[:1] in (["recovery"], ["events"], ["summary"])),
                            key=lambda e: list(e.path))
            assert not errors, "report does not validate: %s" % "; ".join(
                "%s: %s" % ("/".join(map(str, e.path)), e.message) for e in errors[:5])

    def events(self, stage):
        return [e for e in expand_events((self.report or {})) if e["stage"] == stage]

    def __repr__(self):
        return "EngineResult(rc=%s, error_id=%s, msg=%s)\n%s" % (self.rc, self.error_id, self.data.get("msg"),
                                                                 self.stderr[-3000:])


def run_engine(sb, op, kill_at=None, fail_fsync=None, timeout=120, **kw):
    proc = start_engine(sb, op, kill_at, fail_fsync, **kw)
    out, err = proc.communicate(timeout=timeout)
    res = EngineResult(proc, out, err)
    assert res.killed or res.rc == 0, res
    return res


# -- consistency checks ---------------------------------------------------------------------------

def walk_names(top):
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            yield dirpath, n


def temps(sb):
    return [os.path.join(d, n) for d, n in walk_names(sb.root) if TEMP_MARKER in n]


def backups(sb, backup_root=None):
    """{target rel: [(sidecar path, meta)]} for every sidecar under the backup location."""
    out = {}
    top = backup_root or sb.root
    for d, n in walk_names(top):
        if n.endswith(".bak.meta.json") and TEMP_MARKER not in n:
            path = os.path.join(d, n)
            with open(path, "rb") as f:
                raw = f.read()
            try:
                meta = json.loads(raw.decode("utf-8"))
            except ValueError:
                raise AssertionError("sidecar %s does not parse: %r" % (path, raw[:200]))
            assert meta.get("schema") == "backup_meta.v2", (path, meta)
            out.setdefault(meta["target"], []).append((path, meta))
    return out


def orphan_payloads(sb, backup_root=None):
    top = backup_root or sb.root
    found = []
    for d, n in walk_names(top):
        if n.endswith(".bak") and TEMP_MARKER not in n and not os.path.lexists(os.path.join(d, n + ".meta.json")):
            found.append(os.path.join(d, n))
    return found


def journals(sb, state_rel="var/lib/switchyard"):
    """[(name, records)] of every journal: the live directory, then the retired ones (journal/done/)."""
    jdir = os.path.join(sb.root, state_rel, "journal")
    out = []
    for d in (jdir, os.path.join(jdir, "done")):
        if not os.path.isdir(d):
            continue
        for n in sorted(os.listdir(d)):
            if not n.endswith(".journal") or n.startswith("."):
                continue
            recs = []
            with open(os.path.join(d, n), "rb") as f:
                for line in f.read().decode("utf-8", "replace").splitlines():
                    try:
                        recs.append(json.loads(line))
                    except ValueError:
                        pass
            out.append((n, recs))
    return out


def unfinished(sb, state_rel="var/lib/switchyard"):
    out = []
    for n, recs in journals(sb, state_rel):
        final = None
        for r in reversed(recs[1:]):
            if r.get("record") == "reopen":
                break
            if r.get("record") == "end":
                final = r.get("state")
                break
        if final is None:
            out.append(n)
    return out


def check_after_kill(sb, backup_root=None):
    """What SPEC 4.7 promises the instant a process dies: every target old or new, every sidecar
    parses, and every swapped target has a complete backup holding its original bytes."""
    states = {}
    for rel in sb.originals:
        state, detail = sb.state_of(rel)
        assert state in ("original", "link"), "%s is %s (%s) after the kill" % (rel, state, detail)
        states[rel] = state
    bks = backups(sb, backup_root)
    for rel, state in states.items():
        if state != "link":
            continue
        orig = sb.originals[rel]
        ok = False
        for path, meta in bks.get(rel, []):
            d = os.path.dirname(path)
            if orig[0] == "file" and meta.get("prior_kind") == "file" and meta.get("payload_hash") == orig[1]:
                payload = os.path.join(d, meta["payload"])
                ok = os.path.exists(payload) and sha256_file(payload) == orig[1]
            elif orig[0] == "symlink" and meta.get("prior_link_target") == orig[1]:
                ok = os.path.islink(os.path.join(d, meta["payload"]))
            if ok:
                break
        assert ok, "%s is swapped but no complete backup holds its original %s" % (rel, orig)
    return states


def check_consistent(sb, backup_root=None, state_rel="var/lib/switchyard"):
    """After the next run: no unfinished plan, no temps, no incomplete backups, no extra hard links
    on originals, and targets either all original (rolled back) or all links (committed).
    Returns "original" or "link"."""
    states = check_after_kill(sb, backup_root)
    assert not unfinished(sb, state_rel), "unfinished journals left: %s" % unfinished(sb, state_rel)
    assert not temps(sb), "temp names left: %s" % temps(sb)[:5]
    if backup_root:
        assert not [p for d, n in walk_names(backup_root) for p in [n] if TEMP_MARKER in n]
    assert not orphan_payloads(sb, backup_root), "payloads without sidecar: %s" % orphan_payloads(sb, backup_root)[:5]
    kinds = set(states.values())
    assert len(kinds) == 1, "a plan must end all-original or all-linked, got %s" % sorted(
        (k, sum(1 for v in states.values() if v == k)) for k in kinds)
    kind = kinds.pop()
    if kind == "original":
        for rel, orig in sb.originals.items():
            if orig[0] == "file":
                st = os.lstat(sb.host(rel))
                assert st.st_nlink == 1, "%s has %d links after rollback (a backup was left)" % (rel, st.st_nlink)
    return kind


# -- real tmpfs mounts ----------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path, size="8m", extra=""):
    """Mount a size-limited tmpfs at path; always unmounted (lazily if busy) on the way out."""
    path = str(path)
    os.makedirs(path, exist_ok=True)
    opts = "size=%s,mode=0755" % size + ("," + extra if extra else "")
    subprocess.check_call(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path])
    try:
        yield path
    finally:
        for _unused in range(3):
            if subprocess.call(["umount", path], stderr=subprocess.DEVNULL) == 0:
                break
            time.sleep(0.2)
        else:
            subprocess.call(["umount", "-l", path])


def remount(path, opts):
    subprocess.check_call(["mount", "-o", "remount," + opts, str(path)])
