"""The two README commands: `make demo` installs only what the demo uses, `make test` (CI) the toolchain."""
import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dry_run(target):
    """The commands `make <target>` would run on a fresh checkout (no venvs yet)."""
    out = subprocess.check_output(["make", "-n", "-B", target, "VENV=/nonexistent/venv",
                                   "DEMO_VENV=/nonexistent/demo-venv"], cwd=REPO, universal_newlines=True)
    return out


def requirements(name):
    with open(os.path.join(REPO, name)) as f:
        return sorted(re.split(r"[<>=!~ ;#]", line.strip(), 1)[0].lower() for line in f
                      if line.strip() and not line.startswith("#"))


def test_make_demo_installs_only_the_light_requirements_and_rust_coreutils():
    cmds = dry_run("demo")
    assert "requirements-demo.txt" in cmds and "requirements-dev.txt" not in cmds, cmds
    assert "install-system-deps.sh demo" in cmds, cmds
    assert requirements("requirements-demo.txt") == ["ansible-core", "jsonschema"]
    with open(os.path.join(REPO, "scripts", "install-system-deps.sh")) as f:
        script = f.read()
    before_full = script.split('if [ "${1:-all}" != demo ]', 1)[0]
    assert re.findall(r"need\+=\((\S+)\)", before_full) == ["rust-coreutils"]


def test_make_test_installs_the_toolchain_and_runs_changelog_lint_and_pytest():
    cmds = dry_run("test")
    assert "requirements-dev.txt" in cmds and "install-system-deps.sh\n" in cmds, cmds
    assert "antsibull-changelog lint" in cmds and "-m pytest" in cmds, cmds
    for tool in ("antsibull-changelog", "antsibull-docs", "ansible-runner", "ansible-builder", "molecule"):
        assert tool in requirements("requirements-dev.txt"), tool


def test_ci_runs_make_test():
    with open(os.path.join(REPO, ".ci", "run")) as f:
        assert [l for l in f.read().splitlines() if l and not l.startswith("#")][-1] == "make test"
