"""Fixtures shared by the module_utils unit tests."""
import shutil
import subprocess

import pytest

# Resolved once at import: some tests take lsattr (and so chattr's directory) off PATH.
CHATTR = shutil.which("chattr")


@pytest.fixture
def chattr():
    """chattr(flag, path): set a real inode flag, always cleared in teardown."""
    assert CHATTR, "chattr missing: run scripts/install-system-deps.sh (e2fsprogs)"
    applied = []

    def _set(flag, path):
        subprocess.run([CHATTR, "+" + flag, str(path)], check=True)
        applied.append((flag, str(path)))

    yield _set
    for flag, path in reversed(applied):
        subprocess.run([CHATTR, "-" + flag, path], check=False)
