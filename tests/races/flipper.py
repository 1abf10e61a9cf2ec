"""Flip a directory inside root between itself and symlinks out of root, in a tight loop.

    python flipper.py <parent dir> <name> <seed> <evil name>...

Each evil name (in the same parent) is a symlink pointing out of root.  The loop exchanges <name>
with each evil name in turn and back (renameat2 RENAME_EXCHANGE: atomic, the name always exists),
spinning a random few iterations in each state so every window of the engine gets hit.  Prints
"ready" after the first exchange; on SIGUSR1 it finishes the current pair (the real directory is at
<name> again), prints the number of exchanges and exits 0.
"""
import ctypes
import os
import random
import signal
import sys

RENAME_EXCHANGE = 2

libc = ctypes.CDLL(None, use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]


def main():
    parent, name, seed, evils = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), [e.encode() for e in sys.argv[4:]]
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    rng = random.Random(seed)
    stop = []
    signal.signal(signal.SIGUSR1, lambda *_a: stop.append(1))
    exchange = libc.renameat2

    def swap(evil):
        if exchange(pfd, name, pfd, evil, RENAME_EXCHANGE) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "renameat2(RENAME_EXCHANGE) %s <-> %s: %s" % (name, evil, os.strerror(err)))

    flips = 0
    first = True
    while not stop:
        for evil in evils:
            swap(evil)  # now <name> is the symlink out of root
            flips += 1
            if first:
                sys.stdout.write("ready\n")
                sys.stdout.flush()
                first = False
            for _spin in range(rng.randrange(8)):
                pass
            swap(evil)  # the real directory is back
            flips += 1
            for _spin in range(rng.randrange(24)):
                pass
    sys.stdout.write("%d\n" % flips)


if __name__ == "__main__":
    main()
