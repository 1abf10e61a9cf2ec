"""Property-based attacks on backup sidecars and journals (issue 12, point 2).

Everything inside root may have been written by someone less trusted than the operator.  These
properties mutate sidecars and journal begin records (types, paths such as /etc/shadow, ../../x,
absolute, NUL, huge sizes, deep nesting, invalid UTF-8 and other encodings, duplicate keys, floats
and bools for ints) and drive restore, prune and recovery through the public engine facade, in
process.  For every generated case:

- nothing but a SwitchyardError (raised or returned) or a success comes out: no internal error;
- nothing outside root is opened, read, written, created or removed: a decoy directory next to the
  root is watched with inotify (IN_OPEN fires even for O_NOATIME opens) and its files' inode, size,
  mtime and ctime are compared; the real /etc/shadow is compared by stat;
- a refused restore changes no target.

The pure parsers get thousands of cases more.  Case counts (max_examples) add up to well over
2,000 per run of this file; the whole file stays under a minute on one core.
"""
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils import engine  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal as jr  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import journal_check as jcheck  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import sidecar as sc  # noqa: E402

FUZZ = settings(deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])

# -- inotify (ctypes): every event on the decoy directory and the directory holding root ---------

_IN_ACCESS, _IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE, _IN_CLOSE_NOWRITE, _IN_OPEN = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE, _IN_DELETE_SELF, _IN_MOVE_SELF = 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
_ALL = 0xFFF
_CHANGES = _IN_MODIFY | _IN_ATTRIB | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF


class Inotify(object):
    def __init__(self):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.wds = {}

    def watch(self, path, mask):
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        assert wd >= 0, os.strerror(ctypes.get_errno())
        self.wds[wd] = path

    def events(self):
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    return out
                raise
            i = 0
            while i < len(data):
                wd, mask, _cookie, size = struct.unpack_from("iIII", data, i)
                name = data[i + 16:i + 16 + size].rstrip(b"\0").decode("utf-8", "replace")
                out.append((self.wds.get(wd), name, mask))
                i += 16 + size

    def close(self):
        os.close(self.fd)


# -- one sandbox per module: root with backups and a journal, a decoy next to it -------------------

class World(object):
    """root/usr/bin/f000 (a link, one file backup) and f001 (a link, two file backups); a decoy directory
    next to root holding a 0600 secret; a template of everything the engine may change, restored after
    each generated case."""

    def __init__(self, base):
        self.base = base
        self.sb = make_sandbox(base, tools=(), synthetic=2)
        self.root = self.sb.root
        self.decoy = os.path.join(base, "decoy")
        os.makedirs(self.decoy)
        self.secret = os.path.join(self.decoy, "secret")
        with open(self.secret, "wb") as f:
            f.write(b"outside root: never read, never copied\n")
        os.chmod(self.secret, 0o600)
        os.symlink("secret", os.path.join(self.decoy, "alias"))
        self.targets = [self.sb.p("/usr/bin/f000"), self.sb.p("/usr/bin/f001")]
        links = [{"source": self.sb.p("/opt/prov/bin/f00%d" % i), "target": t} for i, t in enumerate(self.targets)]
        rep, err, _w = engine.apply(self.settings(), links)
        assert err is None, err.msg
        self.plan_id = rep["plan_id"]
        _rep, err, _w = engine.restore(self.settings(), targets=[self.targets[1]])
        assert err is None, err.msg
        rep, err, _w = engine.apply(self.settings(), [links[1]])
        assert err is None, err.msg
        self.bin = self.sb.p("/usr/bin")
        self.jdir = self.sb.p("/var/lib/switchyard/journal")
        self.sidecars = sorted(n for n in os.listdir(self.bin) if n.endswith(".meta.json"))
        assert len(self.sidecars) == 3
        # Finished journals are retired to journal/done/ (<ts>.<plan>.<run>.journal): the oldest is the first apply.
        done = os.path.join(self.jdir, "done")
        self.journals = sorted(n for n in os.listdir(done) if n.endswith(".journal"))
        with open(os.path.join(done, self.journals[0]), "rb") as f:
            self.begin = json.loads(f.read().splitlines()[0])
        self.template = os.path.join(base, "template")
        shutil.copytree(self.bin, os.path.join(self.template, "bin"), symlinks=True)
        shutil.copytree(self.jdir, os.path.join(self.template, "journal"), symlinks=True)
        self.decoy_state = self._decoy_state()
        self.shadow_state = self._stat("/etc/shadow")
        self.ino = Inotify()
        self.ino.watch(self.decoy, _ALL)
        self.ino.watch(base, _CHANGES)  # root's parent: nothing may be created, removed or renamed next to root

    def settings(self, **kw):
        return engine.Settings(root=self.root, **kw)

    def sidecar(self, name):
        with open(os.path.join(self.template, "bin", name), "rb") as f:
            return json.loads(f.read().decode("utf-8"))

    @staticmethod
    def _stat(path):
        try:
            st_ = os.lstat(path)
        except OSError:
            return None
        return (st_.st_ino, st_.st_size, st_.st_mode, st_.st_mtime_ns, st_.st_ctime_ns, st_.st_nlink)

    def _decoy_state(self):
        # No listdir here: it would open the watched directory itself.
        return dict((n, self._stat(os.path.join(self.decoy, n))) for n in ("secret", "alias"))

    def targets_state(self):
        out = {}
        for t in self.targets:
            st_ = os.lstat(t)
            out[t] = (os.readlink(t),) if stat.S_ISLNK(st_.st_mode) else (st_.st_ino, st_.st_mode, st_.st_mtime_ns)
        return out

    def assert_outside_untouched(self, context):
        events = [e for e in self.ino.events() if e[0] == self.decoy or e[2] & _CHANGES]
        assert not events, "outside root was touched (%s): %s" % (context, events[:5])
        assert self._decoy_state() == self.decoy_state, context
        assert self._stat("/etc/shadow") == self.shadow_state, context

    def reset(self):
        for d, tpl in ((self.bin, "bin"), (self.jdir, "journal")):
            shutil.rmtree(d)
            shutil.copytree(os.path.join(self.template, tpl), d, symlinks=True)
        for t in self.targets:  # both targets are links to their providers again
            assert os.path.islink(t)
        self.ino.events()  # the reset itself only touched root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """On a real tmpfs: thousands of engine runs pay for process time, not for disk flushes."""
    mnt = str(tmp_path_factory.mktemp("fuzz"))
    subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=128m,mode=0755", "tmpfs", mnt])
    try:
        w = World(mnt)
        yield w
        w.ino.close()
        with open(w.secret, "rb") as f:
            assert f.read() == b"outside root: never read, never copied\n"
    finally:
        if subprocess.call(["umount", mnt]) != 0:
            subprocess.call(["umount", "-l", mnt])


# -- values an attacker writes --------------------------------------------------------------------

def _bad_paths(world_base):
    return [
        "/etc/shadow", "/etc/passwd", "../../../decoy/secret", "../../../../../../../../etc/shadow",
        os.path.join(world_base, "decoy", "secret"), os.path.join(world_base, "decoy", "alias"), "..", ".", "",
        "/", "a/b", "x\x00y", "\x00", "/usr/bin/../../../decoy/secret", "\udcff\udcfe", "\ud800", "\u202e.bak",
        "a" * 256, "a" * 5000, "../" * 2000, "/proc/self/fd/0", "/dev/zero",
    ]


_DECOY_BASE = "/nonexistent-until-module-setup"
SIDECAR_FIELDS = ["schema", "tag", "target", "created_ms", "plan_id", "action_id", "run_id", "prior_kind", "hash_alg",
                  "payload", "payload_hash", "prior_link_target", "backup_method", "tier", "mode", "size", "uid", "gid",
                  "atime_sec", "atime_nsec", "mtime_sec", "mtime_nsec", "xattrs", "backup_preservation", "extra"]


def scalars():
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(min_value=-(1 << 70), max_value=1 << 70),
        st.sampled_from([0, 1, -1, 0o755, 0o4755, 0o7777, 0o10000, 0o177777, (1 << 31), (1 << 32) - 1, (1 << 32),
                         (1 << 63) - 1, 1 << 63, 10 ** 9, 10 ** 9 - 1]),
        st.floats(allow_nan=True, allow_infinity=True), st.just(493.0), st.just("0755"), st.just("493"),
        st.text(max_size=40), st.sampled_from(_bad_paths(_DECOY_BASE)), st.just("a" * 70000),
        st.sampled_from(["file", "symlink", "absent", "directory", "backup_meta.v2", "sha256", "switchyard",
                         "0" * 64, "F" * 64, "g" * 64, "0" * 63, "hardlink", "copy"]))


def values():
    return st.recursive(scalars(), lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=8)


def xattr_maps():
    return st.one_of(
        st.dictionaries(st.sampled_from(["user.a", "trusted.b", "security.capability", "system.posix_acl_access",
                                         "bogus", "user.", "", "user.\x00", "u" * 300]),
                        st.one_of(st.sampled_from(["", "AAAA", "not base64!", "QUJD", "A" * 100000]), scalars()),
                        max_size=5),
        st.builds(lambda n: dict(("user.k%d" % i, "QUJD") for i in range(n)), st.integers(0, 400)))


def field_mutations(paths):
    return st.one_of(
        st.tuples(st.just("set"), st.sampled_from(SIDECAR_FIELDS), values()),
        st.tuples(st.just("set"), st.sampled_from(["payload", "prior_link_target", "target"]), st.sampled_from(paths)),
        st.tuples(st.just("set"), st.just("xattrs"), xattr_maps()),
        st.tuples(st.just("del"), st.sampled_from(SIDECAR_FIELDS), st.none()))


RAW = ["truncate", "bad_utf8", "utf16", "bom", "deep", "huge", "dup_key", "not_object", "nan", "bigint", "empty",
       "nul_bytes", "trailing_garbage", "latin1"]


def apply_mutations(doc, muts, raw):
    doc = dict(doc)
    for op, field, value in muts:
        if op == "set":
            doc[field] = value
        else:
            doc.pop(field, None)
    try:
        data = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError):
        data = json.dumps(doc).encode("ascii")
    if raw == "truncate":
        data = data[:len(data) // 2]
    elif raw == "bad_utf8":
        data = data.replace(b'"', b'"\xff\xfe', 1)
    elif raw == "utf16":
        data = data.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    elif raw == "bom":
        data = b"\xef\xbb\xbf" + data
    elif raw == "deep":
        data = b'{"schema": "backup_meta.v2", "xattrs": ' + b"[" * 200000 + b"]" * 200000 + b"}"
    elif raw == "huge":
        data = data + b" " * ((1 << 20) + 1)
    elif raw == "dup_key":
        data = b'{"mode": 2541, "payload": "/etc/shadow", ' + data[1:]
    elif raw == "not_object":
        data = b"[" + data + b"]"
    elif raw == "nan":
        data = data.replace(b"{", b'{"mode": NaN, "size": Infinity, ', 1)
    elif raw == "bigint":
        data = data.replace(b"{", b'{"mode": ' + b"9" * 5000 + b", ", 1)
    elif raw == "empty":
        data = b""
    elif raw == "nul_bytes":
        data = data.replace(b",", b",\x00", 1)
    elif raw == "trailing_garbage":
        data = data + b"}{"
    elif raw == "latin1":
        data = data.decode("utf-8", "surrogatepass").encode("latin-1", "replace") + b"\xe9"
    return data


def sidecar_bytes(template, paths):
    return st.builds(lambda muts, raw: apply_mutations(template, muts, raw),
                     st.lists(field_mutations(paths), min_size=1, max_size=4),
                     st.one_of(st.none(), st.none(), st.none(), st.sampled_from(RAW)))


# -- 1. the sidecar parser alone: checked result or SidecarInvalid, nothing else --------------------

GOOD_SIDECAR = {
    "schema": "backup_meta.v2", "tag": "switchyard", "target": "/usr/bin/ls", "created_ms": 1700000000000,
    "plan_id": str(uuid.uuid4()), "action_id": str(uuid.uuid4()), "run_id": str(uuid.uuid4()), "prior_kind": "file",
    "hash_alg": "sha256", "payload": ".ls.switchyard.1700000000000.bak", "payload_hash": "ab" * 32,
    "prior_link_target": None, "backup_method": "hardlink", "tier": "full", "mode": 0o755, "size": 10,
    "uid": 0, "gid": 0, "atime_sec": 1, "atime_nsec": 2, "mtime_sec": 3, "mtime_nsec": 4,
    "xattrs": {"user.a": "QUJD"}, "backup_preservation": {"mode": "applied"},
}
GOOD_NAME = ".ls.switchyard.1700000000000.bak.meta.json"


def test_the_good_sidecar_parses():
    parsed = sc.parse_sidecar(json.dumps(GOOD_SIDECAR).encode(), GOOD_NAME, "switchyard")
    assert parsed.payload_name == ".ls.switchyard.1700000000000.bak" and parsed.meta["mode"] == 0o755


@settings(FUZZ, max_examples=1500)
@given(data=sidecar_bytes(GOOD_SIDECAR, _bad_paths("/tmp/x")))
def test_parse_sidecar_returns_checked_fields_or_names_the_field(data):
    try:
        parsed = sc.parse_sidecar(data, GOOD_NAME, "switchyard")
    except sc.SidecarInvalid as e:
        assert e.field and e.reason and GOOD_NAME in str(e)
        assert "ab" * 32 not in str(e)  # never echoes a hash
        return
    meta = parsed.meta
    # Whatever is accepted is exactly what the engine may rely on.
    assert parsed.payload_name in (None, ".ls.switchyard.1700000000000.bak")
    assert meta["payload"] == parsed.payload_name
    assert meta["prior_kind"] in ("file", "symlink", "absent")
    assert set(meta) <= set(SIDECAR_FIELDS)
    for k in ("mode", "size", "uid", "gid", "created_ms", "atime_sec", "atime_nsec", "mtime_sec", "mtime_nsec"):
        if k in meta:
            assert isinstance(meta[k], int) and not isinstance(meta[k], bool)
    if "mode" in meta:
        assert 0 <= meta["mode"] <= 0o7777
    if meta["prior_kind"] == "file":
        assert "mode" in meta
    if meta.get("payload_hash") is not None:
        assert len(meta["payload_hash"]) == 64 and set(meta["payload_hash"]) <= set("0123456789abcdef")
    if meta.get("prior_link_target") is not None:
        raw = os.fsencode(meta["prior_link_target"])
        assert b"\0" not in raw and 0 < len(raw) <= 4095


# -- 2. the journal validator alone --------------------------------------------------------------

GOOD_BEGIN = {"record": "begin", "kind": "apply", "plan_id": str(uuid.uuid4()), "run_id": str(uuid.uuid4()),
              "tag": "switchyard", "ts_ms": 1700000000000, "backup_dir_rel": None,
              "actions": [{"action_id": str(uuid.uuid4()), "target": "/usr/bin/ls", "link_text": "/opt/prov/bin/ls",
                           "backup_ms": 1700000000000, "prior_kind": "file"}]}
BEGIN_FIELDS = ["kind", "plan_id", "run_id", "tag", "ts_ms", "backup_dir_rel", "actions"]
ACTION_FIELDS = ["action_id", "target", "link_text", "backup_ms", "prior_kind"]


def begin_mutations(paths):
    top = st.one_of(st.tuples(st.just("top"), st.sampled_from(BEGIN_FIELDS), values()),
                    st.tuples(st.just("top"), st.sampled_from(["backup_dir_rel", "tag", "run_id"]), st.sampled_from(paths)),
                    st.tuples(st.just("deltop"), st.sampled_from(BEGIN_FIELDS), st.none()))
    act = st.one_of(st.tuples(st.just("act"), st.sampled_from(ACTION_FIELDS), values()),
                    st.tuples(st.just("act"), st.sampled_from(["target", "link_text"]), st.sampled_from(paths)),
                    st.tuples(st.just("delact"), st.sampled_from(ACTION_FIELDS), st.none()),
                    st.tuples(st.just("many"), st.just(None), st.sampled_from([0, 2, 300, jcheck.MAX_ACTIONS + 1])))
    return st.lists(st.one_of(top, act), min_size=1, max_size=4)


def mutate_begin(begin, muts):
    begin = json.loads(json.dumps(begin))
    # "many" goes last and copies a small action only: a large value set after it would be copied
    # tens of thousands of times (gigabytes) without testing anything more.
    muts = [m for m in muts if m[0] != "many"] + [m for m in muts if m[0] == "many"][-1:]
    for op, field, value in muts:
        acts = begin.get("actions")
        act = acts[0] if isinstance(acts, list) and acts and isinstance(acts[0], dict) else None
        if op == "top":
            begin[field] = value
        elif op == "deltop":
            begin.pop(field, None)
        elif op == "act" and act is not None:
            act[field] = value
        elif op == "delact" and act is not None:
            act.pop(field, None)
        elif op == "many" and act is not None:
            # Many copies of a small action (a huge one repeated only costs time): the bound is what is tested.
            small = act if len(json.dumps(act)) < 400 else {"target": "/usr/bin/f000"}
            begin["actions"] = [small] * value
    return begin


@settings(FUZZ, max_examples=600)
@given(muts=begin_mutations(_bad_paths("/tmp/x")))
def test_check_begin_accepts_only_in_root_relative_values(muts):
    begin = mutate_begin(GOOD_BEGIN, muts)
    try:
        jcheck.check_begin("j.journal", begin)
    except jcheck.JournalInvalid as e:
        assert e.journal == "j.journal" and e.field and e.reason
        return
    if begin.get("backup_dir_rel") is not None:
        assert jcheck.check_in_root_path(begin["backup_dir_rel"]) is None
    for act in begin["actions"]:
        parts = act["target"].split("/")
        assert act["target"].startswith("/") and ".." not in parts and "." not in parts and "\0" not in act["target"]
        assert isinstance(act["backup_ms"], int) and not isinstance(act["backup_ms"], bool) and act["backup_ms"] >= 0


# -- 3. restore, prune and preflight through the engine with a hostile sidecar ---------------------

def _call(op, world):
    """Run one engine operation; returns the error (None on success).  Only SwitchyardError may come out."""
    s = world.settings()
    try:
        if op == "restore_latest":
            _rep, err, _w = engine.restore(s, targets=list(world.targets))
        elif op == "restore_previous":
            _rep, err, _w = engine.restore(s, targets=[world.targets[1]], which="previous")
        elif op == "restore_plan":
            _rep, err, _w = engine.restore(s, plan_id=world.plan_id)
        elif op == "prune":
            _rep, err, _w = engine.prune(s, list(world.targets), retention_count=1)
        elif op == "preflight_restore":
            _rep, err, _w = engine.preflight(s, restores=list(world.targets), fail_on_stop=False)
        else:
            raise AssertionError(op)
    except engine.SwitchyardError as e:
        return e
    return err


OPS = ["restore_latest", "restore_previous", "restore_plan", "prune", "preflight_restore"]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_engine_with_hostile_sidecar(world, which):
    name = world.sidecars[which]
    template = world.sidecar(name)
    paths = _bad_paths(world.base)

    @settings(FUZZ, max_examples=130)
    @given(data=sidecar_bytes(template, paths), op=st.sampled_from(OPS))
    def case(data, op):
        world.reset()
        with open(os.path.join(world.bin, name), "wb") as f:
            f.write(data)
        before = world.targets_state()
        err = _call(op, world)
        context = "%s on %s = %r" % (op, name, data[:200])
        world.assert_outside_untouched(context)
        if err is not None:
            assert err.error_id in engine.ERROR_TABLE and err.error_id != "E_INTERNAL", context
            assert isinstance(err.msg, str) and template.get("payload_hash", "") not in err.msg.replace(
                "payload_hash", ""), context
            if op.startswith("restore"):
                assert world.targets_state() == before, "a refused restore changed a target: %s" % context
    case()


# -- 4. recovery with a hostile journal -----------------------------------------------------------

@pytest.mark.parametrize("op", ["prune", "preflight_restore", "restore_latest"])
def test_recovery_with_hostile_journal(world, op):
    paths = _bad_paths(world.base) + ["/../../decoy", "/usr/bin/../../../decoy", "/usr/../../decoy/secret"]

    @settings(FUZZ, max_examples=120)
    @given(muts=begin_mutations(paths), raw=st.sampled_from([None, None, None, "deep", "garbage", "list", "bad_utf8"]))
    def case(muts, raw):
        world.reset()
        begin = mutate_begin(world.begin, muts)
        begin["run_id"] = begin["run_id"] if isinstance(begin.get("run_id"), str) else str(uuid.uuid4())
        try:
            line = json.dumps(begin, ensure_ascii=False).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):
            line = json.dumps(begin).encode("ascii")
        if raw == "deep":
            line = b"[" * 100000 + b"]" * 100000
        elif raw == "garbage":
            line = line[:len(line) // 3]
        elif raw == "list":
            line = b"[" + line + b"]"
        elif raw == "bad_utf8":
            line = line.replace(b'"', b'"\xff', 1)
        line = line[:jr.MAX_JOURNAL_BYTES + 100]  # larger ones are never read (and would only fill the tmpfs)
        with open(os.path.join(world.jdir, str(uuid.uuid4()) + ".journal"), "wb") as f:
            f.write(line + b"\n")
        before = world.targets_state()
        err = _call(op, world)
        context = "%s with begin %r" % (op, line[:300])
        world.assert_outside_untouched(context)
        if err is not None:
            assert err.error_id in engine.ERROR_TABLE and err.error_id != "E_INTERNAL", context
        if op == "preflight_restore":
            assert world.targets_state() == before, context
    case()
