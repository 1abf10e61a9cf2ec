"""Issue 14, no per-target work: a plan lists each target directory once to sweep dead temps, not once per
target, and still sweeps exactly what the per-target listing swept (dead temps of every target go, a live
writer's temp and other names' temps stay)."""
import fcntl
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils._fs import atoms as fs  # noqa: E402
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


_UNDER_FD_LIMIT = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply
links = json.loads(sys.argv[3])
report, err, _w = apply(Settings(root=sys.argv[1]), links=links)
print(json.dumps({"err": err and err.msg, "changed": report["summary"]["changed"]}))
"""


def test_a_plan_with_more_targets_than_the_fd_limit_applies(tmp_path):
    """Targets in one directory share one directory handle (and one backup-directory handle): 300 targets apply
    under a 128-fd soft limit.  With one parent handle and one backup-directory handle per target the plan needed
    600+ fds and failed with EMFILE (a default 1024 limit broke at about 500 links)."""
    import json
    import subprocess
    sb = make_sandbox(tmp_path, tools=(), synthetic=300)
    links = [{"source": sb.p("/opt/prov/bin/f%03d" % i), "target": sb.p("/usr/bin/f%03d" % i)} for i in range(300)]
    # The collections root this package was imported from (pytest: <repo>/.build/collections; ansible-test: its stage).
    coll_root = os.path.abspath(os.path.join(os.path.dirname(fs.__file__), *[".."] * fs.__name__.count(".")))
    p = subprocess.run([sys.executable, "-c", _UNDER_FD_LIMIT, sb.root, "128", json.dumps(links)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       env=dict(os.environ, PYTHONPATH=coll_root), check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"err": None, "changed": 300}
    for link in links:
        assert os.readlink(link["target"]) == "/" + os.path.relpath(link["source"], sb.root)
