"""Issue 14, no per-target work: a plan lists each target directory once to sweep dead temps, not once per
target, and still sweeps exactly what the per-target listing swept (dead temps of every target go, a live
writer's temp and other names' temps stay)."""
import fcntl
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils import _fsatoms as fs  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors  # noqa: E402


def _plant(path):
    with open(path, "wb") as f:
        f.write(b"half-written restore temp")


def test_one_listing_per_directory_still_sweeps_every_targets_dead_temps(tmp_path, monkeypatch):
    sb = make_sandbox(tmp_path, tools=(), synthetic=30)
    bindir = sb.p("/usr/bin")
    dead = [os.path.join(bindir, ".f%03d%sdead%d" % (i, fs.TEMP_MARKER, i)) for i in (0, 7, 29)]
    for p in dead:
        _plant(p)
    # A temp of a name that is not a target, and a temp whose writer is alive (flock held): both stay.
    other = os.path.join(bindir, ".zz-not-a-target%sdead" % fs.TEMP_MARKER)
    live = os.path.join(bindir, ".f003%slive" % fs.TEMP_MARKER)
    _plant(other)
    _plant(live)
    live_fd = os.open(live, os.O_RDONLY)
    fcntl.flock(live_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    listed = []
    real_listdir = os.listdir

    def counting_listdir(path="."):
        if isinstance(path, int) and os.path.samestat(os.fstat(path), os.stat(bindir)):
            listed.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    try:
        links = [{"source": sb.p("/opt/prov/bin/f%03d" % i), "target": sb.p("/usr/bin/f%03d" % i)} for i in range(30)]
        report, err, _w = apply(Settings(root=sb.root), links=links)
        assert err is None, err and err.msg
        assert validation_errors(report) == []
        assert report["summary"]["changed"] == 30
    finally:
        monkeypatch.undo()
        os.close(live_fd)
    for p in dead:
        assert not os.path.lexists(p), "dead temp %s was not swept" % p
    assert os.path.exists(other) and os.path.exists(live)
    # Before the fix the sweep alone listed /usr/bin once per target (30 times); the rest of the plan lists it a
    # fixed number of times whatever the number of targets.
    assert len(listed) < 10, "usr/bin listed %d times for 30 targets" % len(listed)
