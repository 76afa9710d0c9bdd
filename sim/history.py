"""The run history: one JSON object per line, in simulated-time order.

Why: a history is the single source of truth for checkers, metrics, plots and
determinism. Each event is serialised canonically (sorted keys, no spaces) as
soon as it is recorded, and folded into a running SHA-256, so two runs are
identical exactly when their digests are. Times are integer microseconds of
simulated time (``t_us``) so no float formatting can differ.

Two file formats hold the same lines: ``history.jsonl`` (plain) and the compact
``history.jsonl.gz`` (:data:`COMPACT`), the same canonical lines gzip-compressed (level 1,
no name, mtime 0) and written *while the run goes* (:meth:`History.stream_to`), so a
long study holds no line in memory. The digest is defined over the canonical
(uncompressed) line stream, so both files of a run -- and a digest-only run -- have
the same digest; :func:`file_digest` recomputes it from either file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from json import encoder as _json_encoder
from pathlib import Path

PLAIN = "history.jsonl"
COMPACT = "history.jsonl.gz"
FORMATS = {"jsonl": PLAIN, "jsonl.gz": COMPACT}  # ``flk sim run --history-format`` -> file name
_GZIP_LEVEL = 1  # ~4x smaller than the plain file at ~140 MB/s; higher levels gain little on hex digests
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


def _row_recorder(history: History, type: str, names: tuple[str, ...], many: bool = False):  # noqa: A002
    """The function :meth:`History.recorder` gives a digest-only history (``many``: the loop
    :meth:`History.record_many` runs, ``(t, rows)``): one frame per event,
    the keys sorted once, the event type written as a constant, each value inline when it is a
    str (escaped), an int or a bool, else through :func:`_value` -- the text of ``_dumps``."""
    keys = sorted({"t_us", "type", *names})
    args = [f"a{i}" for i in range(len(names))]
    ns = {"S": _json_encoder.encode_basestring, "V": _value, "pending": history._unhashed, "history": history,
          "fold": history._fold, "T": "true", "F": "false"}
    parts = []
    for i, key in enumerate(keys):
        head = ("{" if i == 0 else ",") + _json_encoder.encode_basestring(key) + ":"
        if key == "type":
            head += _json_encoder.encode_basestring(type)
        ns[f"P{i}"] = head  # constant text travels as a name, never inside the source
        if key == "t_us":
            value = "{t_us}" if many else "{round(t * 1000000)}"
        elif key == "type":
            value = ""
        else:
            a = args[names.index(key)]
            value = (f"{{S({a}) if (c := {a}.__class__) is str else {a} if c is int else "
                     f"(T if {a} else F) if c is bool else V({a})}}")
        parts.append(f"{{P{i}}}{value}")
    line = f"f'{''.join(parts)}}}}}'"
    if many:  # every row at one time: one loop, the count added once
        src = (f"def rec(t, rows):\n"
               "    n, t_us = 0, round(t * 1000000)\n"
               f"    for {', '.join(args) + ',' if args else '()'} in rows:\n"
               f"        pending.append({line})\n"
               "        n += 1\n"
               f"        if len(pending) >= {_HASH_BATCH}:\n"
               "            history.count += n\n"
               "            n = 0\n"
               "            fold()\n"
               "    history.count += n\n")
    else:
        src = (f"def rec(t, {', '.join(args)}):\n"
               f"    pending.append({line})\n"
               "    history.count += 1\n"
               f"    if len(pending) >= {_HASH_BATCH}:\n"
               "        fold()\n")
    exec(src, ns)  # noqa: S102 - source built above from indexes only (text travels as constants)
    return ns["rec"]


class History:
    """Append-only list of events with a running digest."""

    def __init__(self, keep: bool = True) -> None:
        self._lines: list[str] = []
        self._events: list[dict] = []
        self._sha = hashlib.sha256()
        self._unhashed: list[str] = []  # lines not yet folded into the digest
        self.keep = keep
        self.count = 0
        self._sink = None  # a gzip stream the folded lines also go to (stream_to)
        self._sink_path: Path | None = None

    def stream_to(self, path: Path) -> None:
        """Write every line to ``path`` in the compact format while the run goes (call it
        before the first event); the lines are then not kept in memory (events still are when
        ``keep``, for the checkers). :meth:`close` finishes the file."""
        if self.count:
            raise ValueError("stream_to must come before the first event")
        path = Path(path)
        raw = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._sink = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0)
        self._sink_raw, self._sink_path = raw, path

    def close(self) -> None:
        """Fold what is pending and finish a streamed file (no-op without one)."""
        self._fold()
        if self._sink is not None:
            self._sink.close()
            self._sink_raw.close()
            self._sink = None

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
            if self._sink is None:
                self._lines.append(line)
            self._events.append(event)
        pending = self._unhashed
        pending.append(line)
        if len(pending) >= _HASH_BATCH:
            self._fold()
        return event

    def recorder(self, type: str, names: tuple[str, ...]):  # noqa: A002
        """A function ``(t, *values)`` recording one event of ``type`` whose fields are ``names``
        in that order: ``record(t, type, **dict(zip(names, values)))`` -- on a digest-only
        history without the keyword dict, the shape tuple and the maker lookup per event (the
        simulator's per-request events; the same lines, tests/sim/test_fast_paths.py)."""
        names = tuple(names)
        if self.keep or "t_us" in names:
            record = self.record

            def rec(t: float, *values) -> None:
                record(t, type, **dict(zip(names, values, strict=True)))

            return rec
        if len(set(names)) != len(names) or "type" in names:
            raise ValueError(f"field names must be distinct and not 'type': {names}")
        return _row_recorder(self, type, names)

    def record_many(self, t: float, type: str, names: tuple[str, ...], rows: Iterable[tuple]) -> None:  # noqa: A002
        """``record(t, type, **dict(zip(names, row)))`` for every row (the final state:
        millions of events of one shape at one time)."""
        if self.keep or "t_us" in names:
            for row in rows:
                self.record(t, type, **dict(zip(names, row, strict=True)))
            return
        if len(set(names)) != len(names) or "type" in names:
            raise ValueError(f"field names must be distinct and not 'type': {names}")
        _row_recorder(self, type, tuple(names), many=True)(t, rows)

    def _fold(self) -> None:
        pending = self._unhashed
        if pending:
            pending.append("")  # every line ends in a newline
            chunk = "\n".join(pending).encode("utf-8")
            self._sha.update(chunk)
            if self._sink is not None:
                self._sink.write(chunk)
            pending.clear()

    @property
    def digest(self) -> str:
        self._fold()
        return self._sha.hexdigest()

    @property
    def events(self) -> list[dict]:
        return self._events

    def write(self, path: Path) -> None:
        """The history as ``path``: the compact format when it ends in ``.gz``, else plain lines.
        A history streamed to ``path`` (:meth:`stream_to`) is finished there instead."""
        path = Path(path)
        if self._sink_path is not None:
            self.close()
            if path.resolve() != self._sink_path.resolve():
                raise ValueError(f"history was streamed to {self._sink_path.name}, not {path.name}")
            return
        if path.name.endswith(".gz"):
            with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                        compresslevel=_GZIP_LEVEL, mtime=0) as f:
                for i in range(0, len(self._lines), _HASH_BATCH):
                    f.write(("\n".join(self._lines[i:i + _HASH_BATCH]) + "\n").encode("utf-8"))
            return
        with open(path, "w", encoding="utf-8") as f:
            for line in self._lines:
                f.write(line)
                f.write("\n")

    def of_type(self, *types: str) -> Iterator[dict]:
        wanted = set(types)
        return (e for e in self._events if e["type"] in wanted)


def open_lines(path: Path):
    """A text stream over a history file, plain or compact (by its ``.gz`` suffix)."""
    path = Path(path)
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115 - the caller closes it


def find_history(run_dir: Path) -> Path:
    """The history file of a run directory: ``history.jsonl`` or the compact ``history.jsonl.gz``."""
    run_dir = Path(run_dir)
    for name in (PLAIN, COMPACT):
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: no {PLAIN} or {COMPACT}")


def iter_history(path: Path) -> Iterator[dict]:
    """The events of a history file one at a time (a long study's history need not fit in memory)."""
    with open_lines(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_history(path: Path) -> list[dict]:
    return list(iter_history(path))


def file_digest(path: Path) -> str:
    """The digest of a history file, plain or compact: SHA-256 of its canonical line stream
    (what ``results.json`` records as ``digest``)."""
    sha = hashlib.sha256()
    with open(path, "rb") as raw:
        f = gzip.GzipFile(fileobj=raw, mode="rb") if Path(path).name.endswith(".gz") else raw
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def digest_of(events: Iterable[dict]) -> str:
    sha = hashlib.sha256()  # line by line, as History.record folds them
    for e in events:
        sha.update(_dumps(e).encode("utf-8"))
        sha.update(b"\n")
    return sha.hexdigest()
