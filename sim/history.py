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

The lines not yet folded into the digest wait in a :class:`LineSink`: this pure one is the
reference; ``flk.sim._fasthistory`` (C, ``sim/_fasthistory.c``) is its compiled twin, the
registry entry ``line_sink`` of :mod:`flk.impl.core.accel` (chosen once; ``FLK_PURE``),
which writes a digest-only run's per-event lines (:meth:`History.recorder`) without a
Python frame per event -- the same bytes (tests/sim/test_fasthistory.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import zlib
from collections.abc import Iterable, Iterator
from json import encoder as _json_encoder
from pathlib import Path

from flk.impl.core import accel

from ..impl.core import textdata

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


def _row_spec(type: str, names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:  # noqa: A002
    """The line of an event of ``type`` with fields ``names`` (in call order) as constant text
    and slots: ``parts[0] + v(slots[0]) + parts[1] + ... + parts[-1]``, a slot -1 being
    ``t_us`` and ``i`` the ``i``-th value; the keys sorted once, the type written as text."""
    keys = sorted({"t_us", "type", *names})
    parts: list[str] = []
    slots: list[int] = []
    text = ""
    for i, key in enumerate(keys):
        text += ("{" if i == 0 else ",") + _json_encoder.encode_basestring(key) + ":"
        if key == "type":
            text += _json_encoder.encode_basestring(type)
            continue
        parts.append(text)
        slots.append(-1 if key == "t_us" else names.index(key))
        text = ""
    parts.append(text + "}")
    return tuple(parts), tuple(slots)


def _keeping(line, events: list, type: str, names: tuple[str, ...], many: bool):  # noqa: A002
    """A kept history's recorder of one event shape: ``line`` (the digest-only recorder of the
    shape, whose line is ``_dumps`` of the event) and the event dict appended to ``events``, its
    keys in :meth:`History.record`'s order (``t_us``, ``type``, then ``names``). ``many``:
    ``rec(t, rows)``, every row at one time; else ``rec(t, *values)``."""
    args = ", ".join(f"a{i}" for i in range(len(names)))
    ns = {"line": line, "append": events.append, "TYPE": type}
    items = ["'t_us': t_us", "'type': TYPE"]
    for i, name in enumerate(names):
        ns[f"K{i}"] = name  # field names travel as constants, never inside the source
        items.append(f"K{i}: a{i}")
    keep = "append({" + ", ".join(items) + "})"
    if many:
        src = (f"def rec(t, rows):\n    t_us = round(t * 1000000)\n    for {args + ',' if args else '()'} in rows:\n"
               f"        line(t, {args})\n        {keep}\n")
    else:
        src = f"def rec(t, {args}):\n    line(t, {args})\n    t_us = round(t * 1000000)\n    {keep}\n"
    exec(src, ns)  # noqa: S102 - source built above from indexes only
    return ns["rec"]


def _t_us(t) -> int:
    """An event's time in integer microseconds (what every line's ``t_us`` holds)."""
    return round(t * 1000000)


class LineSink:
    """The lines not yet folded into the digest, each followed by a newline; after every
    ``batch`` lines they go to ``flush(bytes)``. The pure reference of the compiled ``line_sink``
    (``sim/_fasthistory.c``: the same bytes, the same calls of ``flush``). ``t_us`` is the
    compiled sink's fallback for a time that is not a finite float (here every time is written
    by ``round(t * 1000000)``, what it computes).

    :meth:`recorder` makes a function writing one event shape (:func:`_row_spec`): one frame per
    event, each value inline when it is a str (escaped), an int or a bool, else through
    ``value`` (:func:`_value`) -- the text of ``_dumps``."""

    def __init__(self, flush, batch: int, value, t_us) -> None:
        if batch < 1:
            raise ValueError("line_sink: batch must be >= 1")
        self._lines: list[str] = []
        self.count = 0
        self._flush, self._batch, self._value, self._t_us = flush, batch, value, t_us

    def add(self, line: str) -> None:
        self._lines.append(line)
        self.count += 1
        if len(self._lines) >= self._batch:
            self._flush(self.take())

    def take(self) -> bytes:
        lines = self._lines
        if not lines:
            return b""
        lines.append("")  # every line ends in a newline
        chunk = "\n".join(lines).encode("utf-8")
        lines.clear()
        return chunk

    def recorder(self, parts: tuple[str, ...], slots: tuple[int, ...], many: bool):
        """``rec(t, *values)`` (``many``: ``rec(t, rows)``) appending the line of ``parts`` and
        ``slots`` per call (per row)."""
        if len(parts) != len(slots) + 1:
            raise ValueError("recorder: len(parts) must be len(slots) + 1")
        n = max(slots, default=-1) + 1
        args = [f"a{i}" for i in range(n)]
        ns = {"S": _json_encoder.encode_basestring, "V": self._value, "pending": self._lines,
              "sink": self, "flush": self._flush, "take": self.take, "T": "true", "F": "false"}
        text = []
        for i, slot in enumerate(slots):
            ns[f"P{i}"] = parts[i]  # constant text travels as a name, never inside the source
            if slot < 0:
                text.append(f"{{P{i}}}{{t_us}}")
            else:
                a = args[slot]
                text.append(f"{{P{i}}}{{S({a}) if (c := {a}.__class__) is str else {a} if c is int else "
                            f"(T if {a} else F) if c is bool else V({a})}}")
        ns["PEND"] = parts[-1]
        line = f"f'{''.join(text)}{{PEND}}'"

        def row(indent: str) -> str:
            return (f"{indent}pending.append({line})\n"
                    f"{indent}sink.count += 1\n"
                    f"{indent}if len(pending) >= {self._batch}:\n"
                    f"{indent}    flush(take())\n")

        if many:  # every row at one time: one loop
            src = ("def rec(t, rows):\n    t_us = round(t * 1000000)\n"
                   f"    for {', '.join(args) + ',' if args else '()'} in rows:\n{row('        ')}")
        else:
            src = f"def rec(t, {', '.join(args)}):\n    t_us = round(t * 1000000)\n{row('    ')}"
        exec(src, ns)  # noqa: S102 - source built above from indexes only (text travels as constants)
        return ns["rec"]


_compiled_line_sink = None  # the compiled LineSink maker (flk.sim._fasthistory.line_sink), or None: pure
accel.register("line_sink", "flk.sim._fasthistory", "flk.sim.history:LineSink",
               "tests/sim/test_fasthistory.py::test_compiled_line_sink_writes_the_reference_bytes")
accel.bind("line_sink", globals(), "_compiled_line_sink")


class _Fold:
    """Where folded lines go: the running SHA-256 and, once streaming, the compact file."""

    __slots__ = ("sha", "sink")

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.sink = None

    def __call__(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        if self.sink is not None:
            self.sink.write(chunk)


def _open_lines_writer(path: Path):
    """``(sink, raw)`` for a history file: ``raw`` the file opened for bytes and ``sink`` what the
    lines' bytes go to -- the compact format's gzip stream (level 1, no name, mtime 0) when the
    name ends in ``.gz``, else ``raw`` itself. Close ``sink`` first, then ``raw``."""
    raw = open(path, "wb")  # noqa: SIM115 - the caller closes it
    if path.name.endswith(".gz"):
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0), raw
    return raw, raw


class History:
    """Append-only list of events with a running digest."""

    def __init__(self, keep: bool = True) -> None:
        self._events: list[dict] = []
        self._folded = _Fold()  # the running digest (and the gzip stream of stream_to)
        make = _compiled_line_sink or LineSink
        self._pending = make(self._folded, _HASH_BATCH, _value, _t_us)  # lines not yet folded
        self.keep = keep
        self._sink = None  # a gzip stream the folded lines also go to (stream_to)
        self._sink_path: Path | None = None

    @property
    def count(self) -> int:
        """Events recorded so far."""
        return self._pending.count

    def stream_to(self, path: Path) -> None:
        """Write every line to ``path`` while the run goes (call it before the first event): the
        compact format when its name ends in ``.gz``, else plain lines -- the lines the digest
        folds, as they are folded, so no line waits for :meth:`write` (events are still kept
        when ``keep``, for the checkers). :meth:`close` finishes the file."""
        if self.count:
            raise ValueError("stream_to must come before the first event")
        path = Path(path)
        self._sink, self._sink_raw = _open_lines_writer(path)  # closed by close()
        self._folded.sink, self._sink_path = self._sink, path

    def close(self) -> None:
        """Fold what is pending and finish a streamed file (no-op without one)."""
        self._fold()
        if self._sink is not None:
            self._sink.close()
            self._sink_raw.close()  # (closed already when it is the sink: a no-op)
            self._sink = self._folded.sink = None

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
        if self.keep:
            self._events.append(event)
        self._pending.add(line)
        return event

    def recorder(self, type: str, names: tuple[str, ...]):  # noqa: A002
        """A function ``(t, *values)`` recording one event of ``type`` whose fields are ``names``
        in that order: ``record(t, type, **dict(zip(names, values)))`` -- on a digest-only
        history without the keyword dict, the shape tuple and the maker lookup per event (the
        simulator's per-request events; the same lines, tests/sim/test_fast_paths.py)."""
        names = tuple(names)
        if "t_us" in names:
            record = self.record

            def rec(t: float, *values) -> None:
                record(t, type, **dict(zip(names, values, strict=True)))

            return rec
        if len(set(names)) != len(names) or "type" in names:
            raise ValueError(f"field names must be distinct and not 'type': {names}")
        line = self._pending.recorder(*_row_spec(type, names), False)
        return _keeping(line, self._events, type, names, False) if self.keep else line

    def record_many(self, t: float, type: str, names: tuple[str, ...], rows: Iterable[tuple]) -> None:  # noqa: A002
        """``record(t, type, **dict(zip(names, row)))`` for every row (the final state:
        millions of events of one shape at one time)."""
        names = tuple(names)
        if "t_us" in names:
            for row in rows:
                self.record(t, type, **dict(zip(names, row, strict=True)))
            return
        if len(set(names)) != len(names) or "type" in names:
            raise ValueError(f"field names must be distinct and not 'type': {names}")
        if self.keep:
            _keeping(self._pending.recorder(*_row_spec(type, names), False), self._events, type, names, True)(t, rows)
        else:
            self._pending.recorder(*_row_spec(type, names), True)(t, rows)

    def _fold(self) -> None:
        chunk = self._pending.take()
        if chunk:
            self._folded(chunk)

    @property
    def digest(self) -> str:
        self._fold()
        return self._folded.sha.hexdigest()

    @property
    def events(self) -> list[dict]:
        return self._events

    def write(self, path: Path) -> None:
        """The history as ``path``: the compact format when it ends in ``.gz``, else plain lines.
        A history streamed to ``path`` (:meth:`stream_to`) is finished there instead; streamed
        elsewhere, its file is copied (the same format) or its kept events written."""
        path = Path(path)
        if self._sink_path is not None:
            self.close()
            if path.resolve() == self._sink_path.resolve():
                return
            if path.name.endswith(".gz") == self._sink_path.name.endswith(".gz"):
                shutil.copyfile(self._sink_path, path)
                return
            if not self.keep:
                raise ValueError(f"history was streamed to {self._sink_path.name} and not kept: "
                                 f"no {path.name} can be written")
        sink, raw = _open_lines_writer(path)
        try:
            for chunk in self._chunks():
                sink.write(chunk.encode("utf-8"))
        finally:
            sink.close()
            raw.close()

    def _chunks(self) -> Iterator[str]:
        """The kept events' lines, :data:`_HASH_BATCH` at a time, each line ending in a newline:
        the recorded lines (each is ``_dumps`` of its event; no line is held per event)."""
        events = self._events
        for i in range(0, len(events), _HASH_BATCH):
            yield "".join([_dumps(e) + "\n" for e in events[i:i + _HASH_BATCH]])

    def of_type(self, *types: str) -> Iterator[dict]:
        wanted = set(types)
        return (e for e in self._events if e["type"] in wanted)


def open_lines(path: Path, errors: str = "strict"):
    """A text stream over a history file, plain or compact (by its ``.gz`` suffix); ``errors``:
    what to do with bytes that are not UTF-8 (``"replace"``: show them, as ``flk sim diff`` does)."""
    path = Path(path)
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors=errors)
    return open(path, encoding="utf-8", errors=errors)  # noqa: SIM115 - the caller closes it


def find_history(run_dir: Path) -> Path:
    """The history file of a run directory: ``history.jsonl`` or the compact ``history.jsonl.gz``."""
    run_dir = Path(run_dir)
    for name in (PLAIN, COMPACT):
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: no {PLAIN} or {COMPACT}")


class HistoryError(ValueError):
    """A history file that cannot be read as events: the file, the 1-based line, what is wrong."""


def iter_history(path: Path) -> Iterator[dict]:
    """The events of a history file one at a time (a long study's history need not fit in memory).
    A line that is not a JSON object with a string ``type``, bytes that are not UTF-8 or a
    damaged or cut compact file is a :class:`HistoryError` naming the file and line."""
    number = 0
    try:
        with open_lines(path) as f:
            for number, event in textdata.json_lines(f, str(path), HistoryError):
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    raise HistoryError(f"{path}:{number}: not a history event (a JSON object with a string type)")
                yield event
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise HistoryError(f"{path}: unreadable after line {number}: {exc}") from None


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
