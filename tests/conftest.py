"""Make the checkout importable as ansible_collections.switchyard.fs and share fixtures."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A stable collections root under the checkout: <repo>/.build/collections/ansible_collections/switchyard/fs -> <repo>
COLLECTIONS_ROOT = os.path.join(REPO, ".build", "collections")
_LINK = os.path.join(COLLECTIONS_ROOT, "ansible_collections", "switchyard", "fs")


def _ensure_link():
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
    init_plugin_loader([COLLECTIONS_ROOT])


_install_collection_finder()
