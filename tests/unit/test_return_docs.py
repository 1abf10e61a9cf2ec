# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each module's RETURN is true to schemas/report.schema.json at every depth, and to the fact-key table.

RETURN is written by hand (ansible-core has no RETURN doc fragments) and kept short: the report's envelope,
summary and the module's own entry keys with ``contains``, deeper structures briefly with a sample, and the facts
guide for the rest. What keeps it true is this test, which reads RETURN from the module source (no import):

- the report is documented under the fact key _facts.FACT_KEY gives the module's stage;
- every documented key, at every depth of ``contains``, is a property of the schema at that place, with a
  compatible type; ``summary``, the entry list, ``plan``, ``smoke`` and ``events`` are documented with
  ``contains``;
- every documented sample validates against the schema of its field, and the report's sample validates against
  the whole schema (the one the action plugin enforces);
- every field that has no ``contains`` has a sample;
- the task-level keys (``error_id``, ``exit_code``, ...) agree with the error table.
"""

from __future__ import absolute_import, division, print_function

import ast
import json
import os

import jsonschema
import pytest
import yaml

from ansible_collections.switchyard.fs.plugins.module_utils._errors import ERROR_TABLE
from ansible_collections.switchyard.fs.plugins.module_utils._facts import FACT_KEY, MODULE, STAGES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA = os.path.join(REPO, "schemas", "report.schema.json")
ENTRY_LIST = {"preflight": "rows", "apply": "actions", "restore": "results", "prune": "results"}
WITH_CONTAINS = ("summary", "plan", "smoke", "events")
# RETURN type -> the JSON types it may stand for (a documented field may be null where the schema allows it).
JSON_TYPES = {"bool": {"boolean"}, "int": {"integer"}, "float": {"number", "integer"}, "str": {"string"},
              "list": {"array"}, "dict": {"object"}, "raw": None}


def _doc_string(stage, name):
    path = os.path.join(REPO, "plugins", "modules", MODULE[stage].rsplit(".", 1)[1] + ".py")
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError("%s has no %s" % (path, name))


def _return(stage):
    return yaml.safe_load(_doc_string(stage, "RETURN"))


@pytest.fixture(scope="module")
def schema():
    with open(SCHEMA) as f:
        return json.load(f)


def _deref(schema, node):
    while "$ref" in node:
        target = schema
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = dict(target, **dict((k, v) for k, v in node.items() if k != "$ref"))
    return node


def _json_types(schema, node):
    """The JSON types a schema node admits (None: unknown, anything goes)."""
    node = _deref(schema, node)
    if "const" in node:
        return {_json_type(node["const"])}
    if "enum" in node:
        return set(_json_type(v) for v in node["enum"])
    for key in ("oneOf", "anyOf"):
        if key in node:
            found = set()
            for alt in node[key]:
                types = _json_types(schema, alt)
                if types is None:
                    return None
                found |= types
            return found
    kind = node.get("type")
    if kind is None:
        return None
    return set(kind) if isinstance(kind, list) else {kind}


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _object_of(schema, node):
    """The object schema whose properties a documented ``contains`` lists (list items, or the node itself)."""
    node = _deref(schema, node)
    if "items" in node:
        node = _deref(schema, node["items"])
    return node


def _check_field(schema, path, doc, node):
    """One documented field against its schema node; returns a list of problems."""
    problems = []
    node = _deref(schema, node)
    allowed = JSON_TYPES[doc["type"]]
    admitted = _json_types(schema, node)
    if allowed is not None and admitted is not None and not (allowed & admitted):
        problems.append("%s: documented as %s, schema admits %s" % (path, doc["type"], sorted(admitted)))
    if "sample" in doc:
        validator = jsonschema.Draft202012Validator(dict(node, **{"$defs": schema["$defs"]}))
        problems.extend("%s: sample %r: %s" % (path, doc["sample"], e.message)
                        for e in validator.iter_errors(doc["sample"]))
    elif "contains" not in doc:
        problems.append("%s: a field without contains needs a sample" % path)
    if "contains" in doc:
        obj = _object_of(schema, node)
        props = obj.get("properties", {})
        for key, sub in doc["contains"].items():
            if key not in props:
                problems.append("%s.%s: not in the schema" % (path, key))
            else:
                problems.extend(_check_field(schema, "%s.%s" % (path, key), sub, props[key]))
    return problems


@pytest.mark.parametrize("stage", STAGES)
def test_report_is_documented_under_the_fact_key_of_the_table(stage):
    facts = _return(stage)["ansible_facts"]["contains"]
    assert list(facts) == [FACT_KEY[stage]]


@pytest.mark.parametrize("stage", STAGES)
def test_every_documented_report_field_at_every_depth_is_in_the_schema_and_its_sample_validates(schema, stage):
    report = _return(stage)["ansible_facts"]["contains"][FACT_KEY[stage]]
    for required in schema["required"]:
        assert required in report["contains"], required
    for name in WITH_CONTAINS + (ENTRY_LIST[stage],):
        if name in report["contains"] or name == ENTRY_LIST[stage]:
            assert "contains" in report["contains"][name], "%s: document its keys with contains" % name
    assert _check_field(schema, FACT_KEY[stage], report, schema) == []


@pytest.mark.parametrize("stage", STAGES)
def test_report_sample_is_a_report_of_the_stage(schema, stage):
    sample = _return(stage)["ansible_facts"]["contains"][FACT_KEY[stage]]["sample"]
    jsonschema.Draft202012Validator(schema).validate(sample)
    assert sample["stage"] == stage
    assert ENTRY_LIST[stage] in sample


@pytest.mark.parametrize("stage", STAGES)
def test_task_level_keys_agree_with_the_error_table(stage):
    ret = _return(stage)
    assert ret["error_id"]["sample"] in ERROR_TABLE
    assert ret["exit_code"]["sample"] == ERROR_TABLE[ret["error_id"]["sample"]][0]
    for eid in ERROR_TABLE:
        assert eid in ret["error_id"]["description"], eid
    for name, entry in ret.items():
        assert "sample" in entry or name == "ansible_facts", name


def test_task_level_keys_are_documented_alike_in_every_module():
    """The keys every module returns beside its report say the same thing everywhere (samples may differ)."""
    shared = ("changed", "msg", "error_id", "exit_code", "summary_error_ids", "rolled_back", "rolled_back_paths")
    docs = dict((stage, _return(stage)) for stage in STAGES)
    for key in shared:
        seen = set(json.dumps(dict((k, v) for k, v in docs[s][key].items() if k != "sample"), sort_keys=True)
                   for s in STAGES)
        assert len(seen) == 1, (key, seen)
