"""The run history: one JSON object per line, in simulated-time order.

Why: a history is the single source of truth for checkers, metrics, plots and
determinism. Each event is serialised canonically (sorted keys, no spaces) as
soon as it is recorded, and folded into a running SHA-256, so two runs are
identical exactly when their digests are. Times are integer microseconds of
simulated time (``t_us``) so no float formatting can differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from json import encoder as _json_encoder
from pathlib import Path

_HASH_BATCH = 512  # lines folded into the digest at once (SHA-256 of the concatenation: the same digest)


def _json_dumps(event: dict) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _make_dumps():
    """``_json_dumps`` without building a ``JSONEncoder`` per call: the same C encoder
    ``json.dumps`` uses, made once with the same options (byte-identical lines; no
    circular-reference check -- events are trees of plain values)."""
    make = _json_encoder.c_make_encoder
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return _json_dumps
    encode = make(None, json.JSONEncoder().default, _json_encoder.encode_basestring, None, ":", ",",
                  True, False, False)
    join = "".join

    def dumps(event: dict) -> str:
        return join(encode(event, 0))

    return dumps


_dumps = _make_dumps()


def _float_text(v: float) -> str:
    if v != v or v in (_INF, -_INF):
        raise ValueError("Out of range float values are not JSON compliant")
    return float.__repr__(v)


_INF = float("inf")
_VALUE_TEXT = {str: _json_encoder.encode_basestring, int: int.__repr__, float: _float_text,
               bool: lambda v: "true" if v else "false", type(None): lambda v: "null"}


def _value(v, _text=_VALUE_TEXT.get) -> str:
    """One JSON value exactly as ``_dumps`` writes it (nested values: by ``_dumps`` itself)."""
    text = _text(type(v))
    return text(v) if text is not None else _dumps(v)


_LINE_MAKERS: dict[tuple, object] = {}


def _line_maker(shape: tuple, first, by_position: bool = False):
    """A function ``(t_us, type, fields) -> line`` for events of ``shape`` = (type, *field
    names in call order): the keys sorted once, the line one f-string -- the same text as
    ``_dumps`` of the event dict (tests/sim/test_lean.py checks it), without the dict. A
    field that was a str (an int) in ``first`` is written inline while it stays one; any
    other value goes through :func:`_value`. ``by_position``: ``fields`` (and ``first``)
    are rows of values in the order of the names."""
    keys = sorted({"t_us", "type", *shape[1:]})
    ns = {"V": _value, "S": _json_encoder.encode_basestring}
    loads, parts = [], []
    for i, key in enumerate(keys):
        ns[f"P{i}"] = ("{" if i == 0 else ",") + _json_encoder.encode_basestring(key) + ":"
        ns[f"K{i}"] = key
        if key == "t_us":
            value = "t_us"
        elif key == "type":
            value = "S(type)"
        else:
            j = shape.index(key) - 1
            loads.append(f"    a{i} = fields[{j}]\n" if by_position else f"    a{i} = fields[K{i}]\n")
            kind = (first[j] if by_position else first[key]).__class__
            value = (f"S(a{i}) if a{i}.__class__ is str else V(a{i})" if kind is str else
                     f"a{i} if a{i}.__class__ is int else V(a{i})" if kind is int else f"V(a{i})")
        parts.append(f"{{P{i}}}{{{value}}}")
    src = "def make(t_us, type, fields):\n" + "".join(loads) + "    return f'" + "".join(parts) + "}}'\n"
    exec(src, ns)  # noqa: S102 - source built above from indexes only (keys travel as constants)
    return ns["make"]


class History:
    """Append-only list of events with a running digest."""

    def __init__(self, keep: bool = True) -> None:
        self._lines: list[str] = []
        self._events: list[dict] = []
        self._sha = hashlib.sha256()
        self._unhashed: list[str] = []  # lines not yet folded into the digest
        self.keep = keep
        self.count = 0

    def record(self, t: float, type: str, **fields) -> dict | None:  # noqa: A002 - "type" is the field name
        """Append one event; returns it as a dict when the history is kept (else None:
        a digest-only history builds no dict)."""
        t_us = int(round(t * 1_000_000))
        event = None
        if self.keep or "t_us" in fields:
            event = {"t_us": t_us, "type": type, **fields}
            line = _dumps(event)
        else:
            shape = (type, *fields)
            make = _LINE_MAKERS.get(shape)
            if make is None:
                make = _LINE_MAKERS[shape] = _line_maker(shape, fields)
            line = make(t_us, type, fields)
        self.count += 1
        if self.keep:
            self._lines.append(line)
            self._events.append(event)
        pending = self._unhashed
        pending.append(line)
        if len(pending) >= _HASH_BATCH:
            self._fold()
        return event

    def record_many(self, t: float, type: str, names: tuple[str, ...], rows: Iterable[tuple]) -> None:  # noqa: A002
        """``record(t, type, **dict(zip(names, row)))`` for every row (the final state:
        millions of events of one shape at one time)."""
        if self.keep or "t_us" in names:
            for row in rows:
                self.record(t, type, **dict(zip(names, row, strict=True)))
            return
        t_us, shape = int(round(t * 1_000_000)), ("#row", type, *names)
        make = _LINE_MAKERS.get(shape)
        pending = self._unhashed
        for row in rows:
            if make is None:
                make = _LINE_MAKERS[shape] = _line_maker((type, *names), row, by_position=True)
            pending.append(make(t_us, type, row))
            self.count += 1
            if len(pending) >= _HASH_BATCH:
                self._fold()

    def _fold(self) -> None:
        pending = self._unhashed
        if pending:
            pending.append("")  # every line ends in a newline
            self._sha.update("\n".join(pending).encode("utf-8"))
            pending.clear()

    @property
    def digest(self) -> str:
        self._fold()
        return self._sha.hexdigest()

    @property
    def events(self) -> list[dict]:
        return self._events

    def write(self, path: Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for line in self._lines:
                f.write(line)
                f.write("\n")

    def of_type(self, *types: str) -> Iterator[dict]:
        wanted = set(types)
        return (e for e in self._events if e["type"] in wanted)


def read_history(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def digest_of(events: Iterable[dict]) -> str:
    sha = hashlib.sha256()  # line by line, as History.record folds them
    for e in events:
        sha.update(_dumps(e).encode("utf-8"))
        sha.update(b"\n")
    return sha.hexdigest()
