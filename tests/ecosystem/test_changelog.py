"""The changelog is kept with antsibull-changelog: fragments lint clean and CHANGELOG.md is generated.

Release notes come from changelogs/changelog.yaml (released versions) and changelogs/fragments/*.yml
(changes since). While 0.1.0 is unreleased, fragments are folded into it with
``antsibull-changelog release --version 0.1.0 --update-existing`` (``make changelog``).
"""
import os
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def changelog(*args):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([os.path.join(BIN, "antsibull-changelog")] + list(args), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)


def test_antsibull_changelog_lint_passes():
    proc = changelog("lint")
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout


def test_changelog_md_is_generated_from_changelog_yaml(tmp_path):
    out = tmp_path / "CHANGELOG.md"
    proc = changelog("generate", "--output", str(out), "--output-format", "md")
    assert proc.returncode == 0, proc.stdout
    with open(os.path.join(REPO, "CHANGELOG.md")) as f:
        assert f.read() == out.read_text(), "CHANGELOG.md is stale: run `make changelog`"


def test_the_released_version_is_the_galaxy_version():
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        version = yaml.safe_load(f)["version"]
    with open(os.path.join(REPO, "changelogs", "changelog.yaml")) as f:
        releases = yaml.safe_load(f)["releases"]
    assert version in releases, "galaxy.yml version %s has no entry in changelogs/changelog.yaml" % version
