"""Issue 13 point 1: every side path (lock_path, audit_log, state_dir, policy.backup_dir) stays beneath root.

Each test attacks one defence: a symlink planted at every component of each side path (absolute, pointing
at a decoy directory outside root, and relative, climbing out of root), a file where a directory belongs,
a hard-linked or foreign lock file, a lock directory flipped by a separate process, and a bare root.  The
decoy outside root must stay byte-for-byte untouched and nothing may be swapped when a side path is refused.
"""
import ctypes
import hashlib
import json
import multiprocessing
import os
import shutil
import stat
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils._stages.inputs import Settings  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._stages.run import Run  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils.engine import apply, preflight  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._errors import (  # noqa: E402
    LockingError, PolicyError, SwitchyardError)
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import open_dir_beneath, open_root  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events  # noqa: E402

MP = multiprocessing.get_context("fork")

# option -> (its value as an in-root path, the Settings keyword or policy knob that sets it)
SIDE_PATHS = {
    "lock_path": "/run/lock/switchyard.lock",
    "state_dir": "/var/lib/switchyard",
    "backup_dir": "/var/backups/sw",
    "audit_log": "/var/log/switchyard/audit.jsonl",
}


def tree_digest(path):
    """Every entry under path with its kind, mode and content hash or link text."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                val = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    val = ("file", hashlib.sha256(f.read()).hexdigest(), st.st_nlink)
            else:
                val = ("dir", stat.S_IMODE(st.st_mode))
            out[os.path.relpath(p, path)] = val
    return out


def make_decoy(tmp_path):
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "secret").write_text("root-only, outside root\n")
    for sub in ("lib", "backups", "log", "lock"):
        (decoy / sub).mkdir()
    return str(decoy)


def settings_for(sb, option, **extra):
    """Settings whose `option` is at its SIDE_PATHS place; the state directory elsewhere unless it is the one under
    attack, so a symlink planted at /var attacks exactly one side path."""
    value = sb.p(SIDE_PATHS[option])
    if option != "state_dir":
        extra.setdefault("state_dir", sb.p("/srv/state"))
    if option == "backup_dir":
        return Settings(root=sb.root, policy=dict(extra.pop("policy", {}), backup_dir=SIDE_PATHS[option]), **extra)
    return Settings(root=sb.root, **dict(extra, **{option: value}))


def run_engine(fn, *args, **kwargs):
    """(report or None, error or None, warnings): apply/preflight either return an error or raise it."""
    try:
        report, err, warnings = fn(*args, **kwargs)
    except SwitchyardError as e:
        return None, e, []
    return report, err, warnings


def plant(sb, option, index, style, decoy):
    """Replace component `index` of the side path with a symlink out of root; return the host path planted."""
    parts = [p for p in SIDE_PATHS[option].split("/") if p]
    parent = sb.p("/" + "/".join(parts[:index]))
    os.makedirs(parent, exist_ok=True)
    at = os.path.join(parent, parts[index])
    if os.path.isdir(at) and not os.path.islink(at):
        shutil.rmtree(at)
    elif os.path.lexists(at):
        os.unlink(at)
    # The decoy holds the rest of the path, so code that followed the symlink would find it and write there.
    os.makedirs(os.path.join(decoy, *parts[index:-1]) if index < len(parts) - 1 else decoy, exist_ok=True)
    if style == "absolute":
        text = os.path.join(decoy, parts[index])  # a host path outside root
    else:
        text = os.path.relpath(os.path.join(decoy, parts[index]), parent)  # climbs out of root with '..'
    os.symlink(text, at)
    return at


def _components():
    for option, rel in sorted(SIDE_PATHS.items()):
        for index in range(len([p for p in rel.split("/") if p])):
            for style in ("absolute", "relative"):
                yield option, index, style


@pytest.mark.parametrize("option,index,style", list(_components()))
def test_symlink_planted_at_any_component_never_reaches_outside_root(tmp_path, option, index, style):
    sb = make_sandbox(tmp_path)
    decoy = make_decoy(tmp_path)
    at = plant(sb, option, index, style, decoy)
    decoy_before = tree_digest(decoy)
    target_before = sb.snapshot(["/usr/bin/ls"])
    if option == "audit_log":
        # Writing the log is the last step of any run: a plain preflight must not append outside root.
        report, err, warnings = run_engine(preflight, settings_for(sb, option), links=[sb.link("ls")])
        assert err is None and report is not None
        assert any("audit_log" in w for w in warnings), warnings
        assert [e for e in expand_events(report) if e["decision"] == "warn" and e.get("audit_log")], expand_events(report)
    else:
        report, err, _w = run_engine(apply, settings_for(sb, option), [sb.link("ls")])
        assert err is not None, "apply succeeded through a symlink at %s" % at
        assert err.error_id in ("E_POLICY", "E_LOCKING"), (err.error_id, err.msg)
        assert {"lock_path": "lock", "state_dir": "state_dir", "backup_dir": "backup_dir"}[option] in err.msg, err.msg
        assert sb.snapshot(["/usr/bin/ls"]) == target_before
    assert tree_digest(decoy) == decoy_before
    assert os.path.islink(at)


@pytest.mark.parametrize("option", ["state_dir", "backup_dir"])
@pytest.mark.parametrize("where", ["final", "parent"])
def test_file_where_a_side_directory_belongs_is_a_clean_e_policy(tmp_path, option, where):
    sb = make_sandbox(tmp_path)
    parts = [p for p in SIDE_PATHS[option].split("/") if p]
    blocker = sb.p("/" + "/".join(parts if where == "final" else parts[:-1]))
    if os.path.isdir(blocker):
        shutil.rmtree(blocker)
    os.makedirs(os.path.dirname(blocker), exist_ok=True)
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    before = sb.snapshot(["/usr/bin/ls"])
    _report, err, _w = run_engine(apply, settings_for(sb, option), [sb.link("ls")])
    assert isinstance(err, PolicyError), err
    assert option.split("_")[0] in err.msg and "not a directory" in err.msg, err.msg
    assert sb.snapshot(["/usr/bin/ls"]) == before
    with open(blocker) as f:
        assert f.read() == "not a directory\n"


@pytest.mark.parametrize("option", ["state_dir", "backup_dir"])
def test_symlink_at_a_side_directory_inside_root_is_refused_too(tmp_path, option):
    """The directory itself is never a symlink, even one that stays inside root."""
    sb = make_sandbox(tmp_path)
    os.makedirs(sb.p("/srv/elsewhere"))
    at = sb.p(SIDE_PATHS[option])
    os.makedirs(os.path.dirname(at), exist_ok=True)
    os.symlink("/srv/elsewhere", at)
    _report, err, _w = run_engine(apply, settings_for(sb, option), [sb.link("ls")])
    assert isinstance(err, PolicyError) and "symlink" in err.msg, err
    assert os.listdir(sb.p("/srv/elsewhere")) == []


def test_intermediate_symlink_inside_root_is_followed_for_every_side_path(tmp_path):
    """merged-/usr style: <root>/var -> /sysroot/var (absolute, taken inside root) and run -> sysroot/run."""
    sb = make_sandbox(tmp_path)
    shutil.rmtree(sb.p("/var"))
    shutil.rmtree(sb.p("/run"))
    for d in ("/sysroot/var/lib", "/sysroot/var/backups", "/sysroot/var/log", "/sysroot/run/lock"):
        os.makedirs(sb.p(d))
    os.symlink("/sysroot/var", sb.p("/var"))
    os.symlink("sysroot/run", sb.p("/run"))
    s = Settings(root=sb.root, audit_log=sb.p(SIDE_PATHS["audit_log"]), policy={"backup_dir": SIDE_PATHS["backup_dir"]})
    report, err, warnings = apply(s, [sb.link("ls")])
    assert err is None and report["changed"], (err, warnings)
    assert not [w for w in warnings if "audit_log" in w], warnings
    assert os.path.isfile(sb.p("/sysroot/run/lock/switchyard.lock"))
    assert os.listdir(sb.p("/sysroot/var/lib/switchyard/journal"))
    assert os.path.isdir(sb.p("/sysroot/var/backups/sw/usr/bin"))
    with open(sb.p("/sysroot/var/log/switchyard/audit.jsonl")) as f:
        assert len(f.read().splitlines()) == len(expand_events(report))


def test_bare_root_gets_public_parents_and_a_private_state_dir_whatever_the_umask(tmp_path):
    sb = make_sandbox(tmp_path)
    shutil.rmtree(sb.p("/var"))
    shutil.rmtree(sb.p("/run"))
    old = os.umask(0o077)
    try:
        s = Settings(root=sb.root, audit_log=sb.p(SIDE_PATHS["audit_log"]), policy={"backup_dir": SIDE_PATHS["backup_dir"]})
        report, err, _w = apply(s, [sb.link("ls")])
    finally:
        os.umask(old)
    assert err is None and report["changed"]

    def mode(rel):
        return stat.S_IMODE(os.lstat(sb.p(rel)).st_mode)

    for parent in ("/var", "/var/lib", "/var/backups", "/var/log", "/var/log/switchyard", "/run", "/run/lock"):
        assert mode(parent) == 0o755, parent
    assert mode("/var/lib/switchyard") == 0o700
    assert mode("/var/lib/switchyard/journal") == 0o700
    assert mode("/var/backups/sw") == 0o700  # backups stay private, as before
    assert stat.S_ISREG(os.lstat(sb.p(SIDE_PATHS["audit_log"])).st_mode)


@pytest.mark.parametrize("option", sorted(o for o in SIDE_PATHS if o != "backup_dir"))
def test_side_path_outside_root_needs_the_knob(tmp_path, option):
    sb = make_sandbox(tmp_path)
    outside = str(tmp_path / "host" / os.path.basename(SIDE_PATHS[option]))
    with pytest.raises(PolicyError) as info:
        Settings(root=sb.root, **{option: outside})
    assert option in info.value.msg and "allow_side_paths_outside_root" in info.value.msg
    assert not os.path.exists(str(tmp_path / "host"))  # refused before anything was touched
    s = Settings(root=sb.root, policy={"allow_side_paths_outside_root": True}, **{option: outside})
    report, err, warnings = apply(s, [sb.link("ls")])
    assert err is None and report["changed"], (err, warnings)
    assert os.path.exists(outside)


def test_side_path_outside_root_keeps_its_final_component_unfollowed(tmp_path):
    sb = make_sandbox(tmp_path)
    decoy = make_decoy(tmp_path)
    before = tree_digest(decoy)
    host = tmp_path / "host"
    host.mkdir()
    os.symlink(os.path.join(decoy, "secret"), str(host / "audit.jsonl"))
    os.symlink(os.path.join(decoy, "lock"), str(host / "state"))
    knob = {"allow_side_paths_outside_root": True}
    report, err, warnings = preflight(Settings(root=sb.root, policy=knob, audit_log=str(host / "audit.jsonl")),
                                      links=[sb.link("ls")])
    assert err is None and any("symlink" in w for w in warnings), warnings
    _r, err, _w = run_engine(apply, Settings(root=sb.root, policy=knob, state_dir=str(host / "state")), [sb.link("ls")])
    assert isinstance(err, PolicyError) and "symlink" in err.msg
    assert tree_digest(decoy) == before


# -- the lock file ------------------------------------------------------------------------------------------


def test_hard_linked_lock_file_is_refused_and_the_other_file_never_truncated(tmp_path):
    sb = make_sandbox(tmp_path)
    victim = tmp_path / "victim"  # same filesystem as root, outside it
    victim.write_text("precious\n")
    os.link(str(victim), sb.p("/run/lock/switchyard.lock"))
    _r, err, _w = run_engine(apply, Settings(root=sb.root), [sb.link("ls")])
    assert isinstance(err, LockingError) and "hard link" in err.msg, err
    assert victim.read_text() == "precious\n"


def test_lock_file_of_another_user_is_refused(tmp_path):
    sb = make_sandbox(tmp_path)
    lock = sb.p("/run/lock/switchyard.lock")
    with open(lock, "w"):
        pass
    os.chown(lock, 65534, 65534)
    _r, err, _w = run_engine(apply, Settings(root=sb.root), [sb.link("ls")])
    assert isinstance(err, LockingError) and "owned by uid 65534" in err.msg, err


def test_lock_is_taken_on_the_file_the_walk_found(tmp_path):
    sb = make_sandbox(tmp_path)
    run = Run(Settings(root=sb.root), "apply", None, False)
    try:
        run.take_lock()
        assert run.lock is not None and run.lock.path == sb.p("/run/lock/switchyard.lock")
        held = os.fstat(run.lock._fd)
        st = os.stat(sb.p("/run/lock/switchyard.lock"))
        assert (held.st_dev, held.st_ino) == (st.st_dev, st.st_ino)
    finally:
        run.close()


def _exchange(a, b):
    """renameat2(RENAME_EXCHANGE): a and b swap places atomically, so <root>/run/lock is never missing."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, a.encode(), -100, b.encode(), 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _flip_lock_dir(root, decoy, stop):
    """Flip <root>/run/lock between the real directory and a symlink out of root (absolute, then relative)."""
    run = os.path.join(root, "run")
    lock, other = os.path.join(run, "lock"), os.path.join(run, "lock.flip")
    texts = (os.path.join(decoy, "lock"), os.path.relpath(os.path.join(decoy, "lock"), run))
    n = 0
    while not stop.is_set():
        if os.path.lexists(other):
            os.unlink(other)
        os.symlink(texts[n % 2], other)
        _exchange(lock, other)  # lock is the symlink now
        time.sleep(0.0005)
        _exchange(lock, other)  # and the real directory again
        time.sleep(0.0005)
        n += 1


def _lock_contender(root, excl_dir, out, rounds, start):
    held, refused, overlaps, inodes = 0, 0, 0, set()
    settings = Settings(root=root, lock_timeout=5)
    start.wait()
    for _round in range(rounds):
        run = Run(settings, "apply", None, False)
        try:
            try:
                run.take_lock()
            except SwitchyardError:
                refused += 1
                continue
            assert run.lock is not None
            st = os.fstat(run.lock._fd)
            inodes.add("%d:%d" % (st.st_dev, st.st_ino))
            held += 1
            try:  # the critical section: two holders at once would collide here
                fd = os.open(os.path.join(excl_dir, "holder"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                overlaps += 1
                continue
            time.sleep(0.001)
            os.unlink(os.path.join(excl_dir, "holder"))
            os.close(fd)
        finally:
            run.close()
    with open(out, "w") as f:
        json.dump({"held": held, "refused": refused, "overlaps": overlaps, "inodes": sorted(inodes)}, f)


def test_runs_never_hold_different_lock_files_while_the_lock_dir_flips_out_of_root(tmp_path):
    sb = make_sandbox(tmp_path)
    decoy = make_decoy(tmp_path)
    before = tree_digest(decoy)
    excl = tmp_path / "excl"
    excl.mkdir()
    stop, start = MP.Event(), MP.Event()
    flipper = MP.Process(target=_flip_lock_dir, args=(sb.root, decoy, stop))
    outs = [str(tmp_path / ("out%d.json" % i)) for i in range(3)]
    contenders = [MP.Process(target=_lock_contender, args=(sb.root, str(excl), out, 60, start)) for out in outs]
    flipper.start()
    for p in contenders:
        p.start()
    start.set()
    try:
        for p in contenders:
            p.join(300)
            assert p.exitcode == 0
    finally:
        stop.set()
        flipper.join(30)
    results = []
    for out in outs:
        with open(out) as f:
            results.append(json.load(f))
    assert sum(r["overlaps"] for r in results) == 0, results
    assert len(set(i for r in results for i in r["inodes"])) == 1, results
    assert sum(r["held"] for r in results) > 0, results
    assert tree_digest(decoy) == before


def test_walk_creates_nothing_where_a_symlink_points(tmp_path):
    """A dangling in-root symlink on the way is an error, not a place to mkdir."""
    sb = make_sandbox(tmp_path)
    os.symlink("/nowhere/yet", sb.p("/srv"))
    fd = open_root(sb.root)
    try:
        with pytest.raises(PolicyError, match="not created through a symlink"):
            open_dir_beneath(fd, ["srv", "lock"], "lock_path", sb.p("/srv/lock/x"), create_mode=0o755)
    finally:
        os.close(fd)
    assert not os.path.exists(sb.p("/nowhere"))
