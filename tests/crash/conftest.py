"""Fixtures of the crash suite: a fast tmpfs scratch area per worker and fresh 120-target sandboxes."""
import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import crashkit as ck  # noqa: E402

assert os.geteuid() == 0, "the crash suite mounts tmpfs and must run as root (the tests always run as root here)"

N_TARGETS = 120


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A tmpfs per test module (and xdist worker): kill points cost process time, not disk flushes."""
    mnt = tmp_path_factory.mktemp("crash-tmpfs")
    with ck.tmpfs(mnt, size="384m"):
        yield str(mnt)


@pytest.fixture
def sandbox(scratch, request):
    """A fresh root with N_TARGETS targets on the module's tmpfs, removed afterwards."""
    root = os.path.join(scratch, request.node.name.replace("/", "_").replace("[", "-").replace("]", ""))
    shutil.rmtree(root, ignore_errors=True)
    sb = ck.Sandbox(root, N_TARGETS, seed=request.node.name)
    yield sb
    shutil.rmtree(root, ignore_errors=True)
