"""SafePath: normalisation (property-based) and resolution beneath root on a real filesystem."""
import os

import pytest
from hypothesis import given, strategies as st

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._fs.safepath import (
    relative_to_root, resolve_beneath, follow_beneath, open_root, host_path_beneath)

ROOT = "/srv/img"
segment = st.text(alphabet="abcxyz019_-.", min_size=1, max_size=8)


@given(st.lists(segment, min_size=1, max_size=6))
def test_normalised_inner_path_round_trips(parts):
    path = ROOT + "/" + "/".join(parts)
    if any(p in (".", "..") for p in parts):
        with pytest.raises(PolicyError, match=r"'\.' or '\.\.'"):
            relative_to_root(ROOT, path)
    else:
        rel = relative_to_root(ROOT, path)
        assert rel == "/" + "/".join(parts)
        assert relative_to_root(ROOT, ROOT + rel) == rel


@given(st.lists(segment.filter(lambda s: s not in (".", "..")), min_size=1, max_size=5), st.integers(1, 3))
def test_redundant_slashes_do_not_change_the_result(parts, n):
    sep = "/" * n
    assert relative_to_root(ROOT, ROOT + sep + sep.join(parts)) == "/" + "/".join(parts)


@given(st.text(min_size=1, max_size=20).filter(lambda s: not s.startswith("/")))
def test_relative_paths_are_rejected_naming_the_input(path):
    with pytest.raises(PolicyError) as e:
        relative_to_root(ROOT, path, "links[0].target")
    assert "links[0].target" in e.value.msg


@pytest.mark.parametrize("path", ["/srv/imgX/usr/bin/ls", "/srv/usr/bin/ls", "/usr/bin/ls", "/srv/img"])
def test_outside_root_or_root_itself_is_rejected(path):
    with pytest.raises(PolicyError):
        relative_to_root(ROOT, path)


def _tree(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/ls").write_text("ls")
    os.symlink("usr/bin", str(root / "bin"))              # merged-/usr, relative
    os.symlink("/usr/bin", str(root / "abin"))            # absolute: taken relative to root
    os.symlink("../../..", str(root / "usr/bin/up"))      # climbs above root
    (tmp_path / "outside").mkdir()
    os.symlink(str(tmp_path / "outside"), str(root / "escape"))  # absolute host path: not inside root's view
    os.symlink("ls", str(root / "usr/bin/ls2"))
    return str(root)


def test_merged_usr_intermediate_symlink_is_followed_inside_root(tmp_path):
    root = _tree(tmp_path)
    for p in ("/bin/ls", "/abin/ls"):
        r = resolve_beneath(root, root + p)
        try:
            assert r.parent_rel == "/usr/bin" and r.name == "ls" and r.kind() == "file"
        finally:
            r.close()


def test_symlink_climbing_above_root_is_refused(tmp_path):
    root = _tree(tmp_path)
    with pytest.raises(PolicyError, match="above root"):
        resolve_beneath(root, root + "/usr/bin/up/x")


def test_absolute_symlink_is_confined_to_root(tmp_path):
    root = _tree(tmp_path)
    # /escape -> <tmp>/outside is read as <root><tmp>/outside, which does not exist: never the host directory.
    with pytest.raises(PolicyError, match="does not exist inside root"):
        resolve_beneath(root, root + "/escape/file")


def test_final_component_is_never_followed(tmp_path):
    root = _tree(tmp_path)
    r = resolve_beneath(root, root + "/usr/bin/ls2")
    try:
        assert r.kind() == "symlink"
    finally:
        r.close()


def test_follow_beneath_resolves_final_symlinks_inside_root(tmp_path):
    root = _tree(tmp_path)
    rfd = open_root(root)
    try:
        fd, parent, name = follow_beneath(rfd, "/bin/ls2")
        os.close(fd)
        assert (parent, name) == ("/usr/bin", "ls")
        assert host_path_beneath(root, rfd, "/bin/ls2") == os.path.join(root, "usr/bin/ls")
        assert host_path_beneath(root, rfd, "/usr/bin/nope") is None
    finally:
        os.close(rfd)


def test_parent_replaced_by_symlink_after_resolution_does_not_redirect(tmp_path):
    """The handle pins the directory: swapping the path for a symlink afterwards changes nothing we touch."""
    root = _tree(tmp_path)
    r = resolve_beneath(root, root + "/usr/bin/ls")
    try:
        os.rename(os.path.join(root, "usr/bin"), os.path.join(root, "usr/bin.moved"))
        os.symlink(str(tmp_path / "outside"), os.path.join(root, "usr/bin"))
        assert r.kind() == "file"
        assert os.listdir(r.parent_fd) and "ls" in os.listdir(r.parent_fd)
        assert os.listdir(str(tmp_path / "outside")) == []
    finally:
        r.close()


def test_a_walk_through_dotdot_leaks_no_descriptor(tmp_path):
    """Each '..' a symlink's text walks up used to leave the popped directory's fd open: thousands of race
    cycles through a '../..' link exhausted the process's descriptors (EMFILE in later runs)."""
    root = _tree(tmp_path)
    os.symlink("../bin", os.path.join(root, "usr", "bin", "sibling"))
    fds = len(os.listdir("/proc/self/fd"))
    for _round in range(200):
        r = resolve_beneath(root, root + "/usr/bin/sibling/x")
        r.close()
        with pytest.raises(PolicyError):
            resolve_beneath(root, root + "/usr/bin/up/x")
    assert len(os.listdir("/proc/self/fd")) == fds
