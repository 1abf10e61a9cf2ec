"""Issue 12 points 1, 3 and 4 in-process: identity by entry, never handing out setuid, concurrent writers.

Each test attacks one defence and would fail without it."""
import errno
import json
import multiprocessing
import os
import stat
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox, sha256  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup as bk  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import backup_store as bks  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import durable  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import swap  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._probes import smoke as _smoke  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._policy import resolve_policy  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import resolve_beneath  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils.engine import (  # noqa: E402
    Settings, apply, restore, prune, preflight, PolicyError)
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402


def ok(result):
    report, err, _warnings = result
    assert err is None, err and err.msg
    assert validation_errors(report) == []
    return report


def merged_usr(tmp_path, **kw):
    """A sandbox whose /bin is a symlink to usr/bin, as on Debian 12, Ubuntu, Fedora and Arch."""
    sb = make_sandbox(tmp_path, **kw)
    os.rmdir(sb.p("/bin"))
    os.symlink("usr/bin", sb.p("/bin"))
    return sb


def tree_state(root):
    """Every entry under root: kind, bytes hash or link text, mode and inode (to prove nothing was touched)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[p] = ("l", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[p] = ("f", sha256(p), st.st_mode, st.st_ino, st.st_nlink)
            else:
                out[p] = ("d", st.st_mode)
    return out


# ------------------------------------------------------------------------------------------ 1. identity

def test_aliased_targets_on_merged_usr_are_refused_naming_both_before_anything_is_touched(tmp_path):
    sb = merged_usr(tmp_path, synthetic=1)
    before = tree_state(sb.root)
    links = [{"source": sb.p("/opt/prov/bin/f000"), "target": sb.p("/usr/bin/f000")},
             {"source": sb.p("/opt/prov/bin/f000"), "target": sb.p("/bin/f000")}]
    for run in (lambda: apply(Settings(root=sb.root), links), lambda: preflight(Settings(root=sb.root), links)):
        with pytest.raises(PolicyError) as e:
            run()
        assert sb.p("/usr/bin/f000") in e.value.msg and sb.p("/bin/f000") in e.value.msg
        assert "same file" in e.value.msg
    assert tree_state(sb.root) == before


@pytest.mark.parametrize("op", ["restore", "prune", "preflight"])
def test_aliased_restore_and_prune_targets_are_refused(tmp_path, op):
    sb = merged_usr(tmp_path, synthetic=1)
    ok(apply(Settings(root=sb.root), [sb.link("f000")]))
    before = tree_state(sb.root)
    targets = [sb.p("/usr/bin/f000"), sb.p("/bin/f000")]
    if op == "preflight":
        with pytest.raises(PolicyError) as e:
            preflight(Settings(root=sb.root), restores=targets)
        err = e.value
    else:  # restore and prune return their full report with the error (issue 16.3)
        call = (lambda: restore(Settings(root=sb.root), targets=targets)) if op == "restore" else (
            lambda: prune(Settings(root=sb.root), targets=targets, retention_count=1))
        report, err, _w = call()
        assert validation_errors(report) == [] and report["summary"]["error_id"] == "E_POLICY"
    assert err.error_id == "E_POLICY" and "same file" in err.msg
    assert tree_state(sb.root) == before


@pytest.mark.parametrize("shape", ["alias", "provider_chain", "other_target"])
def test_a_source_that_leads_back_to_a_target_of_the_plan_is_refused(tmp_path, shape):
    sb = merged_usr(tmp_path, synthetic=2)
    if shape == "alias":  # source /bin/f000 is the target /usr/bin/f000 spelled differently
        links = [{"source": sb.p("/bin/f000"), "target": sb.p("/usr/bin/f000")}]
    elif shape == "provider_chain":  # the provider's file is itself a link back to the target
        os.unlink(sb.p("/opt/prov/bin/f000"))
        os.symlink("/usr/bin/f000", sb.p("/opt/prov/bin/f000"))
        links = [sb.link("f000")]
    else:  # two links pointing at each other's targets
        links = [{"source": sb.p("/usr/bin/f001"), "target": sb.p("/usr/bin/f000")},
                 {"source": sb.p("/usr/bin/f000"), "target": sb.p("/usr/bin/f001")}]
    before = tree_state(sb.root)
    with pytest.raises(PolicyError) as e:
        apply(Settings(root=sb.root), links)
    assert "link loop" in e.value.msg and "links[" in e.value.msg
    assert tree_state(sb.root) == before


def test_backup_names_are_reserved_for_the_whole_plan(tmp_path):
    """Two actions whose backups share a directory and a timestamp can never choose the same names."""
    sb = make_sandbox(tmp_path, synthetic=1)
    target = resolve_beneath(sb.root, sb.p("/usr/bin/f000"))
    try:
        store = bks.BackupStore(None, None, "switchyard")
        reserved = set()
        first = store.next_ms(target, target.parent_fd, 1000, reserved)
        second = store.next_ms(target, target.parent_fd, 1000, reserved)
        assert (first, second) == (1000, 1001)
        assert not os.listdir(sb.p("/usr/bin")) == []  # nothing was created by reserving
        assert not any(".bak" in n for n in os.listdir(sb.p("/usr/bin")))
    finally:
        target.close()


@pytest.mark.parametrize("what", ["component", "backup_budget"])
def test_names_that_cannot_work_are_refused_before_anything_is_touched(tmp_path, what):
    sb = make_sandbox(tmp_path, synthetic=1)
    before = tree_state(sb.root)
    name = "x" * (256 if what == "component" else 230)
    link = {"source": sb.p("/opt/prov/bin/f000"), "target": sb.p("/usr/bin/" + name)}
    with pytest.raises(PolicyError) as e:
        apply(Settings(root=sb.root), [link])
    assert ("255" in e.value.msg) and ("backup_tag" in e.value.msg or "component" in e.value.msg)
    assert tree_state(sb.root) == before


# ------------------------------------------------------------------------------------------ 3. setuid

def _user_setuid_file(sb, name="f000", uid=4242, gid=4343):
    p = sb.p("/usr/bin/" + name)
    os.chown(p, uid, gid)
    os.chmod(p, 0o4755)
    return p


@pytest.mark.parametrize("tier", ["basic", "extended"])
def test_restore_never_hands_out_setuid_to_another_owner(tmp_path, tier):
    """suid_sgid: warn lets a user-owned setuid file be swapped; its restore by copy must not be setuid-root."""
    sb = make_sandbox(tmp_path, synthetic=1)
    p = _user_setuid_file(sb)
    pol = {"suid_sgid": "warn", "preservation_tier": tier}
    ok(apply(Settings(root=sb.root, policy=pol), [sb.link("f000")]))
    rep = ok(restore(Settings(root=sb.root, policy=pol), targets=[p]))
    st = os.lstat(p)
    if tier == "basic":  # no chown: the copy is root's, so the bit is withheld and the status says so
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
        assert entries(rep)[0]["preservation_applied"]["mode"] != "applied"
    else:  # the owner comes back, and with it the bit
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4343, 0o4755)
    assert not (st.st_uid == 0 and st.st_mode & stat.S_ISUID)


def _toggle_setuid(path, stop_at):
    """The file's owner (uid 4242, not root) flips u+s on their file through an fd they hold."""
    fd = os.open(path, os.O_RDONLY)
    os.setgid(4343)
    os.setuid(4242)
    while time.monotonic() < stop_at:
        try:
            os.fchmod(fd, 0o4755)
            os.fchmod(fd, 0o755)
        except OSError:
            pass


def test_setuid_toggled_between_preflight_and_backup_is_never_recorded_or_restored(tmp_path):
    """A real process (the file's owner) flips u+s while apply and restore run under the default policy."""
    sb = make_sandbox(tmp_path, synthetic=1)
    p = sb.p("/usr/bin/f000")
    os.chown(p, 4242, 4343)
    os.chmod(p, 0o755)
    flipper = multiprocessing.get_context("fork").Process(target=_toggle_setuid, args=(p, time.monotonic() + 60))
    flipper.start()
    recorded, applied = 0, 0
    try:
        for _cycle in range(150):
            rep, err, _w = apply(Settings(root=sb.root), [sb.link("f000")])
            if err is not None:
                assert err.error_id in ("E_POLICY", "E_ATOMIC_SWAP"), err.msg
                continue
            applied += 1
            backup = entries(rep)[0]["backup"]
            meta = json.loads(open(sb.p("/usr/bin/" + backup["sidecar"])).read())
            recorded += bool(meta["mode"] & stat.S_ISUID)
            ok(restore(Settings(root=sb.root), targets=[p]))
            st = os.lstat(p)
            assert not (st.st_mode & stat.S_ISUID and st.st_uid != 4242), oct(st.st_mode)
    finally:
        flipper.terminate()
        flipper.join()
    assert applied > 0
    assert recorded == 0  # the gate on the open file refuses a file that became setuid after preflight


# ------------------------------------------------------------------------------------------ 4. writers

def test_exchange_swaps_back_when_the_target_was_replaced_after_the_backup(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "t").write_bytes(b"original")
    fd = os.open(str(d), os.O_RDONLY | os.O_DIRECTORY)
    try:
        inspected = os.lstat(str(d / "t"))
        (d / "new").write_bytes(b"upgraded by the package manager")
        os.rename(str(d / "new"), str(d / "t"))  # what dpkg does
        with pytest.raises(fs.EntryChanged):
            swap.symlink_replace_at(fd, "t", "/opt/prov/t", "0" * 36, durable.Durability(True), expect=inspected)
    finally:
        os.close(fd)
    assert (d / "t").read_bytes() == b"upgraded by the package manager"
    assert sorted(os.listdir(str(d))) == ["t"]  # no temp left behind


def test_exchange_swaps_back_when_the_target_was_written_in_place(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "t").write_bytes(b"original")
    fd = os.open(str(d), os.O_RDONLY | os.O_DIRECTORY)
    try:
        inspected = os.lstat(str(d / "t"))
        time.sleep(0.01)
        with open(str(d / "t"), "ab") as f:
            f.write(b" and more")
        with pytest.raises(fs.EntryChanged):
            swap.symlink_replace_at(fd, "t", "/opt/prov/t", "0" * 36, durable.Durability(True), expect=inspected)
    finally:
        os.close(fd)
    assert (d / "t").read_bytes() == b"original and more"


def test_an_absent_target_that_appears_is_never_overwritten(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    fd = os.open(str(d), os.O_RDONLY | os.O_DIRECTORY)
    try:
        (d / "t").write_bytes(b"appeared")
        with pytest.raises(OSError) as e:
            swap.symlink_replace_at(fd, "t", "/opt/prov/t", "0" * 36, durable.Durability(True), expect=None)
        assert e.value.errno == errno.EEXIST
    finally:
        os.close(fd)
    assert (d / "t").read_bytes() == b"appeared" and sorted(os.listdir(str(d))) == ["t"]


def test_apply_reports_the_exchange_it_used(tmp_path):
    sb = make_sandbox(tmp_path, synthetic=1)
    link = {"source": sb.p("/opt/prov/bin/f000"), "target": sb.p("/usr/bin/new")}
    rep = ok(apply(Settings(root=sb.root), [sb.link("f000"), link]))
    methods = dict((a["path"], a["swap_method"]) for a in entries(rep))
    assert methods == {"/usr/bin/f000": "exchange", "/usr/bin/new": "noreplace"}


def _replace_by_rename(path, stop_at, log):
    """A package manager upgrading the file again and again: new inode, new bytes, rename over the name."""
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        data = ("#!/bin/sh\n# upgrade %d\n" % n).encode()
        tmp = path + ".dpkg-new"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.rename(tmp, path)
        except OSError:
            continue
        with open(log, "a") as f:
            f.write("%d\n" % n)
        time.sleep(0.0005)


def test_a_concurrent_upgrade_never_loses_its_bytes(tmp_path):
    """Every version the writer renamed into place is, after the run, at the target, in a verified backup, or
    was replaced by the writer's own next version: the swap never discards what it did not back up."""
    sb = make_sandbox(tmp_path, synthetic=1)
    p = sb.p("/usr/bin/f000")
    log = str(tmp_path / "versions")
    for cycle in range(40):
        open(log, "w").close()
        writer = multiprocessing.get_context("fork").Process(
            target=_replace_by_rename, args=(p, time.monotonic() + 0.15, log))
        writer.start()
        rep, err, _w = apply(Settings(root=sb.root), [sb.link("f000")])
        writer.join()
        written = [int(x) for x in open(log).read().split()]
        if not written:
            continue
        last = written[-1]
        last_bytes = ("#!/bin/sh\n# upgrade %d\n" % last).encode()
        # The writer's final version may only be gone if the swap came after it and backed it up.
        if os.path.islink(p):
            backups = [b for b in os.listdir(sb.p("/usr/bin")) if b.startswith(".f000.") and b.endswith(".bak")]
            contents = [open(sb.p("/usr/bin/" + b), "rb").read() for b in backups]
            assert last_bytes in contents, (cycle, last, err and err.msg)
            ok(restore(Settings(root=sb.root), targets=[p]))
        assert open(p, "rb").read() == last_bytes or os.path.islink(p), cycle
        for b in [b for b in os.listdir(sb.p("/usr/bin")) if b.endswith(".bak.meta.json")]:
            meta = json.loads(open(sb.p("/usr/bin/" + b)).read())
            if meta["prior_kind"] == "file":
                assert sha256(sb.p("/usr/bin/" + meta["payload"])) == meta["payload_hash"]


def test_restore_refuses_a_payload_rewritten_after_it_was_verified(tmp_path):
    sb = make_sandbox(tmp_path, synthetic=1)
    p = sb.p("/usr/bin/f000")
    ok(apply(Settings(root=sb.root, policy={"backup_dir": "/var/backups/sy", "allow_degraded_fs": True}),
             [sb.link("f000")]))
    target = resolve_beneath(sb.root, p)
    pol = resolve_policy()
    root_fd = os.open(sb.root, os.O_RDONLY | os.O_DIRECTORY)
    bdir = None
    try:
        store = bks.BackupStore(root_fd, "/var/backups/sy", "switchyard")
        bdir = store.dir_for(target, create=False)
        b = store.scan(target, bdir).usable[0]
        bk.verify_backup(b, pol)
        with open(sb.p("/var/backups/sy/usr/bin/" + b.payload), "r+b") as f:  # rewritten in place after verify
            f.write(b"#!/bin/sh\necho pwned\n")
        before = os.readlink(p)
        with pytest.raises(bk.RestoreFailedError):
            bk.restore_backup(target, b, pol, durable.Durability(True), "0" * 36)
        assert os.readlink(p) == before
        assert not [n for n in os.listdir(sb.p("/usr/bin")) if fs.TEMP_MARKER in n]
    finally:
        target.close()
        os.close(root_fd)
        if bdir is not None:
            os.close(bdir)


def test_a_sparse_payload_stays_sparse_and_exact(tmp_path):
    sb = make_sandbox(tmp_path, synthetic=0, tools=())
    p = sb.p("/usr/bin/big")
    with open(p, "wb") as f:
        f.write(b"head")
        f.seek(64 << 20)
        f.write(b"tail")
    os.chmod(p, 0o755)
    digest = sha256(p)
    link = {"source": sb.p("/opt/prov/bin/big"), "target": p}
    open(sb.p("/opt/prov/bin/big"), "wb").close()
    os.chmod(sb.p("/opt/prov/bin/big"), 0o755)
    ok(apply(Settings(root=sb.root), [link]))
    ok(restore(Settings(root=sb.root), targets=[p]))
    st = os.lstat(p)
    assert sha256(p) == digest and st.st_size == (64 << 20) + 4
    assert st.st_blocks * 512 < (1 << 20)  # the 64 MiB hole was not written out


def test_an_unexpected_exception_after_the_swap_rolls_back_and_reports_e_internal(tmp_path, monkeypatch):
    sb = make_sandbox(tmp_path, synthetic=1)
    before = tree_state(sb.root)

    def engine_bug(*_a, **_k):
        raise KeyError("a bug nobody planned for")
    monkeypatch.setattr(_smoke, "run_checks", engine_bug)
    rep, err, _w = apply(Settings(root=sb.root), [sb.link("f000")], smoke="resolve")
    assert err is not None and err.error_id == "E_INTERNAL" and err.exit_code == 90
    assert "KeyError" in err.msg and "Traceback" in err.trace
    assert validation_errors(rep) == [] and rep["summary"]["error_id"] == "E_INTERNAL"
    assert rep["rolled_back_paths"] == ["/usr/bin/f000"]
    after = tree_state(sb.root)
    assert {k: v for k, v in after.items() if "/var/lib/switchyard" not in k and not k.endswith(".lock")} == before


def test_exchange_detects_a_same_size_write_within_one_timestamp_tick(tmp_path):
    """Two writes within one tick of the kernel's coarse clock leave the same mtime: a recent file is
    compared by its bytes, so a same-size rewrite that restored the mtime is still caught."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "t").write_bytes(b"version 1")
    fd = os.open(str(d), os.O_RDONLY | os.O_DIRECTORY)
    try:
        inspected = os.lstat(str(d / "t"))
        digest = fs.sha256_at(fd, "t")
        with open(str(d / "t"), "r+b") as f:
            f.write(b"version 2")
        os.utime(str(d / "t"), ns=(inspected.st_atime_ns, inspected.st_mtime_ns))  # same tick, same size
        with pytest.raises(fs.EntryChanged):
            swap.symlink_replace_at(fd, "t", "/opt/prov/t", "0" * 36, durable.Durability(True), expect=inspected,
                                    expect_hash=digest)
    finally:
        os.close(fd)
    assert (d / "t").read_bytes() == b"version 2"


def test_restore_never_replaces_a_regular_file_that_appeared_after_the_caller_looked(tmp_path):
    """Rollback and recovery restore over their own link; a package upgrade renamed there meanwhile stays."""
    sb = make_sandbox(tmp_path, synthetic=1)
    p = sb.p("/usr/bin/f000")
    ok(apply(Settings(root=sb.root), [sb.link("f000")]))
    target = resolve_beneath(sb.root, p)
    try:
        store = bks.BackupStore(None, None, "switchyard")
        b = store.scan(target, target.parent_fd).usable[0]
        with open(p + ".dpkg-new", "wb") as f:
            f.write(b"upgraded")
        os.rename(p + ".dpkg-new", p)
        with pytest.raises(bk.RestoreFailedError):
            bk.restore_backup(target, b, resolve_policy(), durable.Durability(True), "0" * 36, consume=True)
    finally:
        target.close()
    assert open(p, "rb").read() == b"upgraded"
    assert any(n.endswith(".bak") for n in os.listdir(sb.p("/usr/bin")))  # the backup is kept
