# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preservation tiers round-trip on real ext4 and tmpfs files. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import stat
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_

from ansible_collections.switchyard.fs.plugins.module_utils._fs import preservation as pres
from ansible_collections.switchyard.fs.plugins.module_utils._fs import xattr
from ansible_collections.switchyard.fs.plugins.module_utils._probes import preservation as ppres

TIERS = pres.TIERS
BACKENDS = ("os", "pyxattr")
PAYLOAD = b"#!/bin/sh\necho switchyard\n"
OWNER = (4242, 4343)
UNPRIVILEGED = 65534
ATIME_NS = 1600000000111111111
MTIME_NS = 1500000000123456789
USER_XATTR = ("user.switchyard.note", b"kept")
TRUSTED_XATTR = ("trusted.switchyard.note", b"kept-too")

KEYS_BY_TIER = {
    "basic": {"tier", "mode", "uid", "gid"},
    "extended": {"tier", "mode", "uid", "gid", "atime_sec", "atime_nsec", "mtime_sec", "mtime_nsec"},
}
KEYS_BY_TIER["full"] = KEYS_BY_TIER["extended"] | {"xattrs"}


# --------------------------------------------------------------------------- real filesystems

def fstype(path):
    """Filesystem type of the mount holding ``path``, from /proc/self/mountinfo (longest match)."""
    path = os.path.realpath(str(path))
    best, best_type = "", None
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, right = line.split(" - ", 1)
            mountpoint = left.split()[4].replace("\\040", " ")
            inside = path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")
            if inside and len(mountpoint) >= len(best):
                best, best_type = mountpoint, right.split()[0]
    return best_type


def mount_tmpfs(path, options="size=8m"):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "switchyard-test", str(path)], check=True)
    assert fstype(path) == "tmpfs"
    return path


def umount(path):
    subprocess.run(["umount", str(path)], check=True)


@pytest.fixture(params=["ext4", "tmpfs"])
def fsdir(request, tmp_path):
    assert os.geteuid() == 0, "chown, setcap and mount need root: run the tests as root"
    if request.param == "ext4":
        assert fstype(tmp_path) == "ext4", (
            "tmp_path is on %s, not ext4: point --basetemp at an ext4 directory" % fstype(tmp_path))
        yield tmp_path
        return
    mnt = mount_tmpfs(tmp_path / "tmpfs")
    try:
        yield mnt
    finally:
        umount(mnt)


def user_xattr_works(directory):
    """Does this kernel store user.* xattrs here? Asked through setfattr, not our code."""
    probe = directory / "user-xattr-check"
    probe.write_bytes(b"")
    try:
        return subprocess.run(["setfattr", "-n", "user.check", "-v", "1", str(probe)],
                              stderr=subprocess.DEVNULL, check=False).returncode == 0
    finally:
        probe.unlink()


# --------------------------------------------------------------------------- files and oracles

def make_source(directory):
    """4242:4343, mode 4750, cap_net_raw+ep, ACL u:4242:r, user+trusted xattrs, ns timestamps."""
    path = directory / "src"
    path.write_bytes(PAYLOAD)
    os.chown(str(path), *OWNER)
    os.chmod(str(path), 0o4750)  # after chown, which clears setuid
    subprocess.run(["setcap", "cap_net_raw+ep", str(path)], check=True)
    subprocess.run(["setfacl", "-m", "u:4242:r", str(path)], check=True)
    if user_xattr_works(directory):
        subprocess.run(["setfattr", "-n", USER_XATTR[0], "-v", USER_XATTR[1].decode(), str(path)], check=True)
    subprocess.run(["setfattr", "-n", TRUSTED_XATTR[0], "-v", TRUSTED_XATTR[1].decode(), str(path)], check=True)
    os.utime(str(path), ns=(ATIME_NS, MTIME_NS))
    st = os.stat(str(path))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (0o4750, 4242, 4343, MTIME_NS)
    return path


def fresh_copy(directory, name="dst", owner=(0, 0)):
    """Same bytes, default metadata: what a restore writes before it applies the sidecar."""
    path = directory / name
    path.write_bytes(PAYLOAD)
    os.chown(str(path), *owner)
    os.chmod(str(path), 0o644)
    return path


def capture(path, tier, backend=None):
    fd = os.open(str(path), os.O_RDONLY)
    try:
        meta = pres.capture_metadata(os.fstat(fd), fd, tier, backend=backend)
    finally:
        os.close(fd)
    return json.loads(json.dumps(meta))  # what a JSON sidecar gives back


def apply_to(path, meta, tier, backend=None):
    fd = os.open(str(path), os.O_RDWR)
    try:
        return pres.apply_metadata(fd, meta, tier, backend=backend)
    finally:
        os.close(fd)


def getcap(path):
    out = subprocess.run(["getcap", str(path)], stdout=subprocess.PIPE, check=True).stdout.decode()
    return out.replace(str(path), "").strip()


def acl_entries(path):
    out = subprocess.run(["getfacl", "--omit-header", "--numeric", str(path)],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return set(line for line in out.split() if line)


def xattr_dump(path):
    """Every xattr as ``name=0xhex`` lines, as getfattr sees them."""
    out = subprocess.run(["getfattr", "--absolute-names", "-d", "-m", "-", "-e", "hex", str(path)],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return sorted(line for line in out.splitlines() if "=" in line)


def getfattr_value(path, name):
    res = subprocess.run(["getfattr", "--absolute-names", "--only-values", "-n", name, str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    return res.stdout if res.returncode == 0 else None


def _drop_privileges():
    os.setgroups([])
    os.setgid(UNPRIVILEGED)
    os.setuid(UNPRIVILEGED)


def unprivileged_setfattr_works(directory, name, value):
    """Can uid 65534 set ``name`` on its own file here? Asked through setfattr, not our code."""
    path = directory / ("oracle-" + name)
    path.write_bytes(b"")
    os.chown(str(path), UNPRIVILEGED, UNPRIVILEGED)
    fd = os.open(str(path), os.O_RDONLY)  # pytest's 0700 directories are not searchable by 65534
    try:
        return subprocess.run(["setfattr", "-n", name, "-v", value, "/proc/self/fd/%d" % fd], pass_fds=(fd,),
                              preexec_fn=_drop_privileges, stderr=subprocess.DEVNULL, check=False).returncode == 0
    finally:
        os.close(fd)
        path.unlink()


def run_unprivileged(func, *args):
    """Run ``func(*args)`` in a child that dropped to uid/gid 65534 with no capabilities."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(rfd)
            try:
                _drop_privileges()
                payload = {"result": func(*args)}
            except BaseException as exc:  # report everything back to the parent
                payload = {"error": repr(exc)}
            os.write(wfd, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    chunks = []
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    os.waitpid(pid, 0)
    payload = json.loads(b"".join(chunks).decode())
    assert "error" not in payload, payload["error"]
    return payload["result"]


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tier", TIERS)
def test_round_trip_restores_exactly_what_the_tier_promises(fsdir, tier, backend):
    src = make_source(fsdir)
    has_user_xattr = user_xattr_works(fsdir)
    meta = capture(src, tier, backend)
    assert set(meta) == KEYS_BY_TIER[tier]

    dst = fresh_copy(fsdir)
    status, reasons = apply_to(dst, meta, tier, backend)

    carries_owner = tier != "basic"
    st = os.stat(str(dst))
    if carries_owner:
        assert status == {f: "applied" for f in pres.FIELDS_BY_TIER[tier]}, reasons
        assert reasons == {}
        assert stat.S_IMODE(st.st_mode) == 0o4750  # setuid survives only when mode follows chown
    else:
        # basic does not chown: the restored file is root's, so the captured owner's setuid bit is withheld
        # (never hand out setuid-root) and the status says so.
        assert status == {"mode": pres.UNSUPPORTED}, reasons
        assert "setuid withheld" in reasons["mode"]
        assert stat.S_IMODE(st.st_mode) == 0o0750
    assert ((st.st_uid, st.st_gid) == OWNER) is carries_owner
    assert (st.st_atime_ns == ATIME_NS) is carries_owner
    assert (st.st_mtime_ns == MTIME_NS) is carries_owner
    carries_xattrs = tier == "full"
    assert (getcap(dst) == "cap_net_raw=ep") is carries_xattrs  # capability set after chown
    assert ("user:4242:r--" in acl_entries(dst)) is carries_xattrs
    assert (getfattr_value(dst, TRUSTED_XATTR[0]) == TRUSTED_XATTR[1]) is carries_xattrs
    if has_user_xattr:
        assert (getfattr_value(dst, USER_XATTR[0]) == USER_XATTR[1]) is carries_xattrs
    if carries_xattrs:
        assert xattr_dump(dst) == xattr_dump(src)


def test_full_capture_records_every_xattr_base64_in_name_order(fsdir):
    src = make_source(fsdir)
    xattrs = capture(src, "full")["xattrs"]
    assert list(xattrs) == sorted(xattrs)
    assert {"security.capability", "system.posix_acl_access", TRUSTED_XATTR[0]} <= set(xattrs)
    assert base64.b64decode(xattrs[TRUSTED_XATTR[0]]) == TRUSTED_XATTR[1]
    for name in xattrs:
        assert base64.b64decode(xattrs[name]) == getfattr_value(src, name)


def test_extended_capture_splits_nanosecond_timestamps(fsdir):
    meta = capture(make_source(fsdir), "extended")
    assert (meta["atime_sec"], meta["atime_nsec"]) == divmod(ATIME_NS, 10 ** 9)
    assert (meta["mtime_sec"], meta["mtime_nsec"]) == divmod(MTIME_NS, 10 ** 9)
    assert (meta["uid"], meta["gid"], meta["mode"], meta["tier"]) == (4242, 4343, 0o4750, "extended")


@pytest.mark.parametrize("tier", TIERS)
def test_both_xattr_backends_capture_and_apply_identically(fsdir, tier):
    src = make_source(fsdir)
    metas = [capture(src, tier, b) for b in BACKENDS]
    assert metas[0] == metas[1]
    outcomes, dumps = [], []
    for backend in BACKENDS:
        dst = fresh_copy(fsdir, "dst-" + backend)
        outcomes.append(apply_to(dst, metas[0], tier, backend))
        st = os.stat(str(dst))
        times = (st.st_atime_ns, st.st_mtime_ns) if tier != "basic" else ()  # basic leaves creation times
        dumps.append((xattr_dump(dst), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, times))
    assert outcomes[0] == outcomes[1]
    assert dumps[0] == dumps[1]


def test_backend_names_are_str_and_values_bytes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(str(path), os.O_RDONLY)
    try:
        for backend in BACKENDS:
            xb = xattr.get_backend(backend)
            assert xb.name == backend
            xb.set(fd, "user.b-" + backend, b"\x00\xff")
            names = xb.list(fd)
            assert all(isinstance(n, str) for n in names)
            assert xb.get(fd, "user.b-" + backend) == b"\x00\xff"
            xb.remove(fd, "user.b-" + backend)
            assert "user.b-" + backend not in xb.list(fd)
    finally:
        os.close(fd)


def test_default_backend_is_pyxattr_when_importable():
    assert xattr.default_backend().name == "pyxattr"
    assert xattr.get_backend(None).name == "pyxattr"


def test_unknown_backend_or_tier_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        xattr.get_backend("xattrfs")
    with pytest.raises(ValueError):
        pres.capture_metadata(os.stat(str(tmp_path)), None, "everything")


def test_capture_refuses_an_fd_of_another_file(tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    fd = os.open(str(tmp_path / "b"), os.O_RDONLY)
    try:
        with pytest.raises(ValueError):
            pres.capture_metadata(os.stat(str(tmp_path / "a")), fd, "full")
    finally:
        os.close(fd)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st_.integers(min_value=0, max_value=0o7777))
def test_basic_round_trip_keeps_every_mode_bit(tmp_path, mode):
    src = tmp_path / "mode-src"
    src.write_bytes(PAYLOAD)
    os.chmod(str(src), mode)
    dst = fresh_copy(tmp_path, "mode-dst")
    status, _unused = apply_to(dst, capture(src, "basic"), "basic")
    assert status == {"mode": "applied"}
    assert stat.S_IMODE(os.stat(str(dst)).st_mode) == mode


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(atime=st_.integers(min_value=0, max_value=2 ** 33 * 10 ** 9),
       mtime=st_.integers(min_value=0, max_value=2 ** 33 * 10 ** 9))
def test_extended_round_trip_keeps_timestamps_to_the_nanosecond(tmp_path, atime, mtime):
    src = tmp_path / "t-src"
    src.write_bytes(PAYLOAD)
    os.utime(str(src), ns=(atime, mtime))
    dst = fresh_copy(tmp_path, "t-dst")
    status, reasons = apply_to(dst, capture(src, "extended"), "extended")
    assert status["atime"] == status["mtime"] == "applied", reasons
    st = os.stat(str(dst))
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)


# --------------------------------------------------------------------------- degraded cases

@pytest.mark.parametrize("tier", ("extended", "full"))
def test_old_sidecar_with_only_mode_reports_missing_fields_unsupported(tmp_path, tier):
    dst = fresh_copy(tmp_path)
    status, reasons = apply_to(dst, {"mode": 0o750}, tier)
    expected = {f: "skipped-unsupported" for f in pres.FIELDS_BY_TIER[tier]}
    expected["mode"] = "applied"
    assert status == expected
    assert set(reasons) == set(expected) - {"mode"}
    assert all("sidecar has no" in r for r in reasons.values())
    st = os.stat(str(dst))
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o750, 0)


def test_higher_tier_fields_are_omitted_from_the_result(tmp_path):
    dst = tmp_path / "f"
    dst.write_bytes(PAYLOAD)
    status, reasons = apply_to(dst, {"mode": 0o600}, "basic")
    assert status == {"mode": "applied"} and reasons == {}


@pytest.mark.parametrize("meta, field", [
    ({"mode": "0755"}, "mode"),
    ({"mode": 0o644, "uid": "root", "gid": 0}, "uid"),
    ({"mode": 0o644, "uid": 0, "gid": 0, "atime_sec": 1, "atime_nsec": 10 ** 9, "mtime_sec": 1, "mtime_nsec": 0}, "atime"),
    ({"mode": 0o644, "uid": 0, "gid": 0, "atime_sec": 1, "atime_nsec": 0, "mtime_sec": 1, "mtime_nsec": 0,
      "xattrs": {"user.x": "not base64!"}}, "xattrs"),
])
def test_malformed_sidecar_value_is_failed_not_an_exception(tmp_path, meta, field):
    dst = fresh_copy(tmp_path, owner=(os.geteuid(), os.getegid()))
    status, reasons = apply_to(dst, meta, "full")
    assert status[field] == "failed"
    assert field in reasons


def test_setuid_is_withheld_when_the_captured_owner_is_not_in_place(tmp_path):
    meta = capture(make_source(tmp_path), "extended")
    dst = fresh_copy(tmp_path)  # root-owned; basic does not chown
    status, reasons = apply_to(dst, meta, "basic")
    assert status == {"mode": "skipped-unsupported"}
    assert "setuid withheld" in reasons["mode"]
    assert stat.S_IMODE(os.stat(str(dst)).st_mode) == 0o750


def test_unprivileged_apply_reports_privileged_fields_unsupported(fsdir):
    meta = capture(make_source(fsdir), "full")
    has_user_xattr = user_xattr_works(fsdir)
    dst = fresh_copy(fsdir, owner=(UNPRIVILEGED, UNPRIVILEGED))
    fd = os.open(str(dst), os.O_RDWR)
    try:
        status, reasons = run_unprivileged(pres.apply_metadata, fd, meta, "full")
    finally:
        os.close(fd)
    assert status == {"mode": "skipped-unsupported", "uid": "skipped-unsupported", "gid": "skipped-unsupported",
                      "atime": "applied", "mtime": "applied", "xattrs": "skipped-unsupported"}, reasons
    assert "EPERM" in reasons["uid"] and "EPERM" in reasons["gid"]
    assert "setuid withheld" in reasons["mode"]
    assert "security.capability: EPERM" in reasons["xattrs"]
    assert "trusted.switchyard.note: EPERM" in reasons["xattrs"]
    assert "system.posix_acl_access" not in reasons["xattrs"]
    st = os.stat(str(dst))
    assert stat.S_IMODE(st.st_mode) & stat.S_ISUID == 0  # no setuid on the wrong owner
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (UNPRIVILEGED, UNPRIVILEGED, MTIME_NS)
    assert getcap(dst) == ""
    assert "user:4242:r--" in acl_entries(dst)
    if has_user_xattr:
        assert getfattr_value(dst, USER_XATTR[0]) == USER_XATTR[1]


def test_full_apply_removes_an_acl_the_file_inherited_but_never_had(tmp_path):
    src = tmp_path / "plain"
    src.write_bytes(PAYLOAD)
    meta = capture(src, "full")
    assert "system.posix_acl_access" not in meta["xattrs"]
    inherit = tmp_path / "inherit"
    inherit.mkdir()
    subprocess.run(["setfacl", "-d", "-m", "u:4242:rwx", str(inherit)], check=True)
    dst = inherit / "dst"
    dst.write_bytes(PAYLOAD)
    assert "user:4242:rwx" in acl_entries(dst)  # inherited from the default ACL
    status, reasons = apply_to(dst, meta, "full")
    assert status["xattrs"] == "applied", reasons
    assert not any(e.startswith("user:4242") for e in acl_entries(dst))


# --------------------------------------------------------------------------- probe

def probe(directory, tier, backend=None):
    dirfd = os.open(str(directory), os.O_RDONLY | os.O_DIRECTORY)
    try:
        return ppres.probe_capabilities(dirfd, tier, backend=backend)
    finally:
        os.close(dirfd)


def probe_keys(tier):
    keys = set(pres.FIELDS_BY_TIER[tier])
    return keys | set(ppres.XATTR_PROBE_KEYS) if tier == "full" else keys


@pytest.mark.parametrize("tier", TIERS)
def test_root_probe_reports_what_the_filesystem_really_does(fsdir, tier):
    before = sorted(os.listdir(str(fsdir)))
    result = probe(fsdir, tier)
    assert set(result) == probe_keys(tier)
    assert sorted(os.listdir(str(fsdir))) == before  # probe file removed
    expected = {k: True for k in result}
    if tier == "full":
        expected["xattrs.user"] = user_xattr_works(fsdir)
        expected["xattrs"] = all(expected[k] for k in ppres.XATTR_PROBE_KEYS)
    assert {k: v["supported"] for k, v in result.items()} == expected, result
    assert all(v["reason"] for v in result.values())


def test_unprivileged_probe_reports_owner_capability_and_trusted_unsupported(fsdir):
    scratch = fsdir / "shared"
    scratch.mkdir()
    os.chmod(str(scratch), 0o777)
    dirfd = os.open(str(scratch), os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = run_unprivileged(ppres.probe_capabilities, dirfd, "full")
    finally:
        os.close(dirfd)
    supported = {k: v["supported"] for k, v in result.items()}
    # Without a loaded SELinux policy the kernel may let a file's owner write security.selinux:
    # ask setfattr what is real here rather than assume.
    selinux_real = unprivileged_setfattr_works(fsdir, "security.selinux", "system_u:object_r:bin_t:s0")
    assert supported == {
        "mode": True, "uid": False, "gid": False, "atime": True, "mtime": True,
        "xattrs.user": unprivileged_setfattr_works(fsdir, "user.check", "1"), "xattrs.trusted": False,
        "xattrs.security.capability": False, "xattrs.security.selinux": selinux_real,
        "xattrs.system.posix_acl_access": True, "xattrs": False,
    }, result
    assert os.listdir(str(scratch)) == []


def test_probe_notes_a_nosuid_mount(tmp_path):
    mnt = mount_tmpfs(tmp_path / "nosuid", "size=1m,nosuid")
    try:
        result = probe(mnt, "basic")
    finally:
        umount(mnt)
    assert result["mode"]["supported"] is True
    assert "nosuid" in result["mode"]["reason"]


def test_probe_on_a_read_only_mount_reports_everything_unsupported(tmp_path):
    mnt = mount_tmpfs(tmp_path / "ro", "size=1m,ro")
    try:
        result = probe(mnt, "full")
    finally:
        umount(mnt)
    assert set(result) == probe_keys("full")
    assert not any(v["supported"] for v in result.values())
    assert all("EROFS" in v["reason"] for v in result.values())


class _ExplodingBackend(xattr.OsXattrBackend):
    name = "exploding"

    def set(self, fd, name, value):
        raise RuntimeError("boom")


def test_probe_removes_its_file_when_it_fails(tmp_path):
    with pytest.raises(RuntimeError):
        probe(tmp_path, "full", backend=_ExplodingBackend())
    assert os.listdir(str(tmp_path)) == []
