# -*- coding: utf-8 -*-
# Copyright: switchyard.fs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docs and option docs agree with the one place each fact lives: KNOBS/PRESETS, ERROR_TABLE, the schema.

The generated parts of docs/facts.md and docs/presets.md (between the GENERATED markers) are
rewritten with:  .venv/bin/python tests/unit/test_docs.py --write
"""

from __future__ import absolute_import, division, print_function

import json
import os
import re
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
    sys.path.insert(0, os.path.join(REPO, ".build", "collections"))

from ansible_collections.switchyard.fs.plugins.doc_fragments.common import ModuleDocFragment  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._errors import ERROR_TABLE  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._facts import FACT_KEY, MODULE, STAGES  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._module import POLICY_OPTIONS  # noqa: E402
from ansible_collections.switchyard.fs.plugins.module_utils._policy import DEFAULTS, KNOBS, PRESETS  # noqa: E402

DOCS = os.path.join(REPO, "docs")
SCHEMA = os.path.join(REPO, "schemas", "report.schema.json")
BEGIN, END = "<!-- BEGIN GENERATED", "<!-- END GENERATED -->"
PRESET_ORDER = ("default", "production", "coreutils_switch")


def _read(name):
    with open(os.path.join(DOCS, name)) as f:
        return f.read()


def _generated_part(text):
    start = text.index(BEGIN)
    start = text.index("\n", start) + 1
    return text[start:text.index(END)]


def _replace_generated(name, body):
    text = _read(name)
    start = text.index("\n", text.index(BEGIN)) + 1
    with open(os.path.join(DOCS, name), "w") as f:
        f.write(text[:start] + body + text[text.index(END):])


def _table_rows(text, first_header):
    """Cells of the markdown table whose first header cell is `first_header`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError("no table headed %r" % first_header)


# -- doc fragment <-> KNOBS -----------------------------------------------------------------------

def _fragment_policy():
    doc = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)
    return doc["options"]["policy"]["suboptions"]


def test_doc_fragment_policy_suboptions_are_exactly_the_knobs():
    assert sorted(_fragment_policy()) == sorted(KNOBS)


def test_doc_fragment_policy_types_and_choices_match_the_knobs():
    documented = _fragment_policy()
    for name, spec in POLICY_OPTIONS.items():
        doc = documented[name]
        assert doc["type"] == spec["type"], name
        assert doc.get("elements") == spec.get("elements"), name
        assert doc.get("choices") == spec.get("choices"), name


def test_doc_fragment_policy_descriptions_and_defaults_match_the_knobs():
    for name, doc in _fragment_policy().items():
        default, _allowed, desc = KNOBS[name]
        lines = doc["description"] if isinstance(doc["description"], list) else [doc["description"]]
        assert lines[0].replace(" - ", ": ") == desc.replace(" - ", ": "), name
        if default is not None:
            assert "Default V(%s)" % _v(default) in " ".join(lines), name


def _v(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[%s]" % ", ".join(value)
    return str(value)


# -- docs/errors.md <-> ERROR_TABLE ---------------------------------------------------------------

def test_errors_doc_table_is_exactly_the_error_table():
    rows = _table_rows(_read("errors.md"), "error_id")
    documented = [(r[0].strip("`"), int(r[1]), r[2]) for r in rows]
    expected = [(eid, code, when) for eid, (code, when) in ERROR_TABLE.items()]
    assert documented == expected


def test_every_error_id_has_a_section_in_errors_doc():
    text = _read("errors.md")
    for eid in ERROR_TABLE:
        assert re.search(r"^### `?%s`?" % eid, text, re.M), eid


# -- docs/presets.md <-> PRESETS/KNOBS ------------------------------------------------------------

def presets_table():
    lines = ["| knob | %s | meaning |" % " | ".join("`%s`" % p for p in PRESET_ORDER),
             "|---|%s---|" % ("---|" * len(PRESET_ORDER))]
    for name in sorted(KNOBS):
        cells = []
        for preset in PRESET_ORDER:
            value = dict(DEFAULTS, **PRESETS[preset])[name]
            text = "unset" if value is None else "`%s`" % _v(value)
            cells.append("**%s**" % text if name in PRESETS[preset] else text)
        lines.append("| `%s` | %s | %s |" % (name, " | ".join(cells), KNOBS[name][2]))
    return "\n".join(lines) + "\n"


def test_presets_doc_names_exactly_the_presets():
    assert sorted(PRESET_ORDER) == sorted(PRESETS)
    for preset in PRESETS:
        assert "## `%s`" % preset in _read("presets.md"), preset


def test_presets_doc_table_is_generated_from_presets_and_knobs():
    assert _generated_part(_read("presets.md")) == presets_table()


def test_presets_are_spec_section_5():
    # smoke_host_fallback: false is issue 13 (a check runs inside the root, or by descriptor only when asked for).
    prod = {"require_rescue": True, "rescue_exec_check": True, "locking": "required", "smoke": "required",
            "smoke_host_fallback": False, "auto_rollback": True, "allow_unlocked_commit": False}
    assert PRESETS["default"] == {}
    assert PRESETS["production"] == prod
    assert PRESETS["coreutils_switch"] == dict(prod, ownership_strict=True, require_preservation=True,
                                               source_trust="require_trusted",
                                               extra_mount_checks=["/usr", "/bin", "/sbin", "/usr/bin", "/usr/sbin"],
                                               forbid_paths=["/proc", "/sys", "/dev", "/run"])


# -- docs/facts.md <-> schema ---------------------------------------------------------------------

def _schema():
    with open(SCHEMA) as f:
        return json.load(f)


def _type_of(spec):
    if "$ref" in spec:
        parts = spec["$ref"].split("/")
        if len(parts) > 4 and parts[-2] == "properties":
            return "as `%s.%s`" % (parts[-3], parts[-1])
        return "[%s](#%s)" % (parts[-1], parts[-1])
    if "const" in spec:
        return "`%s`" % json.dumps(spec["const"])
    if "enum" in spec:
        return " \\| ".join("`%s`" % json.dumps(v).strip('"') for v in spec["enum"])
    if "oneOf" in spec or "anyOf" in spec:
        return " or ".join(_type_of(s) for s in spec.get("oneOf", spec.get("anyOf")))
    kind = spec.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and "items" in spec:
        return "list of %s" % _type_of(spec["items"])
    return kind


def _object_table(spec):
    required = set(spec.get("required", ()))
    lines = ["| field | type | required | notes |", "|---|---|---|---|"]
    for name, prop in spec.get("properties", {}).items():
        notes = (prop.get("description") or "").replace("|", "\\|")
        lines.append("| `%s` | %s | %s | %s |" % (name, _type_of(prop), "yes" if name in required else "", notes))
    return lines


def facts_reference():
    schema = _schema()
    out = ["### report", "", "`ansible_facts.switchyard_<stage>`: %s" % schema.get("description", ""), ""]
    out += _object_table(schema) + [""]
    for name, spec in schema.get("$defs", {}).items():
        out += ["### %s" % name, ""]
        if spec.get("description"):
            out += [spec["description"], ""]
        if spec.get("properties"):
            out += _object_table(spec) + [""]
        else:
            out += ["Type: %s%s" % (_type_of(spec), " (pattern `%s`)" % spec["pattern"] if "pattern" in spec else ""), ""]
    return "\n".join(out)


def test_facts_doc_reference_is_generated_from_the_schema():
    assert _generated_part(_read("facts.md")) == facts_reference()


def test_facts_doc_names_every_report_entry_plan_and_event_property():
    text = _read("facts.md")
    schema = _schema()
    objects = [schema] + [schema["$defs"][n] for n in ("entry", "plan", "event", "audit_event", "summary")]
    for spec in objects:
        for prop in spec["properties"]:
            assert "`%s`" % prop in text, prop


# -- fact keys: docs/facts.md and the callback <-> _facts ------------------------------------------

def test_facts_doc_module_table_is_the_fact_key_table():
    rows = _table_rows(_read("facts.md"), "module")
    assert [(r[0].strip("`"), r[1].strip("`")) for r in rows] == [
        (MODULE[s], "ansible_facts." + FACT_KEY[s]) for s in STAGES]


def test_callback_doc_names_every_fact_key():
    with open(os.path.join(REPO, "plugins", "callback", "audit_jsonl.py")) as f:
        text = f.read()
    doc = text[text.index('DOCUMENTATION = r"""'):text.index('EXAMPLES = r"""')]
    for key in FACT_KEY.values():
        assert "C(%s)" % key in doc or "C(ansible_facts.%s)" % key in doc, key


# -- guides point at nothing a reader of the installed collection lacks -----------------------------

def test_guides_name_no_spec_section_and_no_wrong_schema_path():
    names = ["README.md"] + ["docs/" + n for n in sorted(os.listdir(DOCS)) if n.endswith(".md")]
    for name in names:
        with open(os.path.join(REPO, name)) as f:
            text = f.read()
        assert not re.search(r"\bSPEC\b", text), name  # the contract the code was written against is not shipped
        assert "plugin_utils/report.schema.json" not in text, name  # the schema is schemas/report.schema.json


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        _replace_generated("presets.md", presets_table())
        _replace_generated("facts.md", facts_reference())
    else:
        sys.exit("usage: test_docs.py --write   (rewrites the generated parts of docs/presets.md and docs/facts.md)")
