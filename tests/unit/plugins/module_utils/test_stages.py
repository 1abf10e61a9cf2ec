"""The stages as a caller uses them: Settings are only read, each stage decides before it acts, and each stage
emits only its own events."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils.engine import (  # noqa: E402
    Settings, apply, preflight, restore)
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import (  # noqa: E402
    entries, expand_events, validation_errors)


def ok(result):
    report, err, _warnings = result
    assert err is None, err and err.msg
    assert validation_errors(report) == []
    return report


def test_apply_after_preflight_on_the_same_settings_commits(tmp_path):
    """preflight() never mutates; it used to say so by setting check_mode on the caller's Settings, so the
    apply() that followed with the same object silently dry-ran."""
    sb = make_sandbox(tmp_path)
    links = [sb.link("ls"), sb.link("cat")]
    settings = Settings(root=sb.root)
    before = dict(vars(settings))
    pre = ok(preflight(settings, links))
    assert pre["dry_run"] is True
    rep = ok(apply(settings, links))
    assert rep["dry_run"] is False and rep["changed"] is True
    for link in links:
        assert os.readlink(link["target"]) == "/opt/prov/bin/" + os.path.basename(link["target"])
        assert len(sb.backups(os.path.basename(link["target"]))) == 1
    assert [e["result"] for e in entries(rep)] == ["changed", "changed"]
    assert vars(settings) == before


def test_check_mode_settings_stay_check_mode_through_preflight_and_apply(tmp_path):
    sb = make_sandbox(tmp_path)
    settings = Settings(root=sb.root, check_mode=True)
    ok(preflight(settings, [sb.link("ls")]))
    rep = ok(apply(settings, [sb.link("ls")]))
    assert rep["dry_run"] is True and settings.check_mode is True
    assert not os.path.islink(sb.p("/usr/bin/ls")) and sb.backups("ls") == []
    assert not os.path.lexists(sb.p("/run/lock/switchyard.lock"))


def test_restore_emits_restore_events_not_apply_ones(tmp_path):
    """The attempt of a restore (under the lock, every backup verified) is a `restore` event with the lock facts."""
    sb = make_sandbox(tmp_path)
    plan_id = ok(apply(Settings(root=sb.root), [sb.link("ls")]))["plan_id"]
    ok(restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/ls")]))
    ok(apply(Settings(root=sb.root), [sb.link("ls")]))
    for rep in (ok(restore(Settings(root=sb.root), plan_id=plan_id)),
                ok(restore(Settings(root=sb.root), targets=[sb.p("/usr/bin/ls")], which="previous"))):
        events = expand_events(rep)
        assert not [e for e in events if e["stage"].startswith("apply")], events
        attempt = [e for e in events if e["stage"] == "restore" and "lock_backend" in e]
        assert len(attempt) == 1 and attempt[0]["actions"] == 1 and attempt[0]["lock_attempts"] >= 1


def test_restore_of_a_plan_decides_every_target_before_touching_any(tmp_path):
    """A target that may not be restored (a regular file that differs from its backup) fails the restore
    before any other target of the plan is put back."""
    sb = make_sandbox(tmp_path)
    links = [sb.link("ls"), sb.link("cat")]
    plan_id = ok(apply(Settings(root=sb.root), links))["plan_id"]
    os.unlink(sb.p("/usr/bin/cat"))
    with open(sb.p("/usr/bin/cat"), "wb") as f:
        f.write(b"someone else's cat\n")
    rep, err, _w = restore(Settings(root=sb.root), plan_id=plan_id)
    assert err is not None and err.error_id == "E_RESTORE_FAILED" and "/usr/bin/cat" in err.msg
    assert validation_errors(rep) == []
    # /usr/bin/ls sorts after /usr/bin/cat and is restored first when restoring acts as it decides.
    assert os.readlink(sb.p("/usr/bin/ls")) == "/opt/prov/bin/ls"
    assert open(sb.p("/usr/bin/cat"), "rb").read() == b"someone else's cat\n"


def test_restore_of_a_plan_reports_its_immutable_check(tmp_path):
    """A restore of a plan has no preflight rows: the immutable gate it runs is reported, not thrown away."""
    sb = make_sandbox(tmp_path)
    plan_id = ok(apply(Settings(root=sb.root), [sb.link("ls")]))["plan_id"]
    rep = ok(restore(Settings(root=sb.root), plan_id=plan_id))
    e = entries(rep)[0]
    assert e["result"] == "changed" and e["immutable_check"]["immutable"] is False
    assert e["immutable_detection_method"]
    assert not os.path.islink(sb.p("/usr/bin/ls"))


def test_restore_of_a_target_that_stops_being_a_link_while_it_is_inspected_fails_cleanly(tmp_path, monkeypatch):
    """Restore decides every target before touching any.  A package manager that renames a regular file over the
    link between the decision's lstat and its readlink makes readlink fail with EINVAL: that is a clean
    E_RESTORE_FAILED naming the target, with the new file left alone (found by tests/races/test_concurrent_writer.py,
    1 cycle in 1,000, as a raw OSError out of restore()).  The file really is renamed over the link here, at the
    one instant the race needs."""
    from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms
    from ansible_collections.switchyard.fs.plugins.module_utils._stages import restore as restore_stage
    sb = make_sandbox(tmp_path)
    link = sb.link("ls")
    settings = Settings(root=sb.root)
    ok(apply(settings, [link]))
    target = link["target"]
    real_readlink, real_decide = atoms.readlink_at, restore_stage._decide
    armed = []

    def racing_readlink(dir_fd, name):
        if armed and name == "ls":
            del armed[:]
            with open(target + ".upgrade", "wb") as f:
                f.write(b"upgraded ls\n")
            os.rename(target + ".upgrade", target)  # the link is now a regular file; readlink fails for real
        return real_readlink(dir_fd, name)

    def deciding(*args, **kwargs):
        armed.append(True)
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(atoms, "readlink_at", racing_readlink)
    monkeypatch.setattr(restore_stage, "_decide", deciding)
    report, err, _warnings = restore(settings, targets=[target])
    assert err is not None and err.error_id == "E_RESTORE_FAILED", err
    assert "changed while restore inspected it" in err.msg and err.path == "/usr/bin/ls"
    assert validation_errors(report) == []
    with open(target, "rb") as f:
        assert f.read() == b"upgraded ls\n"
    assert len(sb.backups("ls")) == 1
