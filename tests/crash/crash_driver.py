"""One engine call in its own process, so a test can SIGKILL it for real.

    python crash_driver.py '{"op": "apply", "root": ..., "links": [...], "policy": {...}}'

Prints one JSON line: {"error_id", "msg", "raised", "report", "fsyncs"}.  The test-only fault
variables (SWITCHYARD_TEST_KILL_AT, SWITCHYARD_TEST_FAIL_FSYNC) come from the environment.
"""
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))

from ansible_collections.switchyard.fs.plugins.module_utils import engine  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._fs import durable as _fsdurable  # noqa: E402


def main():
    req = json.loads(sys.argv[1])
    fsyncs = [0]
    real_fsync = _fsdurable.Durability.fsync

    def counting_fsync(self, fd, what):
        fsyncs[0] += 1
        return real_fsync(self, fd, what)
    _fsdurable.Durability.fsync = counting_fsync

    s = engine.Settings(root=req["root"], policy=req.get("policy") or {}, state_dir=req.get("state_dir"),
                        lock_timeout=req.get("lock_timeout", 5.0), check_mode=req.get("check_mode", False))
    op = req["op"]
    out = {"raised": False, "error_id": None, "msg": None, "report": None}
    try:
        if op == "apply":
            rep, err, _w = engine.apply(s, req["links"], req.get("smoke"))
        elif op == "restore":
            rep, err, _w = engine.restore(s, targets=req.get("targets"), plan_id=req.get("plan_id"),
                                          which=req.get("which", "latest"))
        elif op == "prune":
            rep, err, _w = engine.prune(s, req["targets"], retention_count=req.get("retention_count", 1000))
        elif op == "preflight":
            rep, err, _w = engine.preflight(s, links=req["links"], fail_on_stop=False)
        else:
            raise SystemExit("unknown op %r" % op)
        out["report"] = rep
        if err is not None:
            out.update(error_id=err.error_id, msg=err.msg)
    except engine.SwitchyardError as e:
        out.update(raised=True, error_id=e.error_id, msg=e.msg)
    out["fsyncs"] = fsyncs[0]
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
