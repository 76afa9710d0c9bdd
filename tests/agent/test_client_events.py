"""The client's events (``Send``, ``Wait``, ``Done``, ``HttpAnswer``, ``Prepared``) are
``@frozen_record`` (an ``__init__`` cheaper than the generated one): they still behave as the
frozen dataclasses would generate -- the same fields and defaults, equality, hash,
repr, and no assignment after construction."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent import client


def _reference(cls: type) -> type:
    """A frozen dataclass with ``cls``'s fields, generated ``__init__`` and all."""
    spec = [(f.name, f.type, dataclasses.field(default=f.default, repr=f.repr) if f.default is not dataclasses.MISSING
             else dataclasses.field(repr=f.repr)) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, spec, frozen=True)


EVENTS = {
    client.Send: st.tuples(st.text(max_size=8), st.integers(0, 3), st.binary(max_size=8),
                           st.tuples(st.tuples(st.text(max_size=4), st.text(max_size=4))), st.integers(1, 9)),
    client.Wait: st.tuples(st.floats(0, 60), st.text(max_size=8)),
    client.Done: st.tuples(st.sampled_from(["ack", "conflict", "dead_letter", "gave_up"]),
                           st.one_of(st.none(), st.integers(100, 599)), st.text(max_size=8), st.integers(0, 9),
                           st.one_of(st.none(), st.text(max_size=8))),
    client.HttpAnswer: st.one_of(st.tuples(st.integers(100, 599)),
                                 st.tuples(st.integers(100, 599), st.one_of(st.none(), st.text(max_size=4))),
                                 st.tuples(st.integers(100, 599), st.one_of(st.none(), st.text(max_size=4)),
                                           st.text(max_size=8))),
    client.Prepared: st.tuples(st.text(max_size=8), st.binary(max_size=8), st.binary(max_size=8)),
}


@pytest.mark.parametrize("cls", list(EVENTS), ids=lambda c: c.__name__)
def test_events_behave_as_generated_frozen_dataclasses(cls):
    ref = _reference(cls)

    @settings(max_examples=60, derandomize=True, deadline=None)
    @given(EVENTS[cls], EVENTS[cls])
    def check(args, other):
        got, want = cls(*args), ref(*args)
        assert dataclasses.asdict(got) == dataclasses.asdict(want)
        assert repr(got) == repr(want).replace(ref.__qualname__, cls.__qualname__)
        assert hash(got) == hash(cls(*args))
        assert (got == cls(*other)) == (dataclasses.astuple(want) == dataclasses.astuple(ref(*other)))
        assert dataclasses.replace(got) == got
        kwargs = dict(zip([f.name for f in dataclasses.fields(cls)], args, strict=False))
        assert cls(**kwargs) == got
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.__setattr__(dataclasses.fields(cls)[0].name, None)

    check()
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
