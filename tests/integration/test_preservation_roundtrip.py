"""Issue 4 done-when: each preservation tier round-trips through apply + restore on ext4 and tmpfs,
through the hard-link backup path and the copy path (backup directory on a second tmpfs)."""
import base64
import os
import shutil
import stat
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sandbox import Sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply, restore  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

OWNER = (4242, 4343)
MTIME_NS = 1500000000123456789
ATIME_NS = 1600000000111111111
PAYLOAD = b"#!/bin/sh\necho preserved\n" * 50


def _mount_tmpfs(path, size="16m"):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=755" % size, "swy-pres", path], check=True)


@pytest.fixture
def mounts():
    made = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", "-l", m], check=False)


def _build(root):
    sb = Sandbox(root)
    for d in ("usr/bin", "opt/prov/bin", "var/backups"):
        os.makedirs(sb.p(d), exist_ok=True)
    target = sb.p("/usr/bin/pingish")
    with open(target, "wb") as f:
        f.write(PAYLOAD)
    os.chown(target, *OWNER)
    os.chmod(target, 0o4750)
    assert shutil.which("setcap") and shutil.which("setfacl"), "run scripts/install-system-deps.sh (libcap2-bin, acl)"
    subprocess.run(["setcap", "cap_net_raw+ep", target], check=True)
    subprocess.run(["setfacl", "-m", "u:4242:r", target], check=True)
    os.setxattr(target, "user.switchyard.note", b"kept")
    os.utime(target, ns=(ATIME_NS, MTIME_NS))
    with open(sb.p("/opt/prov/bin/pingish"), "wb") as f:
        f.write(b"#!/bin/sh\n")
    os.chmod(sb.p("/opt/prov/bin/pingish"), 0o755)
    return sb, target


def _meta(path):
    st = os.lstat(path)
    xattrs = dict((n, base64.b64encode(os.getxattr(path, n)).decode()) for n in sorted(os.listxattr(path)))
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    try:
        data = b"".join(iter(lambda: os.read(fd, 1 << 16), b""))
    finally:
        os.close(fd)
    return {"bytes": data, "mode": stat.S_IMODE(st.st_mode), "owner": (st.st_uid, st.st_gid),
            "mtime_ns": st.st_mtime_ns, "atime_ns": st.st_atime_ns, "xattrs": xattrs}


PROMISES = {
    "basic": ("bytes", "mode"),
    "extended": ("bytes", "mode", "owner", "mtime_ns", "atime_ns"),
    "full": ("bytes", "mode", "owner", "mtime_ns", "atime_ns", "xattrs"),
}


@pytest.mark.parametrize("tier", ["basic", "extended", "full"])
@pytest.mark.parametrize("layout", ["ext4-hardlink", "tmpfs-hardlink", "ext4-copy-to-tmpfs"])
def test_tier_round_trips_exactly(tmp_path, mounts, tier, layout):
    root = str(tmp_path / "root")
    os.makedirs(root)
    if layout.startswith("tmpfs"):
        _mount_tmpfs(root)
        mounts.append(root)
    sb, target = _build(root)
    policy = {"preservation_tier": tier, "suid_sgid": "allow"}
    if layout.endswith("copy-to-tmpfs"):
        _mount_tmpfs(sb.p("/var/backups"))
        mounts.append(sb.p("/var/backups"))
        policy.update(backup_dir="/var/backups", allow_degraded_fs=True)
    before = _meta(target)
    assert "security.capability" in before["xattrs"] and "system.posix_acl_access" in before["xattrs"]

    rep, err, _w = apply(Settings(root=root, policy=policy), [{"source": sb.p("/opt/prov/bin/pingish"), "target": target}])
    assert err is None, err.msg
    assert validation_errors(rep) == []
    method = entries(rep)[0]["backup"]["backup_method"]
    assert method == ("copy" if layout.endswith("copy-to-tmpfs") else "hardlink")
    assert os.path.islink(target)

    rep, err, _w = restore(Settings(root=root, policy=policy), targets=[target])
    assert err is None, err.msg
    assert validation_errors(rep) == []
    after = _meta(target)
    applied = entries(rep)[0]["preservation_applied"]
    if tier == "basic":
        # basic does not chown: the copy is root's, so the 4242-owned file's setuid bit is withheld (never
        # hand out setuid-root) and the status says so; every other mode bit comes back.
        assert after["mode"] == before["mode"] & ~stat.S_ISUID, "%s: basic mode %o" % (layout, after["mode"])
        assert after["bytes"] == before["bytes"]
        assert applied == {"mode": applied["mode"]} and applied["mode"] != "applied", applied
    else:
        for field in PROMISES[tier]:
            assert after[field] == before[field], "%s: %s lost %s" % (layout, tier, field)
        assert applied and all(v == "applied" for v in applied.values()), applied
    # A lower tier does not pretend: what it does not promise is not carried over.
    if tier != "full":
        assert "security.capability" not in after["xattrs"]
    if tier == "basic":
        assert after["owner"] == (0, 0)


def test_old_v1_sidecar_still_restores_and_reports_unsupported(tmp_path):
    import json
    sb, target = _build(str(tmp_path / "root"))
    policy = {"preservation_tier": "extended", "suid_sgid": "allow"}
    before = _meta(target)
    _rep, err, _w = apply(Settings(root=sb.root, policy=policy), [{"source": sb.p("/opt/prov/bin/pingish"), "target": target}])
    assert err is None
    sidecar = [e for e in os.listdir(sb.p("/usr/bin")) if e.endswith(".meta.json")][0]
    path = sb.p("/usr/bin/" + sidecar)
    with open(path) as f:
        meta = json.load(f)
    v1 = dict((k, meta[k]) for k in ("tag", "target", "created_ms", "plan_id", "action_id", "run_id", "prior_kind",
                                     "hash_alg", "payload", "payload_hash", "mode"))
    v1["schema"] = "backup_meta.v1"
    with open(path, "w") as f:
        json.dump(v1, f)
    rep, err, _w = restore(Settings(root=sb.root, policy=policy), targets=[target])
    assert err is None, err.msg
    after = _meta(target)
    assert after["bytes"] == before["bytes"]
    applied = entries(rep)[0]["preservation_applied"]
    assert applied["uid"] == "skipped-unsupported" and applied["mtime"] == "skipped-unsupported"
