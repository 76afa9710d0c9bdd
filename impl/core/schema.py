"""The one checker of data documents (scenario files, operator policies): fields, kinds, key paths.

Why this module exists: scenarios and policies are data (TOML) checked against
one schema each, and both schemas are lists of :class:`Field` rows checked by
the same rules -- no unknown key (with a "did you mean"), every required key
present, every value of its kind and inside its bounds. Both
:mod:`flk.sim.schema` and :mod:`flk.impl.operator.policy` declare their rows
here and add only the kinds that are theirs (latency distributions, region
names; shard rings), so a rule and its message are written once.

Rules:

* a problem is a :class:`SchemaError` (or the :class:`Engine`'s subclass of
  it) whose ``key`` is the dotted key path from the document's root (list
  items by index from 0) and whose ``reason`` says what is wrong; nothing else
  is ever raised, whatever nested dicts, lists and scalars come in;
* a value ``None`` is "not given" unless the field is required;
* a ``table`` field with its own ``fields`` is checked recursively.

Kinds (``Field.kind``) known here: ``str`` (``choices``), ``bool``, ``int``
(not a bool, not 2.5; bounds), ``number`` (finite int or float; bounds),
``str_list`` (non-empty strings; ``choices``), ``list`` (items checked by the
caller), ``table`` (``fields``: checked recursively), ``tables`` (a list of
tables, each checked against ``fields``). An engine adds more.

An engine made with ``others_pass=True`` checks the keys it knows and lets any
other key pass, at every depth: for documents flk reads back (a run's
``results.json``, a migration state) that a later version may have written
with more keys. Scenario files and policies keep the default: an unknown key is
an error there (a typo).

Protocol-free and without I/O: it reads nothing but its arguments.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class SchemaError(ValueError):
    """A document that does not fit its schema; ``key`` is the key path, ``reason`` what is wrong."""

    def __init__(self, key: str, reason: str, source: str = "") -> None:
        self.key, self.reason, self.source = key, reason, source
        super().__init__(f"{source + ': ' if source else ''}{key}{self.annotate(key)}: {reason}")

    def __reduce__(self):  # pickled as __init__'s arguments: a worker process's error reaches its pool intact
        return type(self), (self.key, self.reason, self.source)

    @classmethod
    def annotate(cls, key: str) -> str:
        """Text after the key path in the message (a subclass may count list items for people)."""
        return ""


@dataclass(frozen=True)
class Field:
    """One key: its value kind, default (``None``: optional, no default), meaning and bounds."""

    name: str
    kind: str
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    required: bool = False
    fields: tuple = ()  # a nested table's own fields (kind "table"): checked recursively


def join(path: str, key: Any) -> str:
    """The key path of ``key`` inside ``path`` (the root is the empty path)."""
    text = key if isinstance(key, str) and key else show(key)  # an empty key is shown as ''
    return f"{path}.{text}" if path else text


def type_name(value: Any) -> str:
    """The kind of ``value`` in a message's words; JSON documents read into the engine can hold
    ``null`` (Python ``None``), which TOML has no word for."""
    return {bool: "a boolean", int: "an integer", float: "a non-integer number", str: "a string",
            list: "a list", dict: "a table", type(None): "null"}.get(type(value), type(value).__name__)


def got(value: Any) -> str:
    """A wrong value in a message: its kind and its text ("an integer 1"); null is only "null"."""
    return "null" if value is None else f"{type_name(value)} {show(value)}"


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a message: cut at ``limit`` characters; never raises (a huge int's
    repr can)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def did_you_mean(word: Any, choices) -> str:
    """`` -- did you mean 'x'?`` for the closest of ``choices`` (or nothing)."""
    close = difflib.get_close_matches(word if isinstance(word, str) else show(word), [str(c) for c in choices],
                                      n=1, cutoff=0.6)
    return f" -- did you mean {close[0]!r}?" if close else ""


# a kind's checker: (engine, value, field, key path, caller's context) -> None or raise
Checker = Callable[["Engine", Any, Field, str, Any], None]


def _bounds(e: Engine, value: float, spec: Field, path: str) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise e.error(path, f"must be >= {spec.minimum:g}, got {show(value)}")
    if spec.maximum is not None and value > spec.maximum:
        raise e.error(path, f"must be <= {spec.maximum:g}, got {show(value)}")


def _bool(e: Engine, value: Any, spec: Field, path: str, ctx: Any) -> None:
    if not isinstance(value, bool):
        raise e.error(path, f"must be true or false, got {got(value)}")


def _int(e: Engine, value: Any, spec: Field, path: str, ctx: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise e.error(path, f"must be an integer, got {got(value)}")
    _bounds(e, value, spec, path)


def _number(e: Engine, value: Any, spec: Field, path: str, ctx: Any) -> None:
    if not is_number(value):
        if isinstance(value, float):  # nan, inf: a number, not a finite one
            raise e.error(path, f"must be a finite number, got {show(value)}")
        raise e.error(path, f"must be a number, got {got(value)}")
    _bounds(e, value, spec, path)


def _str(e: Engine, value: Any, spec: Field, path: str, ctx: Any) -> None:
    if not isinstance(value, str):
        raise e.error(path, f"must be a string, got {got(value)}")
    if spec.choices and value not in spec.choices:
        raise e.error(path, f"must be one of {', '.join(map(str, spec.choices))}, got {show(value)}")


def _str_list(e: Engine, value: Any, spec: Field, path: str, ctx: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise e.error(path, "must be a list of non-empty strings")
    for item in value:
        if spec.choices and item not in spec.choices:
            raise e.error(path, f"unknown {show(item)} (known: {', '.join(map(str, spec.choices))})")


def _list(e: Engine, value: Any, spec: Field, path: str, ctx: Any) -> None:
    if not isinstance(value, list):
        raise e.error(path, f"must be a list, got {type_name(value)}")


def _table(e: Engine, value: Any, spec: Field, path: str, ctx: Any) -> None:
    if not isinstance(value, Mapping):
        raise e.error(path, f"must be a table, got {type_name(value)}")
    if spec.fields:
        e.check_table(value, spec.fields, path, ctx)


def _tables(e: Engine, value: Any, spec: Field, path: str, ctx: Any) -> None:
    _list(e, value, spec, path, ctx)
    for i, item in enumerate(value):
        e.check_table(item, spec.fields, join(path, i), ctx)


BASE_KINDS: dict[str, Checker] = {"bool": _bool, "int": _int, "number": _number, "str": _str,
                                  "str_list": _str_list, "list": _list, "table": _table, "tables": _tables}


class Engine:
    """The base kinds plus a caller's own, raising ``error`` (a :class:`SchemaError` subclass)."""

    def __init__(self, kinds: Mapping[str, Checker] | None = None, error: type[SchemaError] = SchemaError,
                 others_pass: bool = False) -> None:
        self.kinds = {**BASE_KINDS, **(kinds or {})}
        self.error = error
        self.others_pass = others_pass  # keys no field names pass (documents read back), at every depth

    def check_value(self, value: Any, spec: Field, path: str, ctx: Any = None) -> None:
        """Raise ``self.error`` unless ``value`` fits ``spec``."""
        checker = self.kinds.get(spec.kind)
        if checker is None:  # pragma: no cover - a schema bug, not user input
            raise AssertionError(f"unknown field kind {spec.kind!r}")
        checker(self, value, spec, path, ctx)

    def check_table(self, table: Any, fields: Sequence[Field], path: str, ctx: Any = None,
                    ignore: Sequence[str] = ()) -> None:
        """No unknown key (``ignore`` lists keys the caller checks), every required key present,
        every value of its kind."""
        if not isinstance(table, Mapping):
            raise self.error(path or "(document)", f"must be a table, got {type_name(table)}")
        by_name = {f.name: f for f in fields}
        for key in table:
            if key not in by_name and key not in ignore and not self.others_pass:
                known = ", ".join(sorted(by_name))
                raise self.error(join(path, key), f"unknown key{did_you_mean(key, by_name)} (known: {known})")
        for spec in fields:
            if spec.name not in table or (table[spec.name] is None and not spec.required):
                if spec.required:
                    raise self.error(join(path, spec.name), "missing (required)")
                continue
            self.check_value(table[spec.name], spec, join(path, spec.name), ctx)

    def with_defaults(self, table: Mapping, fields: Sequence[Field]) -> dict:
        """A checked table with every field present: its value, else its default (``None``: unset);
        nested tables with their own fields filled in too."""
        out: dict = {}
        for f in fields:
            value = table.get(f.name)
            if f.kind == "table" and f.fields:
                out[f.name] = self.with_defaults(value or {}, f.fields)
            elif value is not None:
                out[f.name] = value
            else:
                out[f.name] = list(f.default) if isinstance(f.default, list) else f.default
        return out


def describe_default(spec: Field) -> str:
    """A field's default as the reference tables print it."""
    import json

    if spec.required:
        return "required"
    if spec.default is None:
        return "unset"
    if isinstance(spec.default, bool):
        return "true" if spec.default else "false"
    if isinstance(spec.default, dict):
        inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in spec.default.items())
        return "{ " + inner + " }"
    return repr(spec.default).replace("'", '"')


def describe_kind(spec: Field) -> str:
    """A field's kind, choices and bounds as the reference tables print them."""
    out = spec.kind
    if spec.choices:
        out += " (" + " \\| ".join(map(str, spec.choices)) + ")"
    bounds = []
    if spec.minimum is not None:
        bounds.append(f">= {spec.minimum:g}")
    if spec.maximum is not None:
        bounds.append(f"<= {spec.maximum:g}")
    if bounds:
        out += " " + ", ".join(bounds)
    return out
