"""Sandbox roots for tests: a few real or synthetic files in usr/bin and a provider in opt/prov/bin."""
import hashlib
import os
import shutil
import stat
import subprocess


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Sandbox(object):
    def __init__(self, root):
        self.root = str(root)

    def p(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def link(self, name, provider="/opt/prov/bin"):
        return {"source": self.p("%s/%s" % (provider, name)), "target": self.p("/usr/bin/" + name)}

    def snapshot(self, rels):
        """{rel: (kind, sha256 or link text, mode, uid, gid)} of each entry, for exact before/after comparison."""
        out = {}
        for rel in rels:
            path = self.p(rel)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                out[rel] = ("absent",)
                continue
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(path))
            else:
                out[rel] = ("file", sha256(path), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_ino)
        return out

    def backups(self, name, tag="switchyard", directory="/usr/bin"):
        d = self.p(directory)
        return sorted(e for e in os.listdir(d) if e.startswith(".%s.%s." % (name, tag)) and e.endswith(".bak"))

    def cleanup_flags(self):
        subprocess.run(["chattr", "-R", "-i", "-a", self.root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def make_sandbox(tmp_path, tools=("ls", "cat", "echo"), synthetic=0, provider="busybox"):
    """Real tools copied from this machine into usr/bin and busybox (named per applet) as the provider;
    plus `synthetic` files f000.. with distinct bytes and matching sources."""
    sb = Sandbox(os.path.join(str(tmp_path), "root"))
    for d in ("usr/bin", "opt/prov/bin", "var/lib", "run/lock", "usr/sbin", "bin"):
        os.makedirs(sb.p(d), exist_ok=True)
    bb = shutil.which("busybox") or "/bin/busybox"
    for t in tools:
        real = shutil.which(t, path="/usr/bin:/bin")
        shutil.copy2(real, sb.p("/usr/bin/" + t))
        if provider == "busybox":
            shutil.copy2(bb, sb.p("/opt/prov/bin/" + t))
    for i in range(synthetic):
        name = "f%03d" % i
        with open(sb.p("/usr/bin/" + name), "wb") as f:
            f.write(("#!/bin/sh\n# original %s %s\n" % (name, os.urandom(8).hex())).encode() * 3)
        os.chmod(sb.p("/usr/bin/" + name), 0o755)
        with open(sb.p("/opt/prov/bin/" + name), "wb") as f:
            f.write(("#!/bin/sh\n# provider %s\n" % name).encode())
        os.chmod(sb.p("/opt/prov/bin/" + name), 0o755)
    return sb
