# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight gates against the real kernel: chattr, tmpfs mounts, setcap, hard links, dpkg, PATH.

Every report is validated against schemas/report.schema.json, and every STOP is checked to name
its row's path and `policy.<knob>` for a real knob."""
from __future__ import absolute_import, division, print_function

import os
import re
import shutil
import stat
import subprocess

import pytest

from ansible_collections.switchyard.fs.plugins.module_utils import _faults
from ansible_collections.switchyard.fs.plugins.module_utils._gates import row as grow
from ansible_collections.switchyard.fs.plugins.module_utils._gates import target as gtarget
from ansible_collections.switchyard.fs.plugins.module_utils._probes import packages as _packages
from ansible_collections.switchyard.fs.plugins.module_utils.engine import KNOBS, Settings, apply, preflight, restore
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import validation_errors
from ansible_collections.switchyard.fs.plugins.plugin_utils._reports import entries, expand_events  # noqa: E402

SETCAP = shutil.which("setcap")
LSATTR = shutil.which("lsattr")
BUSYBOX = shutil.which("busybox")
DPKG_QUERY = shutil.which("dpkg-query")
DPKG_DIVERT = shutil.which("dpkg-divert")


@pytest.fixture(autouse=True)
def _as_root():
    """Every gate here is exercised against the real kernel: chattr, mount, chown and chroot need root."""
    assert os.geteuid() == 0, "needs root (chattr, mount, chown, chroot): run the tests as root"


def require(tool, package):
    """The path of `tool`, failing (not skipping) with the install hint when it is missing."""
    assert tool, "%s missing: run scripts/install-system-deps.sh" % package
    return tool


SCRIPT = b"#!/bin/sh\nexit 0\n"


# -- fixtures ----------------------------------------------------------------------------------

class Sandbox(object):
    """A root under tmp_path: targets in /usr/bin, providers in /opt/prov/bin (root-owned, 0755)."""

    def __init__(self, path):
        self.root = str(path)
        for d in ("usr/bin", "opt/prov/bin", "etc"):
            os.makedirs(self.host("/" + d))

    def host(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def file(self, rel, data=SCRIPT, mode=0o755):
        host = self.host(rel)
        if not os.path.isdir(os.path.dirname(host)):
            os.makedirs(os.path.dirname(host))
        with open(host, "wb") as f:
            f.write(data)
        os.chmod(host, mode)
        return host

    def link(self, name, source=None):
        """{source, target} host paths of a swap of /usr/bin/<name> to /opt/prov/bin/<name> (both created)."""
        target = self.host("/usr/bin/" + name)
        if not os.path.lexists(target):
            self.file("/usr/bin/" + name, b"#!/bin/sh\necho old " + name.encode() + b"\n")
        src = source or "/opt/prov/bin/" + name
        if not os.path.lexists(self.host(src)):
            self.file(src)
        return {"source": self.host(src), "target": target}


@pytest.fixture
def sb(tmp_path):
    return Sandbox(tmp_path / "root")


@pytest.fixture
def tmpfs():
    """tmpfs(path, *options): a real tmpfs mounted rw, then remounted with the options; unmounted in teardown."""
    mounted = []

    def _mount(path, *options):
        path = str(path)
        if not os.path.isdir(path):
            os.makedirs(path)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=4m", "tmpfs", path], check=True)
        mounted.append(path)
        return path

    def _remount(path, *options):
        subprocess.run(["mount", "-o", ",".join(("remount",) + options), path], check=True)

    _mount.remount = _remount
    yield _mount
    for path in reversed(mounted):
        if subprocess.run(["umount", path], check=False).returncode != 0:
            subprocess.run(["umount", "-l", path], check=False)


def check(sb_or_root, links=None, restores=None, fail_on_stop=False, **policy):
    """Run preflight; validate the report and the STOP wording; return (rows by (path, op), err, warnings, report)."""
    root = getattr(sb_or_root, "root", sb_or_root)
    report, err, warnings = preflight(Settings(root=root, policy=policy), links=links, restores=restores,
                                      fail_on_stop=fail_on_stop)
    assert validation_errors(report) == []
    for row in entries(report):
        for s in row["stops"]:
            assert row["path"] in s["msg"], s
            assert s["knob"] in KNOBS, s
            assert "policy.%s" % s["knob"] in s["msg"], s
    return dict(((r["path"], r["op"]), r) for r in entries(report)), err, warnings, report


def knobs(row):
    return sorted(s["knob"] for s in row["stops"])


def only_row(rows):
    assert len(rows) == 1
    return list(rows.values())[0]


# -- baseline ----------------------------------------------------------------------------------

def test_clean_target_passes_every_gate_without_warnings(sb):
    row = only_row(check(sb, [sb.link("tool")])[0])
    assert row["policy_ok"] and row["stops"] == [] and row["warnings"] == []
    assert row["immutable_detection_method"] == "ioctl"
    assert row["immutable_check"]["reliable"] is True and row["immutable_check"]["immutable"] is False
    assert row["source_trusted"] is True
    assert row["mount"]["rw"] and row["mount"]["exec"] and row["source_mount"]["exec"]
    assert row["provenance"] == {"uid": 0, "gid": 0, "pkg": None, "backend": None}
    assert row["preservation"]["probed"] == ["the target directory"]


def test_rows_are_sorted_by_path_and_a_summary_event_names_the_stop_paths(sb, chattr):
    links = [sb.link(n) for n in ("zz", "aa", "mm")]
    chattr("i", links[2]["target"])
    _rows, _err, _w, report = check(sb, links)
    assert [r["path"] for r in entries(report)] == ["/usr/bin/aa", "/usr/bin/mm", "/usr/bin/zz"]
    summary = [e for e in expand_events(report) if e["stage"] == "preflight.summary"]
    assert len(summary) == 1
    assert summary[0]["stop_paths"] == ["/usr/bin/mm"] and summary[0]["decision"] == "failure"
    assert [e["path"] for e in expand_events(report) if e["stage"] == "preflight"] == [r["path"] for r in entries(report)]


# -- immutable / append-only -------------------------------------------------------------------

@pytest.mark.parametrize("flag,field", [("i", "immutable"), ("a", "append_only")])
def test_flagged_target_stops_via_ioctl(sb, chattr, monkeypatch, flag, field):
    monkeypatch.delenv(_faults.DISABLE_IOCTL_ENV, raising=False)
    link = sb.link("tool")
    chattr(flag, link["target"])
    row = only_row(check(sb, [link])[0])
    assert row["immutable_detection_method"] == "ioctl"
    assert row["immutable_check"][field] is True and row["immutable_check"]["reliable"] is True
    assert knobs(row) == ["override_preflight"] and "chattr -%s" % flag in row["stops"][0]["msg"]


@pytest.mark.parametrize("flag,field", [("i", "immutable"), ("a", "append_only")])
def test_flagged_target_stops_via_lsattr_when_the_ioctl_is_unavailable(sb, chattr, monkeypatch, flag, field):
    require(LSATTR, "lsattr (e2fsprogs)")
    monkeypatch.setenv(_faults.DISABLE_IOCTL_ENV, "1")
    link = sb.link("tool")
    chattr(flag, link["target"])
    row = only_row(check(sb, [link])[0])
    assert row["immutable_detection_method"] == "lsattr"
    assert row["immutable_check"][field] is True and row["immutable_check"]["reliable"] is True
    assert knobs(row) == ["override_preflight"]


@pytest.fixture
def no_flag_probe(monkeypatch, tmp_path):
    """Neither the ioctl (test switch) nor lsattr (empty PATH): the flags cannot be read."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv(_faults.DISABLE_IOCTL_ENV, "1")
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize("flag", ["i", "a"])
def test_unknown_flags_stop_unless_unreliable_check_is_allowed(sb, chattr, no_flag_probe, flag):
    link = sb.link("tool")
    chattr(flag, link["target"])
    row = only_row(check(sb, [link])[0])
    assert row["immutable_detection_method"] == "unknown"
    assert row["immutable_check"]["reliable"] is False
    # Unknown is reported as unknown (null), never as "not immutable".
    assert row["immutable_check"]["immutable"] is None and row["immutable_check"]["append_only"] is None
    assert set(knobs(row)) == {"allow_unreliable_immutable_check"}

    row = only_row(check(sb, [link], allow_unreliable_immutable_check=True)[0])
    assert row["policy_ok"] is True and row["immutable_detection_method"] == "unknown"
    assert any("lsattr not found" in w for w in row["warnings"])


def test_immutable_directory_of_the_target_stops(sb, chattr):
    link = sb.link("tool")
    chattr("i", os.path.dirname(link["target"]))
    row = only_row(check(sb, [link])[0])
    assert row["immutable_check"]["directory"]["immutable"] is True
    assert any("the directory of /usr/bin/tool is immutable" in s["msg"] for s in row["stops"])


# -- mounts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("option,word", [("ro", "read-only"), ("noexec", "noexec")])
def test_target_directory_on_a_restricted_tmpfs_stops(sb, tmpfs, option, word):
    d = tmpfs(sb.host("/usr/local/bin"))
    link = sb.link("tool")
    link["target"] = sb.file("/usr/local/bin/tool")
    tmpfs.remount(d, option)
    row = only_row(check(sb, [link])[0])
    assert row["mount"]["fstype"] == "tmpfs" and row["mount"]["mountpoint"] == d
    assert knobs(row) == ["override_preflight"] if option == "noexec" else "override_preflight" in knobs(row)
    assert any(word in s["msg"] and "the target directory of /usr/local/bin/tool" in s["msg"] for s in row["stops"])


def test_source_needs_exec_but_not_rw(sb, tmpfs):
    d = tmpfs(sb.host("/opt/ro"))
    link = sb.link("tool", source="/opt/ro/tool")
    tmpfs.remount(d, "ro")
    row = only_row(check(sb, [link])[0])
    assert row["policy_ok"] is True and row["source_mount"]["rw"] is False

    tmpfs.remount(d, "rw", "noexec")
    row = only_row(check(sb, [link])[0])
    assert knobs(row) == ["override_preflight"]
    assert "source /opt/ro/tool of /usr/bin/tool is on a noexec mount" in row["stops"][0]["msg"]


def test_extra_mount_checks_stop_every_row_and_skip_absent_paths(sb, tmpfs):
    d = tmpfs(sb.host("/srv/data"))
    tmpfs.remount(d, "ro")
    links = [sb.link("one"), sb.link("two")]
    rows, _err, _w, _r = check(sb, links, extra_mount_checks=["/srv/data", "/usr", "/not/there"])
    for (path, _op), row in rows.items():
        assert knobs(row) == ["extra_mount_checks"]
        assert "extra_mount_checks path /srv/data" in row["stops"][0]["msg"]
        assert [m["path"] for m in row["extra_mounts"]] == ["/srv/data", "/usr"]
        assert any("/not/there skipped" in n for n in row["notes"])


def test_extra_mount_checks_follow_symlinks_only_inside_root(sb, tmpfs, tmp_path):
    """extra_mount_checks paths are resolved inside root by the one walk: a symlink naming a host path (absolute
    text is taken inside root) or climbing above root never reaches the host's read-only mount; one that stays
    inside root is followed, also when it names root itself by '/' or '..'."""
    hostro = tmpfs(tmp_path / "hostro")
    tmpfs.remount(hostro, "ro")
    inro = tmpfs(sb.host("/data/ro"))
    tmpfs.remount(inro, "ro")
    os.makedirs(sb.host("/srv"))
    os.symlink(hostro, sb.host("/srv/abs"))
    os.symlink("../" * 20 + hostro.lstrip("/"), sb.host("/srv/climb"))
    os.symlink("/", sb.host("/srv/top"))
    os.symlink("..", sb.host("/srv/dotdot"))
    os.symlink("../data/ro", sb.host("/srv/in"))
    row = only_row(check(sb, [sb.link("tool")],
                         extra_mount_checks=["/srv/abs", "/srv/climb", "/srv/top", "/srv/dotdot", "/srv/in"])[0])
    assert knobs(row) == ["extra_mount_checks"] and "extra_mount_checks path /srv/in" in row["stops"][0]["msg"]
    assert [m["path"] for m in row["extra_mounts"]] == ["/srv/top", "/srv/dotdot", "/srv/in"]
    assert [m["mountpoint"] for m in row["extra_mounts"]][2] == inro
    assert any(n.startswith("extra_mount_checks path /srv/abs skipped: ") and "inside root" in n for n in row["notes"])
    assert any(n.startswith("extra_mount_checks path /srv/climb skipped:") and "climbs above root" in n
               for n in row["notes"])


# -- hazards: setuid/setgid, capabilities, hard links ------------------------------------------

def _expect_level(row, level, knob):
    if level == "stop":
        assert knobs(row) == [knob]
        assert "policy.%s: warn or allow" % knob in row["stops"][0]["msg"]
    elif level == "warn":
        assert row["policy_ok"] is True and len(row["warnings"]) == 1
    else:
        assert row["policy_ok"] is True and row["warnings"] == [] and row["notes"]


@pytest.mark.parametrize("level", ["stop", "warn", "allow"])
def test_setuid_target(sb, level):
    link = sb.link("tool")
    os.chmod(link["target"], 0o4755)
    _expect_level(only_row(check(sb, [link], suid_sgid=level)[0]), level, "suid_sgid")


@pytest.mark.parametrize("level", ["stop", "warn", "allow"])
def test_capability_bearing_target(sb, level):
    require(SETCAP, "setcap (libcap2-bin)")
    link = sb.link("tool")
    subprocess.run([SETCAP, "cap_net_raw+ep", link["target"]], check=True)
    row = only_row(check(sb, [link], suid_sgid=level)[0])
    _expect_level(row, level, "suid_sgid")
    assert "security.capability" in (row["stops"] and row["stops"][0]["msg"] or (row["warnings"] + row["notes"])[0])


@pytest.mark.parametrize("level", ["stop", "warn", "allow"])
def test_hard_linked_target(sb, level):
    link = sb.link("tool")
    os.link(link["target"], sb.host("/usr/bin/tool-alias"))
    _expect_level(only_row(check(sb, [link], hardlinks=level)[0]), level, "hardlinks")


# -- source trust -------------------------------------------------------------------------------

def _untrusted_uid(sb):
    link = sb.link("tool")
    os.chown(link["source"], 1000, 1000)
    return link, "owned by uid 1000"


def _untrusted_mode(sb):
    link = sb.link("tool")
    os.chmod(link["source"], 0o777)
    return link, "group- or world-writable (mode 0777)"


def _untrusted_home(sb):
    return sb.link("tool", source="/home/alice/bin/tool"), "under home directory /home"


def _untrusted_parent(sb):
    link = sb.link("tool", source="/opt/shared/tool")
    os.chmod(os.path.dirname(link["source"]), 0o777)
    return link, "directory /opt/shared (inside root) is group- or world-writable without the sticky bit"


@pytest.mark.parametrize("make", [_untrusted_uid, _untrusted_mode, _untrusted_home, _untrusted_parent])
@pytest.mark.parametrize("level", ["require_trusted", "warn", "allow"])
def test_untrusted_source(sb, make, level):
    link, why = make(sb)
    row = only_row(check(sb, [link], source_trust=level)[0])
    assert row["source_trusted"] is False
    if level == "require_trusted":
        assert knobs(row) == ["source_trust"] and why in row["stops"][0]["msg"]
    elif level == "warn":
        assert row["policy_ok"] and len(row["warnings"]) == 1 and why in row["warnings"][0]
    else:
        assert row["policy_ok"] and row["warnings"] == [] and any(why in n for n in row["notes"])


def test_sticky_world_writable_directory_keeps_a_root_owned_source_trusted(sb):
    link = sb.link("tool", source="/opt/sticky/tool")
    os.chmod(os.path.dirname(link["source"]), 0o1777)
    assert only_row(check(sb, [link], source_trust="require_trusted")[0])["source_trusted"] is True


# -- ownership / provenance ---------------------------------------------------------------------

def test_dpkg_owned_file_on_this_machine_reports_its_package():
    require(DPKG_QUERY, "dpkg-query (dpkg)")
    require(DPKG_DIVERT, "dpkg-divert (dpkg)")
    assert os.path.isdir("/var/lib/dpkg/info"), "/var/lib/dpkg/info missing: this test needs a Debian host's dpkg database"
    root_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        aliases = _packages.merged_usr_aliases(root_fd)
    finally:
        os.close(root_fd)
    names = sorted(set(_packages.path_aliases("/usr/bin/ls", aliases) + _packages.path_aliases("/bin/ls", aliases)))
    db = _packages.package_owners("/", names + ["/bin/sh"])
    assert db.backend == "dpkg"
    assert db.lookup(names)[0] == "coreutils"
    row = grow.Row("00000000-0000-0000-0000-000000000000", "/usr/bin/ls", "link")
    gtarget.ownership_gate(row, Settings(policy={"ownership_strict": True}).policy, names, os.lstat("/usr/bin/ls"), db)
    assert row.data["provenance"]["pkg"] == "coreutils" and row.data["provenance"]["uid"] == 0
    assert row.data["stops"] == []
    if subprocess.run([DPKG_DIVERT, "--listpackage", "/bin/sh"], stdout=subprocess.PIPE, check=False).stdout.strip():
        assert db.lookup(["/bin/sh"])[1]["by"] == subprocess.run(
            [DPKG_DIVERT, "--listpackage", "/bin/sh"], stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout.strip()


def _dpkg_db(sb, files):
    """A minimal real dpkg database inside the sandbox: one installed package owning `files`."""
    admin = sb.host("/var/lib/dpkg")
    os.makedirs(os.path.join(admin, "info"))
    os.makedirs(os.path.join(admin, "updates"))
    with open(os.path.join(admin, "status"), "w") as f:
        f.write("Package: sandbox-utils\nStatus: install ok installed\nPriority: optional\nSection: utils\n"
                "Maintainer: Sandbox <sandbox@example.invalid>\nArchitecture: all\nVersion: 1.0\n"
                "Description: sandbox package\n\n")
    with open(os.path.join(admin, "info", "sandbox-utils.list"), "w") as f:
        f.write("/.\n/usr\n/usr/bin\n" + "".join(p + "\n" for p in files))
    return admin


def test_ownership_strict_stops_only_the_unowned_target_and_notes_diversions_and_alternatives(sb):
    require(DPKG_QUERY, "dpkg-query (dpkg)")
    require(DPKG_DIVERT, "dpkg-divert (dpkg)")
    admin = _dpkg_db(sb, ["/usr/bin/owned", "/usr/bin/diverted"])
    subprocess.run([DPKG_DIVERT, "--admindir", admin, "--package", "sandbox-utils", "--divert",
                    "/usr/bin/diverted.distrib", "--no-rename", "--add", "/usr/bin/diverted"],
                   check=True, stdout=subprocess.DEVNULL)
    os.makedirs(sb.host("/etc/alternatives"))
    sb.file("/usr/bin/awk-real")
    os.symlink("/usr/bin/awk-real", sb.host("/etc/alternatives/awk"))
    os.symlink("/etc/alternatives/awk", sb.host("/usr/bin/awk"))
    links = [sb.link("owned"), sb.link("diverted"), sb.link("unowned"), sb.link("awk")]
    rows, err, _w, _r = check(sb, links, fail_on_stop=True, ownership_strict=True)
    assert [p for (p, _op), r in rows.items() if r["stops"]] == ["/usr/bin/unowned"]
    assert rows["/usr/bin/unowned", "link"]["stops"][0]["error_id"] == "E_OWNERSHIP"
    assert err.error_id == "E_POLICY" and err.summary_error_ids == ["E_OWNERSHIP", "E_POLICY"]
    assert rows["/usr/bin/owned", "link"]["provenance"]["pkg"] == "sandbox-utils"
    div = rows["/usr/bin/diverted", "link"]
    assert div["provenance"]["diverted_by"] == "sandbox-utils"
    assert div["provenance"]["diverted_to"] == "/usr/bin/diverted.distrib"
    assert any("diverted by sandbox-utils" in n for n in div["notes"])
    awk = rows["/usr/bin/awk", "link"]
    assert awk["provenance"]["alternative"] == "awk" and any("update-alternatives" in n for n in awk["notes"])


def test_ownership_strict_without_a_package_database_stops_with_e_ownership(sb):
    row = only_row(check(sb, [sb.link("tool")], ownership_strict=True)[0])
    assert knobs(row) == ["ownership_strict"] and row["stops"][0]["error_id"] == "E_OWNERSHIP"


# -- rescue --------------------------------------------------------------------------------------

def _tools(sb, names, d="/usr/bin"):
    for n in names:
        sb.file("%s/%s" % (d, n))


SIX = ("cp", "mv", "rm", "ln", "stat", "ls")


def test_rescue_honours_the_module_path_mapped_inside_root(sb, monkeypatch):
    _tools(sb, SIX, "/usr/rescue")
    link = sb.link("tool")
    monkeypatch.setenv("PATH", "/usr/rescue")
    row = only_row(check(sb, [link], require_rescue=True)[0])
    assert row["rescue"]["ok"] is True and row["rescue"]["tools"] == sorted(SIX)
    assert row["rescue"]["path"] == ["/usr/rescue"]

    monkeypatch.setenv("PATH", "/usr/bin:/sbin")
    row = only_row(check(sb, [link], require_rescue=True)[0])
    assert knobs(row) == ["require_rescue"] and row["rescue"]["tools"] == []


def test_rescue_tools_replaced_by_the_plan_do_not_count_and_only_their_rows_stop(sb, monkeypatch):
    os.symlink("usr/bin", sb.host("/bin"))  # merged /usr: /bin/cp is /usr/bin/cp
    _tools(sb, SIX)
    monkeypatch.setenv("PATH", "/bin")
    links = [sb.link("cp"), sb.link("unrelated")]
    rows, _err, _w, _r = check(sb, links, require_rescue=True)
    cp, other = rows["/usr/bin/cp", "link"], rows["/usr/bin/unrelated", "link"]
    assert cp["rescue"]["replaced"] == {"cp": "/usr/bin/cp"} and "cp" not in cp["rescue"]["tools"]
    assert knobs(cp) == ["require_rescue"] and "takes rescue tool cp away" in cp["stops"][0]["msg"]
    assert other["policy_ok"] is True

    rows, _err, _w, _r = check(sb, links, require_rescue=True, rescue_min_count=5)
    assert all(r["policy_ok"] for r in rows.values())


def test_rescue_tools_are_found_only_inside_root_and_every_hop_is_checked(sb, monkeypatch, tmp_path):
    """A PATH entry or tool symlink that names a host path (absolute text is taken inside root) or climbs above root
    finds nothing; a chain inside root counts unless one of its hops is a target of the plan."""
    host = str(tmp_path / "hosttools")
    os.makedirs(host)
    for n in SIX:
        with open(os.path.join(host, n), "wb") as f:
            f.write(SCRIPT)
        os.chmod(os.path.join(host, n), 0o755)
    os.makedirs(sb.host("/usr/rescue"))
    os.symlink(host + "/cp", sb.host("/usr/rescue/cp"))
    os.symlink("../" * 20 + host.lstrip("/") + "/mv", sb.host("/usr/rescue/mv"))
    os.symlink(host, sb.host("/usr/esc"))
    sb.file("/opt/real/ls")
    os.symlink("../../opt/real/ls", sb.host("/usr/rescue/ls"))
    sb.file("/usr/bin/rm")
    os.symlink("/usr/bin/rm", sb.host("/usr/rescue/rm"))
    monkeypatch.setenv("PATH", "/usr/rescue:/usr/esc")
    row = only_row(check(sb, [sb.link("rm")], require_rescue=True)[0])
    assert row["rescue"]["tools"] == ["ls"] and row["rescue"]["replaced"] == {"rm": "/usr/bin/rm"}
    assert knobs(row) == ["require_rescue"] and "takes rescue tool rm away" in row["stops"][0]["msg"]


def test_busybox_alone_is_a_rescue_toolset(sb, monkeypatch):
    sb.file("/usr/bin/busybox")
    monkeypatch.setenv("PATH", "/usr/bin")
    row = only_row(check(sb, [sb.link("tool")], require_rescue=True)[0])
    assert row["rescue"]["ok"] is True and row["rescue"]["busybox"] == "/usr/bin/busybox"


def _install_busybox(sb):
    """Copy the host's busybox and the libraries ldd names into the sandbox so it runs under chroot."""
    sb.file("/usr/bin/busybox", open(BUSYBOX, "rb").read())
    out = subprocess.run(["ldd", BUSYBOX], stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout
    for lib in re.findall(r"(/\S+\.so[\S]*)", out):
        real = os.path.realpath(lib)
        for p in (lib, real):
            sb.file(p, open(real, "rb").read())


def test_rescue_exec_check_runs_each_tool_inside_root(sb, monkeypatch):
    require(BUSYBOX, "busybox")
    require(shutil.which("ldd"), "ldd (libc-bin)")
    _install_busybox(sb)
    os.makedirs(sb.host("/rescue"))
    for n in SIX:
        os.symlink("/usr/bin/busybox", sb.host("/rescue/" + n))  # busybox applets, found as cp, mv, ...
    sb.file("/broken/cp", b"\x00not an executable\x00")
    monkeypatch.setenv("PATH", "/rescue")
    link = sb.link("tool")
    row = only_row(check(sb, [link], require_rescue=True, rescue_exec_check=True)[0])
    assert row["rescue"]["ok"] is True and row["rescue"]["tools"] == sorted(SIX)

    monkeypatch.setenv("PATH", "/broken")
    row = only_row(check(sb, [link], require_rescue=True, rescue_exec_check=True)[0])
    assert row["rescue"]["not_executable"] == ["/broken/cp"] and knobs(row) == ["require_rescue"]


def _elf_interpreter(readelf, path):
    """PT_INTERP of an ELF executable (e.g. /lib64/ld-linux-x86-64.so.2), read with readelf."""
    out = subprocess.run([readelf, "-l", path], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    return re.search(r"Requesting program interpreter: (\S+)\]", out).group(1)


def test_rescue_says_why_tools_do_not_execute_in_a_root_without_libraries(sb, monkeypatch):
    """Real GNU binaries in a root that has no loader, then a loader but no libc: the STOP names what is
    missing and what to install or set, instead of a bare 'not executing'."""
    readelf = require(shutil.which("readelf"), "readelf (binutils)")
    for n in SIX:
        sb.file("/usr/rescue/" + n, open("/usr/bin/" + n, "rb").read())
    monkeypatch.setenv("PATH", "/usr/rescue")
    link = sb.link("tool")
    row = only_row(check(sb, [link], require_rescue=True, rescue_exec_check=True)[0])
    why = row["rescue"]["not_executable_why"]
    assert row["rescue"]["not_executable"] == sorted("/usr/rescue/" + n for n in SIX) == sorted(why)
    assert all("dynamic loader" in w and "missing inside root" in w for w in why.values()), why
    msg = row["stops"][0]["msg"]
    assert "/usr/rescue/cp: exec failed with ENOENT" in msg and "busybox-static" in msg and "libc6" in msg, msg
    assert "policy.rescue_exec_check: false" in msg

    loader = _elf_interpreter(readelf, "/usr/bin/cp")  # the loader alone: it starts, then lacks libc.so.6
    sb.file(loader, open(os.path.realpath(loader), "rb").read())
    row = only_row(check(sb, [link], require_rescue=True, rescue_exec_check=True)[0])
    why = row["rescue"]["not_executable_why"]
    assert all(w.startswith("exit 127") and "shared library" in w for w in why.values()), why
    assert "busybox-static" in row["stops"][0]["msg"]


# -- restore readiness, backups, preservation ---------------------------------------------------

def test_restore_readiness_needs_a_complete_backup_whose_hash_verifies(sb):
    link = sb.link("tool")
    rows, err, _w, _r = check(sb, restores=[link["target"]], fail_on_stop=True)
    row = rows["/usr/bin/tool", "restore"]
    assert row["restore_ready"] is False and row["stops"][0]["error_id"] == "E_BACKUP_MISSING"
    assert "E_BACKUP_MISSING" in err.summary_error_ids

    _rep, aerr, _w = apply(Settings(root=sb.root), [link])
    assert aerr is None
    row = check(sb, restores=[link["target"]])[0]["/usr/bin/tool", "restore"]
    assert row["restore_ready"] is True and row["policy_ok"] is True and row["planned_kind"] == "file"
    assert row["preservation"]["probed"] == ["the target directory"]

    payload = [n for n in os.listdir(sb.host("/usr/bin")) if n.endswith(".bak")]
    assert len(payload) == 1
    with open(sb.host("/usr/bin/" + payload[0]), "ab") as f:
        f.write(b"tampered")
    row = check(sb, restores=[link["target"]])[0]["/usr/bin/tool", "restore"]
    assert row["restore_ready"] is False and row["stops"][0]["error_id"] == "E_RESTORE_FAILED"


def test_restore_and_its_readiness_gate_choose_the_backup_the_same_way(sb):
    """One selection (backup.select_backup): with one complete backup, latest is ready and previous is missing,
    in the gate's row and in the restore's error alike."""
    link = sb.link("tool")
    _rep, aerr, _w = apply(Settings(root=sb.root), [link])
    assert aerr is None

    def restore_row(which):
        report, _err, _w = preflight(Settings(root=sb.root), restores=[link["target"]], which=which,
                                     fail_on_stop=False)
        assert validation_errors(report) == []
        return only_row(dict(((r["path"], r["op"]), r) for r in entries(report)))

    assert restore_row("latest")["restore_ready"] is True
    stem = "no complete previous backup of /usr/bin/tool (found 1 complete backup)"
    row = restore_row("previous")
    assert row["restore_ready"] is False and row["stops"][0]["error_id"] == "E_BACKUP_MISSING"
    assert row["stops"][0]["msg"].startswith(stem + "; nothing to restore from.")
    _rep, err, _w = restore(Settings(root=sb.root), targets=[link["target"]], which="previous")
    assert err.error_id == "E_BACKUP_MISSING" and stem + "; nothing to restore from." in err.msg
    # Past an overridden STOP the restore itself selects again, the same way.
    _rep, err, _w = restore(Settings(root=sb.root, policy={"override_preflight": True}), targets=[link["target"]],
                            which="previous")
    assert err.error_id == "E_BACKUP_MISSING" and err.msg == stem + "; nothing was changed"
    assert os.readlink(link["target"]) == "/opt/prov/bin/tool"  # nothing was changed


def test_backup_dir_is_probed_with_the_target_directory_and_another_mount_stops(sb, tmpfs):
    link = sb.link("tool")
    row = only_row(check(sb, [link], backup_dir="/var/backups/sw")[0])
    assert row["preservation"]["probed"] == ["the backup directory", "the target directory"]
    tmpfs(sb.host("/var/backups"))
    row = only_row(check(sb, [link], backup_dir="/var/backups/sw")[0])
    assert knobs(row) == ["allow_degraded_fs"] and row["stops"][0]["error_id"] == "E_EXDEV"
    assert only_row(check(sb, [link], backup_dir="/var/backups/sw", allow_degraded_fs=True)[0])["policy_ok"]


def test_require_preservation_names_the_target_directory_that_cannot_keep_the_tier(sb, tmpfs):
    d = tmpfs(sb.host("/usr/local/bin"))
    link = sb.link("tool")
    link["target"] = sb.file("/usr/local/bin/tool")
    tmpfs.remount(d, "ro")
    row = only_row(check(sb, [link], require_preservation=True)[0])
    pres_stop = [s for s in row["stops"] if s["knob"] == "require_preservation"]
    assert len(pres_stop) == 1 and "in the target directory" in pres_stop[0]["msg"]


# -- path policy, override, fail_on_stop, apply --------------------------------------------------

def test_forbid_paths_and_allow_roots(sb):
    link = sb.link("tool")
    assert knobs(only_row(check(sb, [link], forbid_paths=["/usr"])[0])) == ["forbid_paths"]
    assert knobs(only_row(check(sb, [link], allow_roots=["/opt"])[0])) == ["allow_roots"]
    assert only_row(check(sb, [link], allow_roots=["/usr/bin"])[0])["policy_ok"]


def test_forbid_paths_sees_through_an_in_root_symlinked_directory(sb):
    os.symlink("usr/bin", sb.host("/bin"))
    link = sb.link("tool")
    link["target"] = sb.host("/bin/tool")
    row = only_row(check(sb, [link], forbid_paths=["/usr/bin"])[0])
    assert knobs(row) == ["forbid_paths"] and "really /usr/bin/tool" in row["stops"][0]["msg"]


def test_override_preflight_turns_stops_into_warnings_and_fail_on_stop_decides_the_error(sb, chattr):
    link = sb.link("tool")
    chattr("i", link["target"])
    _rows, err, _w, _r = check(sb, [link], fail_on_stop=True)
    assert err is not None and err.error_id == "E_POLICY" and "/usr/bin/tool" in err.msg
    assert check(sb, [link], fail_on_stop=False)[1] is None
    rows, err, warnings, report = check(sb, [link], fail_on_stop=True, override_preflight=True)
    row = only_row(rows)
    assert err is None and row["overridden"] is True and row["policy_ok"] is False
    assert any(w.startswith("/usr/bin/tool: overridden STOP") for w in warnings)
    assert report["summary"]["stops"] == 0


def test_apply_re_runs_the_gates_under_the_lock(sb, chattr):
    link = sb.link("tool")
    before = open(link["target"], "rb").read()
    assert check(sb, [link])[1] is None and only_row(check(sb, [link])[0])["policy_ok"]
    chattr("i", link["target"])  # changes after a clean preflight
    report, err, _w = apply(Settings(root=sb.root), [link])
    assert err is not None and err.error_id == "E_POLICY" and "/usr/bin/tool is immutable" in err.msg
    assert validation_errors(report) == []
    assert [r["path"] for r in entries(report) if r["stops"]] == ["/usr/bin/tool"]
    assert not os.path.islink(link["target"]) and open(link["target"], "rb").read() == before
    assert stat.S_ISREG(os.lstat(link["target"]).st_mode)


def test_already_swapped_target_needs_no_writable_mount(sb, tmpfs):
    d = tmpfs(sb.host("/usr/local/bin"))
    link = sb.link("tool")
    target = os.path.join(d, "tool")
    os.symlink("/opt/prov/bin/tool", target)
    link["target"] = target
    tmpfs.remount(d, "ro")
    row = only_row(check(sb, [link])[0])
    assert row["noop"] is True and row["policy_ok"] is True


# -- docs ----------------------------------------------------------------------------------------

def test_docs_name_every_knob_a_stop_can_name():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(here))))
    # Every gate, and the probes whose messages a row carries (extra_mount_checks, PATH, package databases).
    gates = os.path.dirname(os.path.abspath(grow.__file__))
    probes = os.path.join(os.path.dirname(gates), "_probes")
    files = [os.path.join(gates, f) for f in sorted(os.listdir(gates)) if f.endswith(".py")]
    files += [os.path.join(probes, f) for f in ("mounts.py", "packages.py", "rescue.py")]
    src = "".join(open(f).read() for f in files)
    named = set(re.findall(r"policy\.([a-z_]+)", src)) & set(KNOBS)
    assert {"override_preflight", "suid_sgid", "hardlinks", "source_trust", "require_rescue"} <= named
    docs = open(os.path.join(repo, "docs", "preflight.md")).read()
    assert sorted(k for k in named if "policy.%s" % k not in docs) == []
