"""A package upgrade writes new files over swapped links (dpkg: write <name>.dpkg-new, rename over the target).

Check mode of the same swap reports exactly the drifted targets; a rerun swaps them again and keeps a
new backup of the upgraded bytes, so a later restore brings back the upgraded version, not the stale one.
The fleet test (tests/fleet/test_fleet_apt_hook.py) does the same with a real dpkg reinstall.
"""
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply, restore  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

NAMES = ("f000", "f001", "f002", "f003")
DRIFTED = ("f001", "f003")


def ok(result):
    report, err, _warnings = result
    assert err is None, err and err.msg
    assert validation_errors(report) == []
    return report


def sha(data):
    return hashlib.sha256(data).hexdigest()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def dpkg_unpack(path, data):
    """What dpkg does for each file of a package it unpacks: a new file, renamed over the old entry."""
    tmp = path + ".dpkg-new"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o755)
    os.rename(tmp, path)


def test_an_upgrade_over_swapped_links_is_seen_reswapped_and_restorable(tmp_path):
    sb = make_sandbox(tmp_path, tools=(), synthetic=len(NAMES))
    links = [{"source": sb.p("/opt/prov/bin/" + n), "target": sb.p("/usr/bin/" + n)} for n in NAMES]
    original = dict((n, read(sb.p("/usr/bin/" + n))) for n in NAMES)
    first = ok(apply(Settings(root=sb.root), links))
    assert all(os.path.islink(l["target"]) for l in links)

    upgraded = dict((n, b"#!/bin/sh\n# upgraded " + n.encode() + b" 9.9\n") for n in DRIFTED)
    for n in DRIFTED:
        dpkg_unpack(sb.p("/usr/bin/" + n), upgraded[n])

    # Check mode: exactly the drifted targets would change, with the plan id of the first swap.
    dry = ok(apply(Settings(root=sb.root, check_mode=True), links))
    assert dry["plan_id"] == first["plan_id"] and dry["changed"] is True
    changed = sorted(os.path.basename(a["path"]) for a in entries(dry) if a["result"] == "changed")
    assert changed == sorted(DRIFTED)
    assert sorted(os.path.basename(a["path"]) for a in entries(dry) if a["result"] == "unchanged") == \
        sorted(set(NAMES) - set(DRIFTED))
    for a in entries(dry):
        if a["result"] == "changed":
            assert a["before"]["kind"] == "file" and a["before"]["sha256"] == sha(upgraded[os.path.basename(a["path"])])
    assert all(os.path.isfile(sb.p("/usr/bin/" + n)) and not os.path.islink(sb.p("/usr/bin/" + n)) for n in DRIFTED)

    # The rerun swaps them again and backs up the upgraded bytes.
    again = ok(apply(Settings(root=sb.root), links))
    assert again["plan_id"] == first["plan_id"]
    assert sorted(os.path.basename(a["path"]) for a in entries(again) if a["result"] == "changed") == sorted(DRIFTED)
    assert all(os.path.islink(l["target"]) for l in links)
    for n in DRIFTED:  # the stale original, and the upgraded bytes as the newest backup
        older, newer = sorted(sb.backups(n), key=lambda name: int(name.split(".")[-2]))
        assert read(sb.p("/usr/bin/" + older)) == original[n] and read(sb.p("/usr/bin/" + newer)) == upgraded[n]
    for n in set(NAMES) - set(DRIFTED):
        assert len(sb.backups(n)) == 1

    # A restore by targets (latest backup) brings back the upgraded bytes, the others' originals.
    targets = [l["target"] for l in links]
    ok(restore(Settings(root=sb.root), targets=targets))
    for n in NAMES:
        path = sb.p("/usr/bin/" + n)
        assert not os.path.islink(path)
        assert read(path) == (upgraded[n] if n in DRIFTED else original[n]), n


def test_after_a_full_upgrade_a_restore_by_plan_id_brings_back_the_upgraded_bytes(tmp_path):
    """The rollback playbook restores by plan id; the rerun of the same plan is the newest journal of that id."""
    sb = make_sandbox(tmp_path, tools=(), synthetic=len(NAMES))
    links = [{"source": sb.p("/opt/prov/bin/" + n), "target": sb.p("/usr/bin/" + n)} for n in NAMES]
    first = ok(apply(Settings(root=sb.root), links))
    upgraded = dict((n, b"#!/bin/sh\n# upgraded " + n.encode() + b"\n") for n in NAMES)
    for n in NAMES:  # a package reinstall writes every file it ships
        dpkg_unpack(sb.p("/usr/bin/" + n), upgraded[n])
    again = ok(apply(Settings(root=sb.root), links))
    assert again["plan_id"] == first["plan_id"] and again["summary"]["changed"] == len(NAMES)
    rep = ok(restore(Settings(root=sb.root), plan_id=first["plan_id"]))
    assert sorted(r["result"] for r in entries(rep)) == ["changed"] * len(NAMES)
    for n in NAMES:
        assert read(sb.p("/usr/bin/" + n)) == upgraded[n], n


def test_after_a_partial_upgrade_a_restore_by_plan_id_undoes_every_target_of_the_plan(tmp_path):
    """A rerun journals only the drifted targets; a restore by plan id still restores all of them: the drifted
    ones to their upgraded bytes (the plan's newest backup of each), the others to their originals."""
    sb = make_sandbox(tmp_path, tools=(), synthetic=len(NAMES))
    originals = dict((n, read(sb.p("/usr/bin/" + n))) for n in NAMES)
    links = [{"source": sb.p("/opt/prov/bin/" + n), "target": sb.p("/usr/bin/" + n)} for n in NAMES]
    first = ok(apply(Settings(root=sb.root), links))
    upgraded = dict((n, b"#!/bin/sh\n# upgraded " + n.encode() + b"\n") for n in DRIFTED)
    for n in DRIFTED:
        dpkg_unpack(sb.p("/usr/bin/" + n), upgraded[n])
    again = ok(apply(Settings(root=sb.root), links))
    assert again["plan_id"] == first["plan_id"] and again["summary"]["changed"] == len(DRIFTED)
    rep = ok(restore(Settings(root=sb.root), plan_id=first["plan_id"]))
    assert sorted(r["result"] for r in entries(rep)) == ["changed"] * len(NAMES)
    for n in NAMES:
        assert not os.path.islink(sb.p("/usr/bin/" + n)), n
        assert read(sb.p("/usr/bin/" + n)) == upgraded.get(n, originals[n]), n
