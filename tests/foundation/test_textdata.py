"""flk.impl.core.textdata: JSON and TOML text from outside the process parse as the standard
library parses it, and every failure is the format's decode error -- never RecursionError, a
bare digit-limit ValueError or (TOML) UnicodeDecodeError."""

from __future__ import annotations

import io
import json
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core import textdata

JSON_ATOMS = st.sampled_from(["[", "]", "{", "}", ":", ",", '"a"', "1", "-0.5e3", "true", "null", " ", "NaN", "1" * 5000])
TOML_ATOMS = st.sampled_from(["a = ", "[", "]", "{", "}", "b = ", ",", "1", "\n", '"x"', "[t]\n", "1" * 5000, "1979-05-27"])


def _deep(depth: int, atoms: st.SearchStrategy) -> st.SearchStrategy:
    """Text that may open ``depth`` levels before anything else."""
    return st.tuples(st.integers(0, depth), st.lists(atoms, max_size=30)).map(lambda t: "[" * t[0] + "".join(t[1]))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), _deep(20_000, JSON_ATOMS)))
def test_json_loads_answers_as_the_standard_parser_or_raises_a_decode_error(data):
    try:
        expected = json.loads(data)
    except (RecursionError, ValueError) as exc:
        expected = exc
    try:
        got = textdata.json_loads(data)
    except UnicodeDecodeError:
        assert isinstance(expected, UnicodeDecodeError)
        return
    except json.JSONDecodeError:
        assert isinstance(expected, (RecursionError, ValueError))
        return
    assert not isinstance(expected, Exception)
    assert json.dumps(got) == json.dumps(expected)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.binary(max_size=200), _deep(5_000, TOML_ATOMS).map(lambda s: ("a = " + s).encode())))
def test_toml_load_answers_as_the_standard_parser_or_raises_a_decode_error(data):
    try:
        expected = tomllib.load(io.BytesIO(data))
    except (RecursionError, ValueError) as exc:
        expected = exc
    try:
        got = textdata.toml_load(io.BytesIO(data))
    except tomllib.TOMLDecodeError:
        assert isinstance(expected, (RecursionError, ValueError))
        return
    assert got == expected


@pytest.mark.parametrize("text,message", [
    ("[" * 100_000, "JSON nested deeper than this parser allows"),
    ('{"a": ' * 50_000 + "1" + "}" * 50_000, "JSON nested deeper than this parser allows"),
    ("[" + "9" * 5_000 + "]", "Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"),
])
def test_json_failures_are_decode_errors_with_a_plain_message(text, message):
    with pytest.raises(json.JSONDecodeError) as info:
        textdata.json_loads(text)
    assert str(info.value) == message
    with pytest.raises(json.JSONDecodeError):
        textdata.json_load(io.StringIO(text))


@pytest.mark.parametrize("data,message", [
    (b"a = " + b"[" * 5_000 + b"]" * 5_000, "TOML nested deeper than this parser allows"),
    (b"a = " + b"{b = " * 3_000 + b"1" + b"}" * 3_000, "TOML nested deeper than this parser allows"),
    (b"a = " + b"1" * 10_000, "Exceeds the limit (4300 digits) for integer string conversion: value has 10000 digits"),
    (b'name = "caf\xe9"', "not UTF-8 text (byte 11)"),
])
def test_toml_failures_are_decode_errors_with_a_plain_message(data, message):
    with pytest.raises(tomllib.TOMLDecodeError) as info:
        textdata.toml_load(io.BytesIO(data))
    assert str(info.value) == message


def test_a_hooks_refusal_stays_a_value_error_with_its_message():
    def no_constant(name):
        raise ValueError(f"{name} is not JSON")

    with pytest.raises(ValueError, match="^NaN is not JSON$"):
        textdata.json_loads("[NaN]", parse_constant=no_constant)
    assert textdata.json_loads('{"b": 1, "a": [2]}', object_pairs_hook=list) == [("b", 1), ("a", [2])]


def test_json_lines_numbers_the_lines_skips_blanks_and_names_a_bad_one():
    class Bad(ValueError):
        pass

    lines = ['{"a": 1}\n', "\n", "  \n", "[2]\n", "[[[" + "[" * 100_000 + "\n"]
    got = textdata.json_lines(lines, "h.jsonl", Bad)
    assert [next(got), next(got)] == [(1, {"a": 1}), (4, [2])]
    with pytest.raises(Bad, match=r"^h\.jsonl:5: not JSON \(JSON nested deeper than this parser allows\)$"):
        next(got)
