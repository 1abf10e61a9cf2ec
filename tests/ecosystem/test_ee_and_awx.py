"""The execution environment recipe and the AWX job templates of docs/awx.md, for real.

- The collection is built with ``ansible-galaxy collection build`` from the shipped files.
- ``ansible-builder create`` turns the recipe in docs/awx.md (``execution-environment.yml`` and
  ``requirements.yml`` taken from the doc's code blocks, next to the tarball) into a build context:
  it holds the tarball, and the Containerfile copies it in and installs it with ansible-galaxy from
  ``requirements.yml``; running that same install from the context installs switchyard.fs.
- The job-template playbooks run through ``ansible-runner`` the way AWX runs a job: a private data
  dir with the collection installed from the tarball, ``inventory/hosts`` (localhost, explicit
  interpreter, ``provider_swap_root`` on a sandbox root), survey answers as strings in
  ``env/extravars``, ``--check`` for a Check job; then the swap, and a rollback by the plan id read
  from the swap job's events.
"""
import glob
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
STAGE_ROOT = os.path.join(REPO, ".build", "galaxy-build")
STAGE = os.path.join(STAGE_ROOT, "ansible_collections", "switchyard", "fs")
TOOLS = ("ls", "cat", "echo")

pytestmark = pytest.mark.xdist_group("ee_awx")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(**extra):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), ANSIBLE_NOCOLOR="1")
    for var in [k for k in env if k.startswith("ANSIBLE_COLLECTIONS")] + ["PYTHONPATH"]:
        env.pop(var, None)
    env.update(extra)
    return env


def _galaxy_version():
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        return yaml.safe_load(f)["version"]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    sanity = _load("switchyard_sanity_helpers", os.path.join(REPO, "tests", "sanity", "test_sanity.py"))
    stage = sanity.stage_collection(STAGE)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(out), stage],
                   env=_env(), check=True, stdout=subprocess.DEVNULL)
    path = out / ("switchyard-fs-%s.tar.gz" % _galaxy_version())
    assert path.is_file()
    return path


def _awx_doc_blocks():
    with open(os.path.join(REPO, "docs", "awx.md")) as f:
        text = f.read()
    blocks = {}
    for body in re.findall(r"```yaml\n(.*?)```", text, re.S):
        first = body.splitlines()[0]
        m = re.match(r"# ([\w.-]+\.yml)\b", first)
        if m:
            blocks[m.group(1)] = body
    return blocks


# -- execution environment -----------------------------------------------------------------

def test_ee_recipe_in_the_docs_builds_a_complete_context(tarball, tmp_path):
    blocks = _awx_doc_blocks()
    assert {"execution-environment.yml", "requirements.yml"} <= set(blocks), sorted(blocks)
    work = tmp_path / "ee"
    work.mkdir()
    (work / "execution-environment.yml").write_text(blocks["execution-environment.yml"])
    (work / "requirements.yml").write_text(blocks["requirements.yml"])
    (work / tarball.name).write_bytes(tarball.read_bytes())
    ee = yaml.safe_load(blocks["execution-environment.yml"])
    assert [f["src"] for f in ee["additional_build_files"]] == [tarball.name], "the recipe names another tarball"

    proc = subprocess.run([os.path.join(BIN, "ansible-builder"), "create", "-f", "execution-environment.yml",
                           "-c", "context", "--output-filename", "Containerfile"], cwd=str(work), env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stdout
    context = work / "context"
    build = context / "_build"
    shipped = build / "collections" / tarball.name
    assert shipped.read_bytes() == tarball.read_bytes()
    containerfile = (context / "Containerfile").read_text()
    assert re.search(r"^COPY _build /build$", containerfile, re.M)
    assert re.search(r"^WORKDIR /build$", containerfile, re.M)
    assert re.search(r"ansible-galaxy collection install .*-r requirements.yml", containerfile)
    reqs = yaml.safe_load((build / "requirements.yml").read_text())
    assert reqs["collections"] == [{"name": "collections/" + tarball.name, "type": "file"}]

    # What the galaxy stage runs in /build, run in the context's _build: it installs the collection.
    dest = tmp_path / "installed"
    # Only the destination counts as installed, as in the image (a copy in ~/.ansible would make it a no-op).
    proc = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "-r", "requirements.yml",
                           "-p", str(dest)], cwd=str(build), env=_env(ANSIBLE_COLLECTIONS_PATH=str(dest)),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stdout
    manifest = json.loads((dest / "ansible_collections" / "switchyard" / "fs" / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == _galaxy_version()
    # ...and the collection's own EE metadata is there for ansible-builder's introspection.
    assert (dest / "ansible_collections" / "switchyard" / "fs" / "meta" / "execution-environment.yml").is_file()


def test_awx_doc_sets_surveys_with_awx_job_template():
    with open(os.path.join(REPO, "docs", "awx.md")) as f:
        text = f.read()
    assert "awx job_templates modify" not in text and "--survey_spec" not in text
    tasks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(- name: .*?)```", text, re.S)]
    jt = [t[0]["awx.awx.job_template"] for t in tasks if "awx.awx.job_template" in t[0]]
    assert jt and jt[0]["survey_enabled"] is True and "survey_spec" in jt[0]
    assert jt[0]["playbook"] == "playbooks/swap.yml"


# -- ansible-runner, the way AWX runs a job ---------------------------------------------------------

def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def awx(tarball, tmp_path):
    """A private data dir like the one AWX hands to ansible-runner, and a sandbox root for localhost."""
    sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
    try:
        roles_tests = _load("switchyard_role_playbooks", os.path.join(REPO, "tests", "integration",
                                                                      "test_role_playbooks.py"))
    finally:
        sys.path.remove(os.path.join(REPO, "tests", "integration"))
    root = tmp_path / "root"
    root.mkdir()
    roles_tests.build_sandbox(str(root))
    pdd = tmp_path / "pdd"
    collections = pdd / "collections"
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(collections)],
                   env=_env(ANSIBLE_COLLECTIONS_PATH=str(collections)), check=True, stdout=subprocess.DEVNULL)
    assert (collections / "ansible_collections" / "switchyard" / "fs" / "MANIFEST.json").is_file()
    project = pdd / "project" / "playbooks"
    project.mkdir(parents=True)
    for playbook in glob.glob(os.path.join(REPO, "playbooks", "*.yml")):
        (project / os.path.basename(playbook)).write_text(open(playbook).read())
    (pdd / "inventory").mkdir()
    (pdd / "inventory" / "hosts").write_text(
        "[fleet]\nlocalhost ansible_connection=local ansible_python_interpreter=%s provider_swap_root=%s\n"
        % (sys.executable, root))
    (pdd / "env").mkdir()
    (pdd / "env" / "envvars").write_text(yaml.safe_dump({
        "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "False",
        "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}))
    return pdd, str(root)


def _job(pdd, playbook, extravars, ident, check=False):
    import ansible_runner  # pylint: disable=import-outside-toplevel
    (pdd / "env" / "extravars").write_text(json.dumps(extravars))
    run = ansible_runner.run(private_data_dir=str(pdd), playbook="playbooks/" + playbook, ident=ident, quiet=True,
                             cmdline="--check --diff" if check else "--diff")
    events = list(run.events)
    failed = [e["event_data"].get("res", {}).get("msg") for e in events if e["event"] == "runner_on_failed"]
    assert run.status == "successful" and run.rc == 0, "%s: %s rc=%s %s\n%s" % (
        ident, run.status, run.rc, failed, run.stdout.read()[-4000:])
    return events


def _results(events, action):
    return [e["event_data"]["res"] for e in events if e["event"] == "runner_on_ok"
            and e["event_data"].get("resolved_action", e["event_data"].get("task_action")) == action]


def test_swap_check_and_rollback_jobs_through_ansible_runner_with_survey_answers(awx):
    pdd, root = awx
    before = {t: _sha(os.path.join(root, "usr/bin", t)) for t in TOOLS}
    # Survey answers as AWX sends them: strings, an integer for the integer question.
    survey = {"target_hosts": "fleet", "provider_swap_provider": "rust-coreutils", "tools": "ls\ncat\necho",
              "provider_swap_preset": "production", "swap_batches": "1,25%,100%", "swap_max_fail_percentage": 0}

    check = _job(pdd, "swap.yml", survey, "check", check=True)
    dry = _results(check, "switchyard.fs.safe_apply")
    assert len(dry) == 1 and dry[0]["changed"] and dry[0]["ansible_facts"]["switchyard_apply"]["dry_run"]
    assert {t: _sha(os.path.join(root, "usr/bin", t)) for t in TOOLS} == before
    assert not any(os.path.islink(os.path.join(root, "usr/bin", t)) for t in TOOLS)

    swap = _job(pdd, "swap.yml", survey, "swap")
    applied = _results(swap, "switchyard.fs.safe_apply")
    assert len(applied) == 1 and applied[0]["changed"]
    plan_id = applied[0]["plan_id"]
    assert plan_id == dry[0]["plan_id"]
    assert sorted(a["path"] for a in entries(applied[0]["ansible_facts"]["switchyard_apply"])) == \
        sorted("/usr/bin/" + t for t in TOOLS)
    for tool in TOOLS:
        assert os.readlink(os.path.join(root, "usr/bin", tool)).endswith("/" + tool)

    rollback = _job(pdd, "rollback.yml", {"target_hosts": "fleet", "plan_id": plan_id, "targets": "",
                                          "which": "latest", "rollback_batches": "100%"}, "rollback")
    restored = _results(rollback, "switchyard.fs.safe_restore")
    assert len(restored) == 1 and restored[0]["changed"] and restored[0]["plan_id"] == plan_id
    assert {t: _sha(os.path.join(root, "usr/bin", t)) for t in TOOLS} == before
    assert not any(os.path.islink(os.path.join(root, "usr/bin", t)) for t in TOOLS)
    # AWX keeps each job's events and stdout in the private data dir's artifacts.
    assert sorted(os.listdir(str(pdd / "artifacts"))) == ["check", "rollback", "swap"]
