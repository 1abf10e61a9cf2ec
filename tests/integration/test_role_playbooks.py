"""The provider_swap role and the switchyard.fs.* playbooks, run for real on sandbox roots.

Every run targets localhost (ansible_connection=local, explicit interpreter) with
provider_swap_root pointing at a temp directory holding copies of real GNU binaries,
busybox, Debian's uutils (rust-coreutils) and the shared libraries they need, so smoke
checks and rescue checks can execute inside the root. The machine's own /usr/bin is never
touched.
"""
import glob
import re
import hashlib
import json
import os
import shutil
import subprocess
import textwrap

import pytest

from harness import REPO, VENV_BIN, ansible_env, default_python, run_playbook
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import expand_events  # noqa: E402

PLAYBOOKS = ("preflight", "swap", "rollback", "prune")
GNU_TOOLS = ("ls", "cat", "echo", "head", "tail", "wc", "comm",
             "cp", "mv", "rm", "ln", "stat", "readlink", "sha256sum", "sort", "date")
UUTILS_BIN = "/usr/bin/coreutils"
UUTILS_DIR = "/usr/lib/cargo/bin/coreutils"
BUSYBOX = "/bin/busybox"


# -- sandbox ------------------------------------------------------------------------------

def _shared_libs(binary):
    out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         universal_newlines=True, check=False).stdout
    libs = set()
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/"):
                libs.add(word)
    return libs


def build_sandbox(root):
    """A minimal merged-/usr tree with GNU tools, busybox and uutils that run inside a chroot."""
    for path in (BUSYBOX, UUTILS_BIN, UUTILS_DIR):
        assert os.path.exists(path), "%s missing: run scripts/install-system-deps.sh (busybox, rust-coreutils)" % path
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", UUTILS_DIR.lstrip("/"), "run/lock", "var/lib", "etc"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for name, to in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(to, os.path.join(root, name))
    binaries = []
    for tool in GNU_TOOLS:
        shutil.copy2("/usr/bin/" + tool, os.path.join(root, "usr/bin", tool))
        binaries.append("/usr/bin/" + tool)
    shutil.copy2(os.path.realpath(BUSYBOX), os.path.join(root, "usr/bin/busybox"))
    shutil.copy2(UUTILS_BIN, os.path.join(root, "usr/bin/coreutils"))
    binaries += [BUSYBOX, UUTILS_BIN]
    for tool in os.listdir(UUTILS_DIR):
        os.symlink(os.readlink(os.path.join(UUTILS_DIR, tool)), os.path.join(root, UUTILS_DIR.lstrip("/"), tool))
    libs = set()
    for b in binaries:
        libs |= _shared_libs(b)
    for lib in libs:
        dest = os.path.join(root, lib.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.exists(dest):
            shutil.copy2(os.path.realpath(lib), dest)
    return root


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def snapshot(root, tools):
    return {t: sha256(os.path.join(root, "usr/bin", t)) for t in tools}


def backups(root, tool):
    return sorted(p for p in glob.glob(os.path.join(root, "usr/bin", ".%s.*.bak" % tool)))


@pytest.fixture
def sandbox(tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root)
    return build_sandbox(root)


def role_play(root, **role_vars):
    params = dict(provider_swap_root=root)
    params.update(role_vars)
    return textwrap.dedent("""\
        - name: Role under test
          hosts: all
          gather_facts: false
          roles:
            - role: switchyard.fs.provider_swap
              vars: %s
        """) % json.dumps(params)


def result(run, name, host="localhost"):
    """The one result of a task by its name, with or without the "<role> : " prefix."""
    found = [r for n, r in all_task_results(run, host) if n == name or n.endswith(" : " + name)]
    assert len(found) == 1, "expected one result for task %r on %s, got %d\n%r" % (name, host, len(found), run)
    return found[0]


def explain(run):
    """The failed tasks of a run, for assertion messages."""
    lines = ["rc=%d" % run.rc]
    for play in run.data.get("plays", []):
        for task in play.get("tasks", []):
            for host, res in task["hosts"].items():
                if res.get("failed"):
                    lines.append("%s | %s: %s %s" % (host, task["task"]["name"], res.get("error_id", ""),
                                                     res.get("msg", "")))
    if len(lines) == 1:
        lines.append(run.stdout[-3000:] + run.stderr[-3000:])
    return "\n".join(lines)


def failure_text(run):
    return run.stdout + run.stderr


def all_task_results(run, host="localhost"):
    out = []
    for play in run.data.get("plays", []):
        for task in play.get("tasks", []):
            if host in task["hosts"]:
                out.append((task["task"]["name"], task["hosts"][host]))
    return out


# -- syntax -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PLAYBOOKS)
def test_playbook_passes_syntax_check_by_fqcn(name, tmp_path):
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "--syntax-check",
                           "switchyard.fs." + name], env=ansible_env(), cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_playbook_documents_its_variables_at_the_top(name):
    with open(os.path.join(REPO, "playbooks", name + ".yml")) as f:
        head = f.read().split("- name:", 1)[0]
    assert "switchyard.fs." + name in head
    assert "target_hosts" in head
    assert "Variables" in head


# -- argument spec ------------------------------------------------------------------------

@pytest.mark.parametrize("bad_vars, option", [
    ({"provider_swap_state": "gone"}, "provider_swap_state"),
    ({"provider_swap_provider": "snap"}, "provider_swap_provider"),
    ({"provider_swap_preset": "yolo"}, "provider_swap_preset"),
    ({"provider_swap_lock_timeout": "soon"}, "provider_swap_lock_timeout"),
    ({"provider_swap_restore_which": "oldest"}, "provider_swap_restore_which"),
    ({"provider_swap_links": [{"source": "/opt/x/ls"}], "provider_swap_provider": "explicit"}, "target"),
    ({"provider_swap_policy": "strict"}, "provider_swap_policy"),
])
def test_role_argument_spec_rejects_bad_input_naming_the_option(tmp_path, bad_vars, option):
    root = str(tmp_path / "untouched")
    os.makedirs(root)
    run = run_playbook(tmp_path, role_play(root, **bad_vars))
    assert run.rc != 0
    text = failure_text(run)
    assert "Validation of arguments failed" in text, text[-3000:]
    assert option in text
    assert os.listdir(root) == []


@pytest.mark.parametrize("bad_vars, option", [
    ({"provider_swap_root": "relative/root"}, "provider_swap_root"),
    ({"provider_swap_provider": "explicit"}, "provider_swap_links"),
    ({"provider_swap_tools": []}, "provider_swap_tools"),
    ({"provider_swap_smoke": "sometimes"}, "provider_swap_smoke"),
])
def test_role_rejects_inconsistent_settings_naming_the_option(tmp_path, bad_vars, option):
    root = str(tmp_path / "untouched")
    os.makedirs(root)
    run = run_playbook(tmp_path, role_play(root, **bad_vars))
    assert run.rc != 0
    failed = [r for _n, r in all_task_results(run) if r.get("failed")]
    assert failed, explain(run)
    assert option in json.dumps(failed), explain(run)
    assert os.listdir(root) == []


# -- the role ---------------------------------------------------------------------------

def test_role_swaps_to_uutils_idempotently_and_restores_by_plan_id(tmp_path, sandbox):
    tools = ["ls", "cat", "echo"]
    before = snapshot(sandbox, tools)
    run = run_playbook(tmp_path, role_play(sandbox, provider_swap_tools=tools))
    assert run.rc == 0, explain(run)
    apply = result(run, "Swap the targets to the provider")
    assert apply["changed"] is True
    plan_id = apply["plan_id"]
    facts = apply["ansible_facts"]["switchyard_apply"]
    assert facts["plan_id"] == plan_id and expand_events(facts)
    assert result(run, "Preflight the swap")["ansible_facts"]["switchyard_preflight"]["summary"]["stops"] == 0
    for tool in tools:
        target = os.path.join(sandbox, "usr/bin", tool)
        assert os.readlink(target) == "%s/%s" % (UUTILS_DIR, tool)
        assert len(backups(sandbox, tool)) == 1
    # The swapped tools run inside the root.
    out = subprocess.run(["chroot", sandbox, "/usr/bin/echo", "hi"], stdout=subprocess.PIPE, check=False).stdout
    assert out == b"hi\n"

    again = run_playbook(tmp_path, role_play(sandbox, provider_swap_tools=tools))
    assert again.rc == 0, explain(again)
    assert result(again, "Swap the targets to the provider")["changed"] is False
    assert all(len(backups(sandbox, t)) == 1 for t in tools)

    undo = run_playbook(tmp_path, role_play(sandbox, provider_swap_state="absent", provider_swap_restore_plan_id=plan_id))
    assert undo.rc == 0, explain(undo)
    assert result(undo, "Restore the previous files")["changed"] is True
    assert snapshot(sandbox, tools) == before
    assert not any(os.path.islink(os.path.join(sandbox, "usr/bin", t)) for t in tools)


def test_role_swaps_to_busybox_and_restores_by_targets(tmp_path, sandbox):
    tools = ["ls", "head"]
    before = snapshot(sandbox, tools)
    run = run_playbook(tmp_path, role_play(sandbox, provider_swap_provider="busybox", provider_swap_tools=tools))
    assert run.rc == 0, explain(run)
    for tool in tools:
        assert os.readlink(os.path.join(sandbox, "usr/bin", tool)) == BUSYBOX
    # busybox runs the applet named by argv[0]: the link name.
    out = subprocess.run(["chroot", sandbox, "/usr/bin/head", "--help"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, check=False).stdout
    assert b"BusyBox" in out
    undo = run_playbook(tmp_path, role_play(sandbox, provider_swap_provider="busybox", provider_swap_tools=tools,
                                            provider_swap_state="absent"))
    assert undo.rc == 0, explain(undo)
    assert snapshot(sandbox, tools) == before
    again = run_playbook(tmp_path, role_play(sandbox, provider_swap_provider="busybox", provider_swap_tools=tools,
                                             provider_swap_state="absent"))
    assert again.rc == 0, explain(again)
    assert result(again, "Restore the previous files")["changed"] is False


def test_role_explicit_links_with_custom_smoke(tmp_path, sandbox):
    os.makedirs(os.path.join(sandbox, "opt/prov"))
    shutil.copy2(os.path.join(sandbox, "usr/bin/busybox"), os.path.join(sandbox, "opt/prov/busybox"))
    links = [{"source": os.path.join(sandbox, "opt/prov/busybox"), "target": os.path.join(sandbox, "usr/bin/wc")}]
    smoke = [{"argv": ["/usr/bin/wc", "--help"], "rc": 0}]
    run = run_playbook(tmp_path, role_play(sandbox, provider_swap_provider="explicit", provider_swap_links=links,
                                           provider_swap_smoke=smoke))
    assert run.rc == 0, explain(run)
    assert os.readlink(os.path.join(sandbox, "usr/bin/wc")) == "/opt/prov/busybox"


def test_role_check_mode_changes_nothing_and_reports_the_change(tmp_path, sandbox):
    tools = ["ls", "cat"]
    before = snapshot(sandbox, tools)
    listing = sorted(os.listdir(os.path.join(sandbox, "usr/bin")))
    run = run_playbook(tmp_path, role_play(sandbox, provider_swap_tools=tools), extra_args=["--check", "--diff"])
    assert run.rc == 0, explain(run)
    apply = result(run, "Swap the targets to the provider")
    assert apply["changed"] is True
    assert apply["ansible_facts"]["switchyard_apply"]["dry_run"] is True
    assert snapshot(sandbox, tools) == before
    assert sorted(os.listdir(os.path.join(sandbox, "usr/bin"))) == listing


def test_role_smoke_failure_is_rolled_back_and_fails_the_host(tmp_path, sandbox):
    # comm is no busybox applet: the link runs busybox as "comm", which fails the smoke check.
    tools = ["ls", "comm"]
    before = snapshot(sandbox, tools)
    run = run_playbook(tmp_path, role_play(sandbox, provider_swap_provider="busybox", provider_swap_tools=tools))
    assert run.rc != 0
    # The module failed with a report: the role keeps it out of the failure output (the task itself is ok,
    # so its report is also in ansible_facts) and fails the next task with the module's short message.
    apply = result(run, "Swap the targets to the provider")
    assert not apply.get("failed") and apply["failed_when_result"] is False
    assert apply["error_id"] == "E_SMOKE"
    assert apply["rolled_back"] is True
    short = result(run, "Fail the host when the swap failed")
    assert short["msg"] == apply["msg"] and "ansible_facts" not in short
    assert short["msg"].startswith("E_SMOKE: apply failed (plan_id=%s)" % apply["plan_id"]), short["msg"]
    final = result(run, "Fail the host with the original error")
    assert "E_SMOKE" in final["msg"] and "rolled back by the module=True" in final["msg"]
    assert snapshot(sandbox, tools) == before
    assert not any(os.path.islink(os.path.join(sandbox, "usr/bin", t)) for t in tools)


def test_role_rescue_restores_when_site_verification_fails(tmp_path, sandbox):
    tools = ["ls", "cat"]
    before = snapshot(sandbox, tools)
    verify = tmp_path / "site_checks.yml"
    verify.write_text("- name: Site health check\n  ansible.builtin.fail:\n    msg: service unhealthy\n")
    run = run_playbook(tmp_path, role_play(sandbox, provider_swap_tools=tools, provider_swap_verify_tasks=str(verify)))
    assert run.rc != 0
    assert result(run, "Swap the targets to the provider")["changed"] is True
    assert result(run, "Restore the swap rejected after it was applied")["changed"] is True
    msg = result(run, "Fail the host with the original error")["msg"]
    assert "service unhealthy" in msg and "restored by the role=True" in msg
    assert snapshot(sandbox, tools) == before


# -- the playbooks ----------------------------------------------------------------------

def fleet_inventory(tmp_path, roots):
    """One inventory host per sandbox root, all local, each with its own provider_swap_root."""
    inv_dir = tmp_path / "inventory"
    (inv_dir / "host_vars").mkdir(parents=True)
    lines = ["[sandbox]"]
    for host, root in roots.items():
        lines.append("%s ansible_connection=local ansible_python_interpreter=%s" % (host, default_python()))
        (inv_dir / "host_vars" / (host + ".yml")).write_text("provider_swap_root: %s\n" % json.dumps(root))
    (inv_dir / "hosts.ini").write_text("\n".join(lines) + "\n")
    return str(inv_dir)


def import_play(name):
    return "- name: Run %s\n  ansible.builtin.import_playbook: switchyard.fs.%s\n" % (name, name)


def test_swap_playbook_stops_every_later_batch_when_the_canary_fails(tmp_path):
    roots = {}
    for host in ("canary", "web1", "web2", "web3"):
        roots[host] = build_sandbox(str(tmp_path / host))
    # Break only the canary's provider: its busybox is replaced by a program that exits 1.
    broken = os.path.join(roots["canary"], "usr/bin/busybox")
    os.unlink(broken)
    shutil.copy2("/usr/bin/false", broken)
    inv = fleet_inventory(tmp_path, roots)
    before = {h: snapshot(r, ["ls", "cat"]) for h, r in roots.items()}
    run = run_playbook(tmp_path, import_play("swap"), inventory=inv,
                       extra_args=["-e", json.dumps({"provider_swap_provider": "busybox", "tools": "ls cat",
                                                     "target_hosts": "sandbox"})])
    assert run.rc != 0
    canary = [r for _n, r in all_task_results(run, "canary") if r.get("failed")]
    assert canary, explain(run)
    for host in ("web1", "web2", "web3"):
        assert all_task_results(run, host) == [], "host %s ran after the canary failed" % host
    assert {h: snapshot(r, ["ls", "cat"]) for h, r in roots.items()} == before


def test_swap_playbook_runs_canary_then_larger_batches(tmp_path):
    roots = dict((h, build_sandbox(str(tmp_path / h))) for h in ("h1", "h2", "h3", "h4", "h5"))
    inv = fleet_inventory(tmp_path, roots)
    run = run_playbook(tmp_path, import_play("swap"), inventory=inv,
                       extra_args=["-e", json.dumps({"provider_swap_tools": ["ls"], "target_hosts": "sandbox"})])
    assert run.rc == 0, explain(run)
    swap_plays = [p for p in run.data["plays"] if p["play"]["name"] == "Swap binaries to a provider"]
    batch_sizes = []
    for play in swap_plays:
        hosts = set()
        for task in play["tasks"]:
            if task["task"]["name"].endswith("Swap the targets to the provider"):
                hosts |= set(task["hosts"])
        batch_sizes.append(len(hosts))
    # One canary, then 25% of 5 hosts (rounded down, at least 1), then all the rest.
    assert batch_sizes == [1, 1, 3], batch_sizes
    plan_ids = set(result(run, "Swap the targets to the provider", host=h)["plan_id"] for h in roots)
    # plan ids are computed over root-relative paths: the same plan has one id fleet-wide,
    # which is what lets switchyard.fs.rollback undo it everywhere by plan_id.
    assert len(plan_ids) == 1
    for root in roots.values():
        assert os.readlink(os.path.join(root, "usr/bin/ls")) == "%s/ls" % UUTILS_DIR


def test_preflight_playbook_reports_and_changes_nothing(tmp_path, sandbox):
    inv = fleet_inventory(tmp_path, {"localhost": sandbox})
    before = snapshot(sandbox, ["ls", "cat"])
    run = run_playbook(tmp_path, import_play("preflight"), inventory=inv,
                       extra_args=["-e", json.dumps({"tools": "ls,cat"})])
    assert run.rc == 0, explain(run)
    report = result(run, "Preflight the swap or restore")["ansible_facts"]["switchyard_preflight"]
    assert report["summary"]["rows"] == 2
    assert report["summary"]["stops"] == 0
    assert snapshot(sandbox, ["ls", "cat"]) == before
    assert backups(sandbox, "ls") == []


def test_preflight_playbook_fails_on_stop_unless_told_not_to(tmp_path, sandbox):
    inv = fleet_inventory(tmp_path, {"localhost": sandbox})
    # A restore with no backup is a STOP.
    args = {"provider_swap_state": "absent", "restore_targets": os.path.join(sandbox, "usr/bin/ls")}
    run = run_playbook(tmp_path, import_play("preflight"), inventory=inv, extra_args=["-e", json.dumps(args)])
    assert run.rc != 0
    assert result(run, "Preflight the swap or restore")["error_id"] == "E_POLICY" or \
        "E_BACKUP_MISSING" in result(run, "Preflight the swap or restore")["summary_error_ids"]
    args["fail_on_stop"] = False
    run = run_playbook(tmp_path, import_play("preflight"), inventory=inv, extra_args=["-e", json.dumps(args)])
    assert run.rc == 0, explain(run)
    assert result(run, "Preflight the swap or restore")["ansible_facts"]["switchyard_preflight"]["summary"]["stops"] == 1


def test_rollback_playbook_by_plan_id_and_by_targets(tmp_path, sandbox):
    inv = fleet_inventory(tmp_path, {"localhost": sandbox})
    before = snapshot(sandbox, ["ls", "cat"])
    swap = run_playbook(tmp_path, import_play("swap"), inventory=inv,
                        extra_args=["-e", json.dumps({"tools": ["ls", "cat"]})])
    assert swap.rc == 0, explain(swap)
    plan_id = result(swap, "Swap the targets to the provider")["plan_id"]

    by_targets = run_playbook(tmp_path, import_play("rollback"), inventory=inv,
                              extra_args=["-e", json.dumps({"targets": os.path.join(sandbox, "usr/bin/cat")})])
    assert by_targets.rc == 0, explain(by_targets)
    assert not os.path.islink(os.path.join(sandbox, "usr/bin/cat"))
    assert os.path.islink(os.path.join(sandbox, "usr/bin/ls"))

    by_plan = run_playbook(tmp_path, import_play("rollback"), inventory=inv,
                           extra_args=["-e", json.dumps({"plan_id": plan_id})])
    assert by_plan.rc == 0, explain(by_plan)
    assert snapshot(sandbox, ["ls", "cat"]) == before


def test_prune_playbook_keeps_the_newest_backup(tmp_path, sandbox):
    inv = fleet_inventory(tmp_path, {"localhost": sandbox})
    for _unused in range(2):
        swap = run_playbook(tmp_path, import_play("swap"), inventory=inv, extra_args=["-e", '{"tools": ["ls"]}'])
        assert swap.rc == 0, explain(swap)
        back = run_playbook(tmp_path, import_play("rollback"), inventory=inv, extra_args=["-e", '{"tools": ["ls"]}'])
        assert back.rc == 0, explain(back)
    assert len(backups(sandbox, "ls")) == 2
    newest = backups(sandbox, "ls")[-1]
    run = run_playbook(tmp_path, import_play("prune"), inventory=inv,
                       extra_args=["-e", json.dumps({"tools": ["ls"], "retention_count": 1})])
    assert run.rc == 0, explain(run)
    assert result(run, "Prune old backups")["changed"] is True
    assert backups(sandbox, "ls") == [newest]


# -- docs -------------------------------------------------------------------------------

def _awx_survey_specs():
    """{playbook name: survey spec} from the JSON blocks under '### switchyard.fs.<name>'."""
    import re
    with open(os.path.join(REPO, "docs", "awx.md")) as f:
        text = f.read()
    specs = {}
    for name, body in re.findall(r"### switchyard\.fs\.(\w+)\s+```json\n(.*?)```", text, re.S):
        specs[name] = json.loads(body)
    return specs


def _role_options():
    import yaml
    with open(os.path.join(REPO, "roles", "provider_swap", "meta", "argument_specs.yml")) as f:
        return set(yaml.safe_load(f)["argument_specs"]["main"]["options"])


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_awx_survey_spec_only_uses_documented_variables(name):
    spec = _awx_survey_specs()[name]
    assert spec["name"] and spec["description"]
    with open(os.path.join(REPO, "playbooks", name + ".yml")) as f:
        header = f.read().split("- name:", 1)[0]
    options = _role_options()
    for q in spec["spec"]:
        assert {"question_name", "type", "variable", "required"} <= set(q), q
        var = q["variable"]
        assert var in options or re.search(r"#\s+%s\s" % re.escape(var), header), \
            "survey variable %s of %s is neither a role option nor documented in the playbook" % (var, name)


def test_role_doc_lists_every_role_variable():
    with open(os.path.join(REPO, "docs", "role.md")) as f:
        doc = f.read()
    missing = sorted(o for o in _role_options() if "`%s`" % o not in doc)
    assert not missing, "docs/role.md does not describe %s" % missing


def test_role_defaults_match_the_argument_spec():
    import yaml
    with open(os.path.join(REPO, "roles", "provider_swap", "defaults", "main.yml")) as f:
        defaults = yaml.safe_load(f)
    assert set(defaults) == _role_options()
