"""Session fixtures for the SSH test fleet (see README.md in this directory).

The base root filesystems are built by this session, once, into
``<repo>/.build/fleet-<pid>/`` and removed at the end: nothing is cached across runs.
"""
import concurrent.futures
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fleet as fleetlib  # noqa: E402

FLEET_HOSTS = 5


def pytest_addoption(parser):
    group = parser.getgroup("switchyard fleet")
    group.addoption("--fleet-hosts", type=int, default=FLEET_HOSTS,
                    help="number of hosts in the session fleet (default %d)" % FLEET_HOSTS)
    group.addoption("--fleet-base-port", type=int, default=fleetlib.DEFAULT_BASE_PORT,
                    help="first loopback port to try (default %d)" % fleetlib.DEFAULT_BASE_PORT)
    group.addoption("--fleet-bases-from", default=None, metavar="WORKDIR",
                    help="use the bases already built in WORKDIR/bases (by `fleet.py build`) "
                         "instead of building them: for iterating on tests; CI builds its own")


def _worker_offset():
    """Separate port ranges for pytest-xdist workers (gw0, gw1, ...)."""
    w = os.environ.get("PYTEST_XDIST_WORKER", "")
    return 200 * int(w[2:]) if w.startswith("gw") and w[2:].isdigit() else 0


class Bases(object):
    """What this session built: {suite: rootfs}, and why a suite could not be built."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.paths = {}
        self.errors = {}
        self.seconds = {}

    def info(self, suite):
        return fleetlib.base_info(self.workdir, suite)


@pytest.fixture(scope="session")
def fleet_workdir():
    if os.geteuid() != 0:
        pytest.fail("the fleet tests need root (mount, unshare, chroot)")
    workdir = os.path.join(fleetlib.REPO, ".build", "fleet-%d" % os.getpid())
    if os.path.exists(workdir):
        fleetlib.Fleet.load(workdir).stop()
        fleetlib._rmtree(workdir)
    os.makedirs(workdir)
    yield workdir
    # Everything started below has been stopped by now; refuse to delete through a mount.
    leftovers = fleetlib.fleet_processes(workdir), fleetlib.mounts_under(workdir)
    if any(leftovers):
        fleetlib.Fleet.load(workdir).stop(verify=False)
        fleetlib.unmount_all(workdir)
    fleetlib._rmtree(workdir)
    assert not any(leftovers), "fleet left processes/mounts behind: %r" % (leftovers,)


@pytest.fixture(scope="session")
def fleet_bases(request, fleet_workdir):
    """Build bookworm (required) and bullseye (if the mirror serves it) in parallel."""
    suites = (fleetlib.DEFAULT_SUITE, fleetlib.OLD_SUITE)
    reuse = request.config.getoption("--fleet-bases-from")
    if reuse:
        bases = Bases(os.path.abspath(reuse))
        for suite in suites:
            path = fleetlib.base_dir(reuse, suite)
            if os.path.isdir(path) and bases.info(suite):
                bases.paths[suite] = path
            else:
                bases.errors[suite] = "not built in %s" % reuse
        if fleetlib.DEFAULT_SUITE not in bases.paths:
            pytest.fail("--fleet-bases-from %s: no bookworm base there" % reuse)
        return bases
    bases = Bases(fleet_workdir)

    def build(suite):
        t0 = time.monotonic()
        try:
            return suite, fleetlib.build_base(fleet_workdir, suite), None, time.monotonic() - t0
        except fleetlib.BaseBuildError as e:
            return suite, None, str(e), time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(suites)) as ex:
        for suite, path, err, secs in ex.map(build, suites):
            bases.seconds[suite] = secs
            if path:
                bases.paths[suite] = path
            else:
                bases.errors[suite] = err
                sys.stderr.write("[fleet] %s base not built: %s\n" % (suite, err))
    if fleetlib.DEFAULT_SUITE not in bases.paths:
        pytest.fail("bookworm base could not be built: %s" % bases.errors.get(fleetlib.DEFAULT_SUITE))
    return bases


@pytest.fixture(scope="session")
def fleet_port(request):
    """First loopback port of this session (per xdist worker); tests' own fleets add 100+."""
    return request.config.getoption("--fleet-base-port") + _worker_offset()


@pytest.fixture(scope="session")
def fleet(request, fleet_workdir, fleet_bases, fleet_port):
    """N hosts (default 5; --fleet-hosts): host 0 on bullseye when it was built."""
    n = request.config.getoption("--fleet-hosts")
    port = fleet_port
    hosts_dir = os.path.join(fleet_workdir, "session")
    os.makedirs(hosts_dir, exist_ok=True)
    f = fleetlib.start_fleet(hosts_dir, n, port, bases=fleet_bases.paths)
    f.bases = fleet_bases
    try:
        yield f
    finally:
        f.stop()
