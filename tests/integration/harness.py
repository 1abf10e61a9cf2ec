"""Run real ansible-playbook against localhost with a sandbox root.

Every report a playbook returns (ansible_facts.switchyard_*) is validated against the
collection's schema by the action plugins themselves; tests read results from the JSON
callback output.
"""
import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS_ROOT = os.path.join(REPO, ".build", "collections")
VENV_BIN = os.path.dirname(sys.executable)

PY_VERSIONS_DIR = "/root/.pyenv/versions"


def target_pythons():
    """Oldest (3.8) and newest installed CPython for managed-host runs."""
    found = []
    if os.path.isdir(PY_VERSIONS_DIR):
        for name in os.listdir(PY_VERSIONS_DIR):
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "3" and parts[1].isdigit() and int(parts[1]) >= 8:
                exe = os.path.join(PY_VERSIONS_DIR, name, "bin", "python3")
                if os.access(exe, os.X_OK):
                    found.append(((int(parts[1]), int(parts[2])), exe))
    found.sort()
    if not found:
        return [sys.executable]
    oldest, newest = found[0][1], found[-1][1]
    return [oldest] if oldest == newest else [oldest, newest]


def default_python():
    return os.environ.get("SWITCHYARD_TARGET_PYTHON", sys.executable)


def write_inventory(path, python=None, hosts=("localhost",)):
    python = python or default_python()
    lines = ["[sandbox]"]
    for h in hosts:
        lines.append("%s ansible_connection=local ansible_python_interpreter=%s" % (h, python))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def ansible_env(extra=None):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS_ROOT,
        "ANSIBLE_STDOUT_CALLBACK": "json_results",
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(REPO, "tests", "integration", "callback_plugins"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
    })
    if extra:
        env.update(extra)
    return env


class PlaybookRun(object):
    def __init__(self, proc, data):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.data = data

    def task_results(self, name, host="localhost"):
        """The per-host result of every task with this name, in order of execution."""
        out = []
        for play in self.data.get("plays", []):
            for task in play.get("tasks", []):
                if task["task"]["name"] == name and host in task["hosts"]:
                    out.append(task["hosts"][host])
        return out

    def result(self, name, host="localhost"):
        res = self.task_results(name, host)
        assert len(res) == 1, "expected one result for task %r, got %d\n%s\n%s" % (name, len(res), self.stdout[-4000:], self.stderr[-4000:])
        return res[0]

    def failures(self):
        out = []
        for play in self.data.get("plays", []):
            for task in play.get("tasks", []):
                for host, res in task["hosts"].items():
                    if res.get("failed"):
                        out.append("%s [%s]: %s %s" % (task["task"]["name"], host, res.get("error_id", ""),
                                                       res.get("msg") or res.get("stderr") or res.get("exception")))
        return out

    def __repr__(self):
        return "PlaybookRun(rc=%d)\nFAILED TASKS:\n%s\nSTDERR:\n%s" % (
            self.rc, "\n".join(self.failures()) or self.stdout[-3000:], self.stderr[-3000:])


def run_playbook(tmp_path, playbook_yaml, extra_args=(), python=None, env=None, inventory=None, timeout=600):
    """Write the playbook, run ansible-playbook against localhost, parse the json callback."""
    pb = os.path.join(str(tmp_path), "playbook-%d.yml" % len(os.listdir(str(tmp_path))))
    with open(pb, "w") as f:
        f.write(textwrap.dedent(playbook_yaml))
    inv = inventory or write_inventory(os.path.join(str(tmp_path), "inventory.ini"), python)
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inv, pb] + list(extra_args)
    proc = subprocess.run(cmd, env=ansible_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout, cwd=str(tmp_path), check=False)
    start = proc.stdout.find("{")
    data = json.loads(proc.stdout[start:]) if start >= 0 else {}
    return PlaybookRun(proc, data)
