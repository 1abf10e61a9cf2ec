"""Plan ids: UUIDv5 over the normalised plan, independent of input order and host."""
import uuid

from hypothesis import given, strategies as st

from ansible_collections.switchyard.fs.plugins.module_utils._plan import Action, Plan

names = st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=6), min_size=1, max_size=8, unique=True)


def _plan(ns, kind="apply"):
    return Plan(kind, [Action("link", "/usr/bin/" + n, "/opt/p/" + n) for n in ns])


@given(names, st.randoms())
def test_ids_do_not_depend_on_order(ns, rnd):
    shuffled = list(ns)
    rnd.shuffle(shuffled)
    a, b = _plan(ns), _plan(shuffled)
    assert a.plan_id == b.plan_id
    assert [x.action_id for x in a.actions] == [x.action_id for x in b.actions]
    assert [x.target for x in a.actions] == sorted(x.target for x in a.actions)


@given(names)
def test_ids_are_uuid5_and_distinct(ns):
    p = _plan(ns)
    assert uuid.UUID(p.plan_id).version == 5
    ids = [a.action_id for a in p.actions]
    assert len(set(ids)) == len(ids) and all(uuid.UUID(i).version == 5 for i in ids)


@given(names)
def test_changing_a_source_changes_plan_and_that_action_only(ns):
    a = _plan(ns)
    changed = Plan("apply", [Action("link", "/usr/bin/" + n, "/opt/p/" + n + ("x" if i == 0 else ""))
                             for i, n in enumerate(ns)])
    assert a.plan_id != changed.plan_id


def test_known_vector_is_stable_across_releases():
    # Pinned: a fleet compares plan ids across hosts and versions; this must never change by accident.
    p = Plan("apply", [Action("link", "/usr/bin/ls", "/opt/p/ls")])
    assert p.plan_id == "3c6becf8-ea2d-5597-a6e6-df617407157b"
    assert p.plan_id != Plan("restore", [Action("link", "/usr/bin/ls", "/opt/p/ls")]).plan_id
