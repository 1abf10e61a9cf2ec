"""The collection's docs as a user of the installed collection sees them: ansible-doc and antsibull-docs.

- ``ansible-doc`` renders every module; RETURN documents the report under ``ansible_facts.switchyard_<stage>``
  with ``contains`` and ``sample``, and every documented field exists in schemas/report.schema.json (so the
  docs cannot drift from the facts); ``seealso`` and ``requirements`` (jsonschema on the controller) are there;
  no text points at a repository path as if the reader had the checkout.
- ``antsibull-docs lint-collection-docs --plugin-docs`` passes over a staged copy of the shipped files,
  including docs/docsite/extra-docs.yml and links.yml.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
MODULES = ("safe_preflight", "safe_apply", "safe_restore", "safe_prune")
STAGE_ROOT = os.path.join(REPO, ".build", "docs-lint")
STAGE = os.path.join(STAGE_ROOT, "ansible_collections", "switchyard", "fs")
# A repository path in prose, e.g. docs/durability.md or plugins/plugin_utils/x.json (URLs are fine).
# One worker stages and lints at a time (the stage directory is shared).
pytestmark = pytest.mark.xdist_group("docs_lint")
REPO_PATH = re.compile(r"(?<![/\w.])(?:docs|schemas|plugins|tests|scripts|SPEC)(?:/[\w.-]+)+|\bSPEC\b")


def _stage():
    spec = importlib.util.spec_from_file_location("switchyard_sanity_helpers",
                                                  os.path.join(REPO, "tests", "sanity", "test_sanity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.stage_collection(STAGE)


def _env():
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), ANSIBLE_COLLECTIONS_PATH=STAGE_ROOT,
               ANSIBLE_NOCOLOR="1")
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def staged():
    return _stage()


@pytest.fixture(scope="module")
def docs(staged):
    out = subprocess.check_output([os.path.join(BIN, "ansible-doc"), "--json", "-t", "module"]
                                  + ["switchyard.fs." + m for m in MODULES], env=_env(), cwd=staged)
    return json.loads(out)


@pytest.fixture(scope="module")
def schema():
    with open(os.path.join(REPO, "schemas", "report.schema.json")) as f:
        return json.load(f)


def _props(schema, ref):
    node = schema if ref is None else schema["$defs"][ref]
    return set(node["properties"])


# Documented sub-structure of each report -> the schema definition that holds its fields.
NESTED = {"summary": "summary", "rows": "entry", "actions": "entry", "results": "entry", "plan": "plan",
          "smoke": "smoke", "events": "event"}


@pytest.mark.parametrize("module", MODULES)
def test_return_documents_the_report_fields_that_the_schema_defines(docs, schema, module):
    stage = module.split("_", 1)[1]
    ret = docs["switchyard.fs." + module]["return"]
    report = ret["ansible_facts"]["contains"]["switchyard_" + stage]
    assert report.get("sample"), "the report needs a sample"
    fields = report["contains"]
    assert set(fields) <= _props(schema, None), set(fields) - _props(schema, None)
    for required in ("schema_version", "stage", "plan_id", "run_id", "dry_run", "summary", "events"):
        assert required in fields, required
    for name, ref in NESTED.items():
        if name in fields:
            sub = fields[name]["contains"]
            assert set(sub) <= _props(schema, ref), (name, set(sub) - _props(schema, ref))
    for name, entry in ret.items():
        assert "sample" in entry or name == "ansible_facts", name

    def walk(entries, path):
        for key, entry in entries.items():
            if "contains" in entry:
                walk(entry["contains"], path + [key])
            elif entry["type"] not in ("dict",):
                assert "sample" in entry, ".".join(path + [key])
    walk(fields, ["switchyard_" + stage])
    # the report sample validates against the schema the action plugin enforces
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(schema).validate(report["sample"])


@pytest.mark.parametrize("module", MODULES)
def test_seealso_requirements_and_no_repository_paths(docs, module):
    doc = docs["switchyard.fs." + module]["doc"]
    modules = [s["module"] for s in doc["seealso"] if "module" in s]
    assert modules and all(m.startswith("switchyard.fs.") and m != "switchyard.fs." + module for m in modules)
    assert any(s.get("ref") == "ansible_collections.switchyard.fs.docsite.guides" for s in doc["seealso"])
    assert any(r.startswith("jsonschema") and "controller" in r for r in doc["requirements"]), doc["requirements"]
    text = json.dumps({"doc": doc, "return": docs["switchyard.fs." + module]["return"],
                       "examples": docs["switchyard.fs." + module]["examples"]})
    text = re.sub(r"https?://\S+?(?=[\"\s])", "", text)
    assert REPO_PATH.findall(text) == [], REPO_PATH.findall(text)


def test_antsibull_docs_lint_collection_docs_passes(staged):
    proc = subprocess.run([os.path.join(BIN, "antsibull-docs"), "lint-collection-docs", "--plugin-docs",
                           "--validate-collection-refs", "all", "."], cwd=staged, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=900,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout[-5000:]


def test_docsite_guides_page_is_in_the_extra_docs_index(staged):
    with open(os.path.join(staged, "docs", "docsite", "extra-docs.yml")) as f:
        assert "- guides" in f.read()
    with open(os.path.join(staged, "docs", "docsite", "rst", "guides.rst")) as f:
        page = f.read()
    # the label the modules' seealso points at (antsibull-docs does not check seealso refs)
    assert ".. _ansible_collections.switchyard.fs.docsite.guides:\n" in page
    for guide in sorted(os.listdir(os.path.join(REPO, "docs"))):
        if guide.endswith(".md") and guide != "benchmarks.md":
            assert "/docs/%s>" % guide in page, "docs/docsite/rst/guides.rst does not link %s" % guide
