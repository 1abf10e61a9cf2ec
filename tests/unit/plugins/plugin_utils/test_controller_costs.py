"""Issue 14, fixed cost per task: what the controller and the module's exit path no longer do every time.

- The report schema is checked against its metaschema here, once, instead of in every task's worker process.
- The module's `invocation` echo gives `links` as a count only when the report lists every link itself; any link
  the report does not list (or cannot be matched by text) keeps Ansible's full echo."""
import copy
import json
import os
import sys
import types

import jsonschema
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from sandbox import make_sandbox  # noqa: E402

from ansible_collections.switchyard.fs.plugins.module_utils import _module  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils.engine import Settings, apply, preflight  # noqa: E402
from ansible_collections.switchyard.fs.plugins.plugin_utils import _reports  # noqa: E402


def test_the_shipped_schema_is_valid_against_its_metaschema():
    schema = _reports.load_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    broken = copy.deepcopy(schema)
    broken["properties"]["schema_version"] = {"type": "no-such-type"}
    with pytest.raises(jsonschema.SchemaError):
        cls.check_schema(broken)


def test_the_validator_is_built_once_per_process_and_still_rejects_a_bad_report(tmp_path):
    sb = make_sandbox(tmp_path, tools=("ls", "cat"))
    rep, err, _w = apply(Settings(root=sb.root), [sb.link("ls"), sb.link("cat")])
    assert err is None and _reports.validation_errors(rep) == []
    assert _reports._validator() is _reports._validator()
    bad = copy.deepcopy(rep)
    bad["actions"][0]["result"] = "maybe"
    assert any(e.startswith("actions/0/result") for e in _reports.validation_errors(bad))


def _module_with(params):
    return types.SimpleNamespace(params=params)


def _params(sb, links):
    return {"root": sb.root, "links": links, "preset": "default", "policy": {}, "smoke": None}


@pytest.mark.parametrize("stage", ["apply", "preflight"])
def test_invocation_gives_links_as_a_count_when_the_report_lists_every_link(tmp_path, stage):
    sb = make_sandbox(tmp_path, tools=(), synthetic=5)
    links = [sb.link("f%03d" % i) for i in range(5)]
    rep, err, _w = (apply if stage == "apply" else preflight)(Settings(root=sb.root), links)
    assert err is None
    params = _params(sb, links)
    inv = _module._invocation(_module_with(params), rep)
    assert inv["module_args"]["links"] == "5 link(s), each an entry of ansible_facts.switchyard_%s " \
                                          "(path and source inside root)" % stage
    assert dict(inv["module_args"], links=links) == params  # every other argument echoed as given
    assert params["links"] is links  # the module's own params are not changed
    # Every link really is in the report: root + path is the target, root + source the source.
    listed = [(sb.root.rstrip("/") + e["path"], sb.root.rstrip("/") + e["source"]) for e in _reports.entries(rep)]
    assert sorted(listed) == sorted((link["target"], link["source"]) for link in links)
    assert len(json.dumps(inv)) < 400


def test_invocation_keeps_the_full_echo_when_the_report_misses_a_link_or_a_path_is_not_plain(tmp_path):
    sb = make_sandbox(tmp_path, tools=(), synthetic=3)
    links = [sb.link("f%03d" % i) for i in range(3)]
    rep, err, _w = apply(Settings(root=sb.root), links)
    assert err is None
    # A report that lists one link fewer than the task gave (an entry lost): the echo stays whole.
    short = copy.deepcopy(rep)
    del short["actions"][1]
    assert _module._invocation(_module_with(_params(sb, links)), short) is None
    # A target written with a doubled slash names the same file, but the text does not match the report.
    odd = [dict(links[0], target=links[0]["target"].replace("/usr/bin/", "/usr//bin/"))] + links[1:]
    assert _module._invocation(_module_with(_params(sb, odd)), rep) is None
    # Another root's report: nothing matches.
    other = dict(rep, root=sb.root + "-other")
    assert _module._invocation(_module_with(_params(sb, links)), other) is None
    # Modules without links (restore, prune) keep Ansible's echo.
    assert _module._invocation(_module_with({"root": sb.root, "targets": ["/usr/bin/x"]}), rep) is None
