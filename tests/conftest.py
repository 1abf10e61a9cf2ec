"""Make the checkout importable as ansible_collections.switchyard.fs and share fixtures."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A checkout that already sits at .../ansible_collections/switchyard/fs (ansible-test's staged copy, an
# installed collection) is used where it is; any other checkout gets a stable collections root under
# itself: <repo>/.build/collections/ansible_collections/switchyard/fs -> <repo>
IN_PLACE = REPO.split(os.sep)[-3:] == ["ansible_collections", "switchyard", "fs"]
COLLECTIONS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(REPO))) if IN_PLACE else os.path.join(REPO, ".build", "collections")
_LINK = os.path.join(COLLECTIONS_ROOT, "ansible_collections", "switchyard", "fs")


def _ensure_link():
    if IN_PLACE:
        return
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    if os.path.islink(_LINK) and os.readlink(_LINK) == REPO:
        return
    tmp = _LINK + ".%d" % os.getpid()
    os.symlink(REPO, tmp)
    os.replace(tmp, _LINK)


_ensure_link()
if COLLECTIONS_ROOT not in sys.path:
    sys.path.insert(0, COLLECTIONS_ROOT)
os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS_ROOT


def _install_collection_finder():
    """Every test imports ansible_collections.* through Ansible's own collection loader, installed once
    before the first such import: a test that initialises the plugin loader later (callback tests do)
    would otherwise switch loaders halfway and break every import after it."""
    try:
        from ansible.plugins.loader import init_plugin_loader
    except ImportError:  # scripts run by a Python without ansible-core (e.g. a bench under another interpreter)
        return
    from ansible.utils.collection_loader import AnsibleCollectionConfig  # pylint: disable=import-outside-toplevel
    if AnsibleCollectionConfig.collection_finder is not None:  # ansible-test units installed its own finder
        return
    init_plugin_loader([COLLECTIONS_ROOT])


_install_collection_finder()


def pytest_configure(config):
    """Under ansible-test units, each pytest session gets a base temp of its own: ansible-test runs its test
    groups side by side, and sessions sharing /tmp/pytest-of-<user> picked the same numbered directory
    (FileExistsError on popen-gw0).  xdist workers inherit the controller's."""
    if (os.environ.get("ANSIBLE_TEST_CONTENT_ROOT") and not config.option.basetemp
            and not hasattr(config, "workerinput")):
        import tempfile
        config.option.basetemp = tempfile.mkdtemp(prefix="switchyard-units-")
