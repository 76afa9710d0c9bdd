"""The compiled history lines (``sim/_fasthistory.c``) are the reference's bytes.

``flk.sim.history.LineSink`` is the pure reference; the registry entry ``line_sink``
(:mod:`flk.impl.core.accel`) is its compiled twin. Over arbitrary events -- any field
names and event types, text with quotes, backslashes, control characters and non-ASCII,
huge ints, floats, bools, None, nested lists and dicts, subclasses, float and int times,
NaN (refused by both), wrong arities (refused by both) -- both sinks write the same bytes,
count the same lines, hand the same chunks to ``flush`` and raise the same exception
types. A copy of the C source built with a planted escaping bug is caught by the same
check. Lone surrogates are outside the input space: neither path can write them (the
reference raises when the lines are folded, the compiled one when the event is recorded).
"""

from __future__ import annotations

import enum
import os
import pathlib

import pytest
from hypothesis import example, find, given, settings
from hypothesis import strategies as st

from flk.impl.core import accel
from flk.impl.testing.cbuild import build_variant
from flk.sim import history
from flk.sim.history import History, LineSink, _row_spec, _t_us, _value

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Level(enum.IntEnum):
    LOW = 1


class Tag(str):
    pass


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
# longer text, mostly plain: the compiled path reads text eight bytes at a time while none needs an escape
long_texts = st.text(st.sampled_from('abcdef0123\u00e9"\\\n'), min_size=8, max_size=40)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False), st.just(float("nan")), texts, long_texts,
                    st.sampled_from(["\t", '"', "\\", "\x00\x1f\x7f", "é\u2028", "\n\r\b\f"]),
                    st.builds(Tag, texts), st.just(Level.LOW))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner),
                                                       st.dictionaries(texts, inner, max_size=3)), max_leaves=6)
names = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)
                 .filter(lambda k: k not in ("t_us", "type")), min_size=0, max_size=5, unique=True)
times = st.one_of(st.floats(min_value=-1e7, max_value=1e7), st.floats(allow_nan=False), st.integers(0, 2**40),
                  st.just(float("nan")), st.just(0.0000025), st.just(-0.0))


@st.composite
def operations(draw):
    """(kind, t, type, names, payload): a recorder call, a many-rows call or one made line."""
    kind = draw(st.sampled_from(["one", "one", "many", "add", "arity"]))
    shape = tuple(draw(names))
    etype = draw(st.one_of(texts, st.just("srv.respond")))
    t = draw(times)
    if kind == "add":
        return kind, t, etype, shape, draw(texts)
    if kind == "many":
        rows = draw(st.lists(st.one_of(st.tuples(*[values] * len(shape)), st.lists(values, max_size=6)), max_size=4))
        return kind, t, etype, shape, rows
    row = tuple(draw(values) for _ in shape)
    return kind, t, etype, shape, row + (None,) if kind == "arity" else row


EDGE_CASES = [
    [("one", 1.5, "ev", ("a", "b"), ("x\ty", 3))],
    [("one", 0.0000025, "ev", ("a",), ("\x00\x1f\"\\",))],
    [("one", 2.0, "é\"", ("k",), ([1.5, {"z": None}],))],
    [("one", 1e300, "ev", ("v",), (float("nan"),)), ("add", 1.0, "ev", (), "plain\nline")],
    [("many", 3, "final.entry", ("a", "b"), [("p", True), ("q", 2**80), ("r",)])],
    [("one", -1.5, "ev", ("a", "b", "c"), (-7, -(2**63), 2**63 - 1)), ("one", 0.0, "ev", ("a",), (0,))],
    # text read eight bytes at a time: what needs an escape at every place of a block, UTF-8 around it
    [("one", 1.0, "ev", ("a", "b"), ("0123456789abcdef" * 4, 'abcdefg"hijklmn\\opqrstu\x1fvwxyz\u00e9\u00e9\x7f" '
                                     "\t\n0123456789" + '"'))],
]


def apply(make, ops, batch: int):
    """What a sink made by ``make`` does with ``ops``: each call's outcome, the flushed chunks,
    the bytes left pending and the line count."""
    flushed: list[bytes] = []
    sink = make(flushed.append, batch, _value, _t_us)
    outcomes = []
    recorders = {}
    for kind, t, etype, shape, payload in ops:
        try:
            if kind == "add":
                sink.add(payload)
            else:
                key = (etype, shape, kind == "many")
                rec = recorders.get(key) or recorders.setdefault(key, sink.recorder(*_row_spec(etype, shape),
                                                                                 kind == "many"))
                if kind == "many":
                    rec(t, payload)
                else:
                    rec(t, *payload)
            outcomes.append("ok")
        except (ValueError, TypeError, OverflowError) as exc:
            outcomes.append(type(exc).__name__)
    return outcomes, flushed, sink.take(), sink.count


def differs(make, ops) -> bool:
    return any(apply(make, ops, batch) != apply(LineSink, ops, batch) for batch in (1, 3, 512))


def _compiled_or_reference():
    return history._compiled_line_sink or LineSink  # the registry's binding (None on the pure path)


@pytest.mark.differential("line_sink")
@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(operations(), max_size=8))
@example(EDGE_CASES[0])
@example(EDGE_CASES[1])
@example(EDGE_CASES[2])
@example(EDGE_CASES[3])
@example(EDGE_CASES[4])
@example(EDGE_CASES[5])
@example(EDGE_CASES[6])
def test_compiled_line_sink_writes_the_reference_bytes(ops):
    make = _compiled_or_reference()
    for batch in (1, 3, 512):
        assert apply(make, ops, batch) == apply(LineSink, ops, batch)


@pytest.mark.differential("line_sink")
@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e5), st.sampled_from([("a", "b"), ("x",), ("k", "d", "z")]),
                          st.lists(values, min_size=3, max_size=3)), max_size=12))
def test_history_digest_and_count_are_the_same_on_both_paths(events):
    """Whole histories: compiled (digest-only, the registry's path) and pure (``accel.pure``)
    give the digest and count of a kept history (the lines of ``_dumps``)."""
    fast = History(keep=False)
    with accel.pure():
        slow = History(keep=False)
    kept = History(keep=True)
    for h in (fast, slow, kept):
        recorders = {}
        for t, shape, row in events:
            rec = recorders.get(shape) or recorders.setdefault(shape, h.recorder("ev", shape))
            try:
                rec(t, *row[: len(shape)])
            except ValueError:  # NaN inside a list: refused alike
                pass
        h.record_many(9.5, "final.x", ("k", "n"), [(str(r[0]), i) for i, (_, _, r) in enumerate(events)])
    assert fast.digest == slow.digest == kept.digest
    assert fast.count == slow.count == kept.count
    assert type(slow._pending) is LineSink


def _build_planted(define: str):
    """sim/_fasthistory.c compiled with a planted bug: FLK_PLANT_TAB_UNESCAPED (a tab written
    raw), FLK_PLANT_MINUS_DROPPED (a negative int or time written without its sign) or
    FLK_PLANT_QUOTE_UNSEEN (a quote inside an eight-byte block of text written raw)."""
    planted = build_variant(str(ROOT / "sim" / "_fasthistory.c"), "_fasthistory", define)
    if planted is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C compiler or Python headers (make setup installs them)")
        pytest.skip("no C compiler or Python headers")
    return planted


@pytest.mark.parametrize("define", ["FLK_PLANT_TAB_UNESCAPED", "FLK_PLANT_MINUS_DROPPED", "FLK_PLANT_QUOTE_UNSEEN"])
def test_a_planted_bug_in_the_c_source_is_caught(define):
    planted = _build_planted(define)
    assert any(differs(planted.line_sink, case) for case in EDGE_CASES)  # the pinned examples catch it
    found = find(st.lists(operations(), max_size=8), lambda ops: differs(planted.line_sink, ops),
                 settings=settings(max_examples=2000, derandomize=True, database=None, deadline=None))
    assert found  # and so does the search, alone (no deadline: a slow example on a loaded machine is no catch)
