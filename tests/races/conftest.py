"""Fixtures of the race suite: one real tmpfs per test module (and xdist worker) holding each test's
root and its decoy directory outside root."""
import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import racekit as rk  # noqa: E402

assert os.geteuid() == 0, "the race suite mounts tmpfs and must run as root (the tests always run as root here)"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    mnt = str(tmp_path_factory.mktemp("race-tmpfs"))
    with rk.tmpfs(mnt):
        yield mnt


@pytest.fixture
def base(scratch, request):
    """<tmpfs>/<test>: the test puts root/ and decoy/ side by side in it."""
    path = os.path.join(scratch, request.node.name.replace("/", "_").replace("[", "-").replace("]", ""))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)
