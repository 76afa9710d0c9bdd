"""The one schema engine (flk.impl.core.schema): total over any nested input, every error names its path.

The scenario schema (flk.sim.schema) and the operator's policy schema
(flk.impl.operator.policy) are engines over it, so the properties are checked
on the bare engine and on both of them.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.schema import Engine, Field, SchemaError, describe_kind
from flk.impl.operator.policy import SPEC_FIELDS, PolicyError, check_policy
from flk.sim.schema import Context, ScenarioError, check_table

INNER = (
    Field("n", "int", 3, "an int", minimum=1, maximum=10),
    Field("x", "number", None, "a number", minimum=0.0),
)
FIELDS = (
    Field("name", "str", None, "a name", choices=("a", "b"), required=True),
    Field("on", "bool", True, "a flag"),
    Field("count", "int", 1, "an int", minimum=0),
    Field("rate", "number", 0.5, "a share", minimum=0.0, maximum=1.0),
    Field("tags", "str_list", [], "tags", choices=("p", "q")),
    Field("items", "list", [], "tables"),
    Field("raw", "table", {}, "any table"),
    Field("inner", "table", {}, "a nested table", fields=INNER),
)
ENGINE = Engine()

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                    st.sampled_from(["a", "b", "p", "q", "n", "x", "inner", "name"]))
keys = st.one_of(st.sampled_from([f.name for f in FIELDS] + ["n", "x", "nme", "dist", "mean"]), st.text(max_size=6))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(keys, inner, max_size=5)), max_leaves=20)
documents = st.one_of(values, st.dictionaries(keys, values, max_size=8),
                      st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c"])},
                                            optional={f.name: values for f in FIELDS if f.name != "name"}))


def _names_path(exc: SchemaError, path: str) -> None:
    assert exc.key == path or exc.key.startswith(path + "."), (exc.key, path)
    assert exc.key in str(exc) and exc.reason in str(exc)
    assert exc.reason


@settings(max_examples=200, deadline=None)
@given(doc=documents, path=st.sampled_from(["root", "a.b.0", "faults.2"]))
def test_engine_raises_only_its_error_and_names_the_path(doc, path):
    try:
        ENGINE.check_table(doc, FIELDS, path)
    except SchemaError as exc:
        assert type(exc) is SchemaError
        _names_path(exc, path)
        return
    assert isinstance(doc, dict) and doc["name"] in ("a", "b")
    for f in FIELDS:  # accepted: every given value fits its kind
        v = doc.get(f.name)
        if v is None:
            continue
        if f.kind == "int":
            assert isinstance(v, int) and not isinstance(v, bool) and v >= 0
        if f.kind == "number":
            assert not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0
        if f.name == "inner":
            assert set(v) <= {"n", "x"}


@settings(max_examples=150, deadline=None)
@given(doc=documents)
def test_root_path_errors_name_a_key_or_the_document(doc):
    try:
        ENGINE.check_table(doc, FIELDS, "")
    except SchemaError as exc:
        assert exc.key and str(exc).startswith(exc.key)


@settings(max_examples=150, deadline=None)
@given(doc=documents)
def test_scenario_engine_raises_only_scenario_errors(doc):
    fields = FIELDS + (Field("latency_ms", "dist", None, "a latency"), Field("where", "regions", None, "regions"),
                       Field("via", "nodes", None, "nodes"))
    ctx = Context(regions=("us", "eu"), agents=("a0",), nodes=("us", "eu", "clients"))
    try:
        check_table(doc, fields, "faults.1", ctx)
    except ScenarioError as exc:
        _names_path(exc, "faults.1")
        assert "(fault #2)" in str(exc)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(sorted(SPEC_FIELDS)), name=st.one_of(st.just("p-1"), values),
       spec=st.one_of(values, st.dictionaries(st.sampled_from([f.name for fs in SPEC_FIELDS.values() for f in fs]),
                                              values, max_size=6)))
def test_policy_engine_raises_only_policy_errors(kind, name, spec):
    try:
        pol = check_policy({"kind": kind, "name": name, "spec": spec}, path="policies.0")
    except PolicyError as exc:
        _names_path(exc, "policies.0")
        return
    assert pol.kind == kind and set(pol.spec) == {f.name for f in SPEC_FIELDS[kind]}


@pytest.mark.parametrize(("doc", "key", "reason"), [
    ({"name": "a", "cout": 1}, "t.cout", "unknown key -- did you mean 'count'?"),
    ({}, "t.name", "missing (required)"),
    ({"name": "c"}, "t.name", "must be one of a, b, got 'c'"),
    ({"name": "a", "on": 1}, "t.on", "must be true or false, got an integer 1"),
    ({"name": "a", "count": 2.5}, "t.count", "must be an integer, got a non-integer number 2.5"),
    ({"name": "a", "count": True}, "t.count", "must be an integer, got a boolean True"),
    ({"name": "a", "rate": 1.5}, "t.rate", "must be <= 1, got 1.5"),
    ({"name": "a", "rate": math.nan}, "t.rate", "must be a finite number, got nan"),
    ({"name": "a", "rate": -math.inf}, "t.rate", "must be a finite number, got -inf"),
    ({"name": "a", "rate": "0.5"}, "t.rate", "must be a number, got a string '0.5'"),
    ({"name": None}, "t.name", "must be a string, got null"),
    ({"name": "a", "tags": ["p", ""]}, "t.tags", "must be a list of non-empty strings"),
    ({"name": "a", "tags": ["r"]}, "t.tags", "unknown 'r' (known: p, q)"),
    ({"name": "a", "inner": {"n": 0}}, "t.inner.n", "must be >= 1, got 0"),
    ({"name": "a", "inner": {"nn": 0}}, "t.inner.nn", "unknown key -- did you mean 'n'? (known: n, x)"),
    ({"name": "a", "raw": []}, "t.raw", "must be a table, got a list"),
])
def test_engine_messages(doc, key, reason):
    with pytest.raises(SchemaError) as info:
        ENGINE.check_table(doc, FIELDS, "t")
    assert info.value.key == key and info.value.reason.startswith(reason)


def test_huge_int_is_accepted_and_its_message_never_raises():
    ENGINE.check_table({"name": "a", "count": 10 ** 5000}, FIELDS, "t")
    with pytest.raises(SchemaError, match=r"must be true or false, got an integer <int>"):
        ENGINE.check_table({"name": "a", "on": 10 ** 5000}, FIELDS, "t")


def test_error_type_is_the_engines_and_the_message_counts_list_items():
    with pytest.raises(ScenarioError, match=r"^f.toml: faults\.1\.kind \(fault #2\): missing \(required\)$") as info:
        try:
            check_table({}, (Field("kind", "str", None, "k", required=True),), "faults.1", Context())
        except ScenarioError as exc:
            raise ScenarioError(exc.key, exc.reason, "f.toml") from None
    assert isinstance(info.value, SchemaError) and isinstance(info.value, ValueError)
    with pytest.raises(PolicyError) as pinfo:
        check_policy({"kind": "CRRPolicy", "name": "x", "spec": {"mode": "selective"}})
    assert pinfo.value.key == "spec.tenants" and isinstance(pinfo.value, SchemaError)


def test_describe_kind_draws_choices_and_bounds():
    assert describe_kind(FIELDS[3]) == "number >= 0, <= 1"
    assert describe_kind(FIELDS[0]) == "str (a \\| b)"


ROWS = (Field("id", "str", None, "an id", required=True), Field("ok", "bool", None, "a flag", required=True))
READ_BACK = (Field("checks", "tables", None, "rows", required=True, fields=ROWS),
             Field("inner", "table", None, "a nested table", fields=INNER))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(doc=st.one_of(documents, st.fixed_dictionaries({"checks": values}, optional={"inner": values, "more": values})))
def test_an_engine_whose_other_keys_pass_is_total_and_checks_lists_of_tables(doc):
    """others_pass=True (documents read back) raises only its error, naming the path, and
    what it accepts has every row a table of the known kinds; the default engine refuses
    the extra keys the open one lets pass."""
    try:
        Engine(others_pass=True).check_table(doc, READ_BACK, "root")
    except SchemaError as exc:
        _names_path(exc, "root")
        return
    assert all(isinstance(r, dict) and isinstance(r["id"], str) and isinstance(r["ok"], bool) for r in doc["checks"])


def test_others_pass_at_every_depth_and_only_there():
    doc = {"checks": [{"id": "a", "ok": True, "later": 1}], "inner": {"n": 2, "later": [1]}, "later": {}}
    Engine(others_pass=True).check_table(doc, READ_BACK, "")
    with pytest.raises(SchemaError, match="^later: unknown key"):
        Engine().check_table(doc, READ_BACK, "")
    with pytest.raises(SchemaError, match="^checks.0.later: unknown key"):
        Engine().check_table({"checks": doc["checks"]}, READ_BACK, "")
    with pytest.raises(SchemaError, match="^inner.later: unknown key"):
        Engine().check_table({"checks": [], "inner": doc["inner"]}, READ_BACK, "")
    with pytest.raises(SchemaError, match="^checks.1.ok: must be true or false"):
        Engine(others_pass=True).check_table({"checks": [doc["checks"][0], {"id": "b", "ok": "yes"}]}, READ_BACK, "")
    with pytest.raises(SchemaError, match="^checks: must be a list, got a table"):
        Engine(others_pass=True).check_table({"checks": {}}, READ_BACK, "")
