# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Extended attribute back ends on open fds: the standard library or pyxattr, one interface. Private to this collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os


class XattrBackend:
    """One interface over the fd-based xattr calls; names are always ``str``, values ``bytes``.

    Errors are ``OSError`` with the kernel's errno, whichever implementation runs.
    """

    name = None

    def list(self, fd):
        raise NotImplementedError

    def get(self, fd, name):
        raise NotImplementedError

    def set(self, fd, name, value):
        raise NotImplementedError

    def remove(self, fd, name):
        raise NotImplementedError


class OsXattrBackend(XattrBackend):
    """The standard library calls (Linux): os.listxattr and friends accept an fd."""

    name = "os"

    def list(self, fd):
        return sorted(os.listxattr(fd))

    def get(self, fd, name):
        return os.getxattr(fd, name)

    def set(self, fd, name, value):
        os.setxattr(fd, name, value)

    def remove(self, fd, name):
        os.removexattr(fd, name)


def _import_pyxattr():
    """The pyxattr module, or None; a different package also installs as ``xattr``."""
    try:
        import xattr
    except ImportError:
        return None
    if all(callable(getattr(xattr, attr, None)) for attr in ("list", "get", "set", "remove")):
        return xattr
    return None


class PyxattrBackend(XattrBackend):
    """pyxattr (``import xattr``); it returns names as bytes, normalised here to str."""

    name = "pyxattr"

    def __init__(self):
        self._mod = _import_pyxattr()
        if self._mod is None:
            raise ValueError("xattr backend 'pyxattr' requested but the pyxattr module is not importable")

    def list(self, fd):
        return sorted(os.fsdecode(n) for n in self._mod.list(fd))

    def get(self, fd, name):
        return self._mod.get(fd, os.fsencode(name))

    def set(self, fd, name, value):
        self._mod.set(fd, os.fsencode(name), value)

    def remove(self, fd, name):
        self._mod.remove(fd, os.fsencode(name))


def default_backend():
    """pyxattr when importable, else the standard library."""
    if _import_pyxattr() is not None:
        return PyxattrBackend()
    return OsXattrBackend()


def get_backend(backend=None):
    """None -> default_backend(); "os" / "pyxattr" force one; an XattrBackend is used as is."""
    if backend is None:
        return default_backend()
    if isinstance(backend, XattrBackend):
        return backend
    if backend == "os":
        return OsXattrBackend()
    if backend == "pyxattr":
        return PyxattrBackend()
    raise ValueError("unknown xattr backend %r (expected 'os' or 'pyxattr')" % (backend,))
