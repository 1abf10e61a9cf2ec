"""`molecule test` for each collection scenario (extensions/molecule), as part of the test command."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize("scenario", ["default", "smoke_rollback"])
def test_molecule_scenario(scenario, tmp_path):
    env = dict(os.environ)
    # molecule shells out to ansible-config/ansible-playbook: they must be this venv's.
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["SWITCHYARD_MOLECULE_ROOT"] = str(tmp_path / "molecule-root")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["PY_COLORS"] = "0"
    p = subprocess.run([os.path.join(VENV_BIN, "molecule"), "test", "-s", scenario], cwd=REPO, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=900, check=False)
    assert p.returncode == 0, p.stdout[-8000:]
