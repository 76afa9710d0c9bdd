"""``@frozen_record`` behaves as ``@dataclass(frozen=True)`` in everything but the cost of
``__init__``: the same fields, defaults and factories, equality, order, hash, repr,
``replace``/``asdict`` and no assignment after construction -- for shapes written here and
for every hot record of the request path that uses it."""

from __future__ import annotations

import dataclasses
from dataclasses import field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent import client
from flk.impl.core.records import frozen_record
from flk.impl.dedup.base import StoredOutcome
from flk.impl.storage.inbox import InboxRecord
from flk.impl.verifier.pipeline import Request, Response

VALUES = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=4), st.binary(max_size=4),
                   st.floats(allow_nan=False, width=32), st.tuples(st.integers(0, 3)))


def _twins(body: dict, **options) -> tuple[type, type]:
    """The same class body under ``@frozen_record`` and under ``@dataclass(frozen=True)``."""
    def make(deco):
        ns = {k: (dataclasses.field(**v) if isinstance(v, dict) else v) for k, v in body.items()
              if k != "__annotations__"}
        ns["__annotations__"] = dict(body["__annotations__"])
        ns["__module__"] = __name__
        return deco(type("Shape", (), ns))
    return make(frozen_record(**options)), make(dataclasses.dataclass(frozen=True, **options))


SHAPES = {
    "plain": ({"__annotations__": {"a": "int", "b": "str"}}, {}),
    "defaults": ({"__annotations__": {"a": "int", "b": "str", "c": "int"}, "b": "x", "c": 3}, {}),
    "factory": ({"__annotations__": {"a": "int", "b": "dict"}, "b": {"default_factory": dict}}, {}),
    "not_compared": ({"__annotations__": {"a": "int", "b": "int"}, "b": {"default": -1, "compare": False,
                                                                           "repr": False}}, {}),
    "not_init": ({"__annotations__": {"a": "int", "b": "int", "c": "list"},
                  "b": {"default": 7, "init": False}, "c": {"default_factory": list, "init": False}}, {}),
    "ordered": ({"__annotations__": {"a": "int", "b": "int"}, "b": 0}, {"order": True}),
    "no_eq": ({"__annotations__": {"a": "int"}}, {"eq": False}),
    "empty": ({"__annotations__": {}}, {}),
}


def _safe(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001 -- both sides must raise the same kind
        return ("raises", type(exc))


def _same_behaviour(got_cls, want_cls, args, kwargs, other):
    got, want = got_cls(*args, **kwargs), want_cls(*args, **kwargs)
    names = [f.name for f in dataclasses.fields(want_cls)]
    assert [f.name for f in dataclasses.fields(got_cls)] == names
    assert {n: getattr(got, n) for n in names} == {n: getattr(want, n) for n in names}
    assert repr(got) == repr(want)
    assert _safe(lambda: hash(got) == hash(got_cls(*args, **kwargs))) == \
        _safe(lambda: hash(want) == hash(want_cls(*args, **kwargs)))
    g2, w2 = got_cls(*other, **kwargs), want_cls(*other, **kwargs)
    assert (got == g2) == (want == w2)
    assert (got == got_cls(*args, **kwargs)) == (want == want_cls(*args, **kwargs))
    if want_cls.__dataclass_params__.order:
        assert _safe(lambda: got < g2) == _safe(lambda: want < w2)
    assert dataclasses.replace(got) == got or not want_cls.__dataclass_params__.eq
    assert _safe(lambda: dataclasses.asdict(got)) == _safe(lambda: dataclasses.asdict(want))
    for name in names or ["anything"]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(got, name, None)
    assert got_cls.__dataclass_params__.frozen


@pytest.mark.parametrize("shape", list(SHAPES))
def test_frozen_record_behaves_as_a_frozen_dataclass(shape):
    body, options = SHAPES[shape]
    got_cls, want_cls = _twins(body, **options)
    n_init = [f for f in dataclasses.fields(want_cls) if f.init]
    required = sum(1 for f in n_init if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)

    @settings(max_examples=40, derandomize=True, deadline=None)
    @given(st.lists(VALUES, min_size=required, max_size=len(n_init)),
           st.lists(VALUES, min_size=required, max_size=len(n_init)))
    def check(args, other):
        other = other[:len(args)] + args[len(other):]
        _same_behaviour(got_cls, want_cls, args, {}, other)
        # keywords too, and a missing required argument is the same TypeError
        kw = dict(zip([f.name for f in n_init], args, strict=False))
        assert got_cls(**kw) == got_cls(*args) or not want_cls.__dataclass_params__.eq
        if required:
            assert _safe(lambda: got_cls(*args[:required - 1]))[0] == "raises"
            assert _safe(lambda: want_cls(*args[:required - 1]))[0] == "raises"

    check()


def test_factories_are_called_per_instance():
    body, _ = SHAPES["factory"]
    got_cls, _ = _twins(body)
    a, b = got_cls(1), got_cls(1)
    assert a.b == {} and a.b is not b.b
    assert got_cls(1, {"k": 1}).b == {"k": 1}


@pytest.mark.parametrize("bad", [
    lambda: frozen_record(type("A", (), {"__annotations__": {"a": "int"}, "__init__": lambda self: None})),
    lambda: frozen_record(type("B", (), {"__annotations__": {"a": "int"}, "__post_init__": lambda self: None})),
    lambda: frozen_record(slots=True),
    lambda: frozen_record(frozen=False),
    lambda: frozen_record(init=True),
])
def test_what_it_does_not_support_is_refused(bad):
    with pytest.raises(TypeError):
        bad()


HOT = [client.HttpAnswer, client.Send, client.Wait, client.Done, client.Prepared, StoredOutcome, InboxRecord,
       Request, Response]


@pytest.mark.parametrize("cls", HOT, ids=lambda c: c.__name__)
def test_every_hot_record_is_a_frozen_record_that_behaves_as_the_generated_one(cls):
    assert cls.__init__.__code__.co_filename.startswith("<frozen_record"), "not made by @frozen_record"
    spec = [(f.name, f.type, field(default=f.default, default_factory=f.default_factory, repr=f.repr,
                                   compare=f.compare, hash=f.hash, init=f.init)) for f in dataclasses.fields(cls)]
    ref = dataclasses.make_dataclass(cls.__name__, spec, frozen=True)
    ref.__qualname__ = cls.__qualname__
    n_init = [f for f in dataclasses.fields(cls) if f.init]
    required = sum(1 for f in n_init if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)

    @settings(max_examples=40, derandomize=True, deadline=None)
    @given(st.lists(VALUES, min_size=required, max_size=len(n_init)),
           st.lists(VALUES, min_size=len(n_init), max_size=len(n_init)))
    def check(args, other):
        _same_behaviour(cls, ref, args, {}, other[:len(args)])

    check()
