"""The issue 14 benchmark still runs end to end (tiny sizes: this checks the harness, not the speed).

bench_scale.py asserts nothing about speed; what can rot is the harness: the loop-mounted ext4 the sandboxes
live on, the untraced and traced runs of each variant, the counted columns and the verdict lines.
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def test_bench_scale_runs_every_variant_on_its_own_ext4_and_unmounts_it():
    before = set(os.listdir(os.path.join(REPO, ".build")))
    r = subprocess.run([sys.executable, os.path.join(HERE, "bench_scale.py"), "--sizes", "20", "--repeats", "1",
                        "--loop-links", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "sandboxes: a fresh loop-mounted ext4 with a journal" in out
    assert re.search(r"sandbox usr/bin: \d+ us per new inode \(median of \d+ sandboxes", out), out
    for label in ("empty playbook (1 debug)", "ansible.builtin.ping", "safe_apply, 1 task", "file state=link loop",
                  "copy backup + file loops", "engine in-process", "group-commit syscall floor"):
        assert label in out, label
    row = next(line for line in out.splitlines() if line.startswith("safe_apply, 1 task"))
    # An untraced wall, the traced run's wall beside it, and the counted columns from the traced run.
    assert re.search(r"\(runs: [\d.]+; traced [\d.]+\)", row), row
    cols = row.split()
    assert cols[3] == "20" and cols[8] == "1+6", row  # links; fsyncs on a fresh root
    assert re.search(r"report <= 400 bytes/link: \d+ B/link at 20 -> (HOLDS|does NOT hold)", out), out
    assert "fsyncs for 200 links" not in out  # no 200-link row, no verdict made up for it
    # The run's directory (and with it the image) is gone and nothing stays mounted.
    new = set(os.listdir(os.path.join(REPO, ".build"))) - before
    assert not [n for n in new if n.startswith("bench-scale-")], new
    assert not _mounts_under(os.path.join(REPO, ".build", "bench-scale-")), _mounts_under(REPO)


def test_bench_scale_without_a_loop_mount_says_so_and_measures_on_the_checkouts_filesystem():
    """Where the loop-mounted ext4 cannot be made (here: no mkfs.ext4 on PATH; elsewhere not root, no loop
    device), the benchmark does not fail: it says why in its header and builds the sandboxes under .build."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not os.path.exists(os.path.join(p, "mkfs.ext4")))
    r = subprocess.run([sys.executable, os.path.join(HERE, "bench_scale.py"), "--no-ansible", "--sizes", "5"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300,
                       check=False, env=dict(os.environ, PATH=path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"sandboxes: under \.build on the checkout's filesystem: no loop-mounted ext4 \(.*mkfs\.ext4",
                     r.stdout), r.stdout
    assert "no loop-mounted ext4" in r.stderr
    assert re.search(r"^engine in-process\s+5\s", r.stdout, re.M), r.stdout
