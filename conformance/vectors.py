"""Loading the frozen test vectors and decoding their inputs.

Why this module exists: the conformance runner, the pytest plugin and the
reference adapters all need the same two things -- the vector files (shipped
inside the package as ``flk.spec`` data, with a fallback to the repository's
``spec/vectors`` for a source checkout) and the ``{"f64": "<16 hex digits>"}``
float encoding of spec/ARCHITECTURE.md ("Test vectors and conformance ops").

A vector file is ``{"operation", "profile", "notes": {flag: text},
"testGroups": [{"comment", "tests": [{"tcId", "comment", "flags", "input",
"result", "expected"}]}]}``; :func:`load_cases` flattens the groups into
:class:`Case` objects with a stable ``case_id`` of ``<operation>.<profile>#<tcId>``.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from flk.impl.core import textdata
from flk.impl.core.errors import InvalidInput

_HEX = set("0123456789abcdef")


@dataclass(frozen=True)
class Case:
    """One test vector, flattened out of its file and group."""

    operation: str
    profile: str
    tc_id: int
    comment: str
    flags: tuple[str, ...]
    input: Mapping[str, Any]
    result: str  # "valid" | "invalid" | "acceptable"
    expected: Mapping[str, Any] | None
    group_comment: str = ""
    source: str = ""
    notes: Mapping[str, str] = field(default_factory=dict)
    label: str = ""  # a case the runner builds itself (self-consistent probes): its id after '#'

    @property
    def case_id(self) -> str:
        return f"{self.operation}.{self.profile}#{self.label or self.tc_id}"

    @property
    def acceptable(self) -> bool:
        """Wycheproof's third result: the expected output and an ``invalid_input``
        refusal are both acceptable (legacy tolerance, documented leniency)."""
        return self.result == "acceptable"

    @property
    def expects_error(self) -> bool:
        """True when the adapter must answer ``ok: false`` (kind ``invalid_input``).

        ``result: invalid`` with an ``expected`` output (the ``verify_*`` ops:
        ``{"valid": false}``) is answered ``ok: true`` with that output.
        """
        return self.result == "invalid" and not self.expected


def vectors_dir(override: str | pathlib.Path | None = None) -> pathlib.Path:
    """The directory holding ``*.json`` vector files.

    Order: ``override``; the installed ``flk.spec`` package data
    (``importlib.resources``); the repository's ``spec/vectors``.
    """
    if override is not None:
        p = pathlib.Path(override)
        if not p.is_dir():
            raise InvalidInput("vectors", f"{p} is not a directory")
        return p
    try:
        res = resources.files("flk.spec") / "vectors"
        if res.is_dir():
            p = pathlib.Path(str(res))
            if p.is_dir() and any(p.glob("*.json")):
                return p
    except (ModuleNotFoundError, TypeError, FileNotFoundError):
        pass
    repo = pathlib.Path(__file__).resolve().parent.parent / "spec" / "vectors"
    if repo.is_dir():
        return repo
    raise InvalidInput("vectors", "no vector files found (neither flk.spec/vectors nor spec/vectors)")


def vector_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """Vector files in ``directory``, sorted by name (schema files excluded)."""
    return sorted(p for p in directory.glob("*.json") if not p.name.endswith(".schema.json"))


# jsonschema's optional backend of the "iri" formats: where it is installed (Jupyter's nbformat
# asks for jsonschema[format-nongpl]) ``import jsonschema`` imports it, and it builds ~38 Lark
# parsers at import -- 1.5 of the 1.7 s that import took here, in every run of the kit (known
# upstream: "Lazy import rfc3987_syntax" in jsonschema's tracker). The vectors' schema is
# checked without format assertions (no FormatChecker), so that backend is never used here:
# :func:`_import_jsonschema` leaves it out.
_UNUSED_FORMAT_BACKENDS = ("rfc3987_syntax",)


def _import_jsonschema():
    """``jsonschema``; when this is its first import, without :data:`_UNUSED_FORMAT_BACKENDS`
    (an ImportError for its optional imports, during this import only: a later ``import
    rfc3987_syntax`` anywhere works). Its FormatChecker then lacks the two IRI formats in
    this process; the kit asserts no formats."""
    blocked = [] if "jsonschema" in sys.modules else [m for m in _UNUSED_FORMAT_BACKENDS if m not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "no such module"
    try:
        import jsonschema
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return jsonschema


@functools.lru_cache(maxsize=1)
def _schema_validator():
    """The validator of spec/vectors.schema.json (next to the vectors), or None if absent."""
    jsonschema = _import_jsonschema()

    for base in (vectors_dir().parent, pathlib.Path(__file__).resolve().parent.parent / "spec"):
        path = base / "vectors.schema.json"
        if path.is_file():
            return jsonschema.Draft202012Validator(textdata.json_loads(path.read_text(encoding="utf-8")))
    return None


def _load_file(path: pathlib.Path) -> dict:
    """One vector file, checked against vectors.schema.json (a bad file is InvalidInput)."""
    try:
        doc = textdata.json_loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(str(path), f"unreadable vector file: {exc}") from None
    if not isinstance(doc, dict) or "operation" not in doc or "testGroups" not in doc:
        raise InvalidInput(str(path), "not a vector file (needs operation and testGroups)")
    validator = _schema_validator()
    if validator is not None:
        error = next(iter(validator.iter_errors(doc)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            raise InvalidInput(str(path), f"does not follow vectors.schema.json at {where}: {error.message[:200]}")
    return doc


# Flags that make a valid vector "acceptable": the documented tolerances (PROTOCOL.md, Flags).
ACCEPTABLE_FLAGS = {
    "legacy-extension": "the legacy-0.1 profile's definition goes beyond the seed agent here; an SDK that "
                        "reproduces the agent may refuse the input (invalid_input)",
}


def _result(t: Mapping[str, Any], flags: tuple[str, ...]) -> str:
    result = t.get("result", "valid")
    if result == "valid" and set(flags) & set(ACCEPTABLE_FLAGS):
        return "acceptable"
    return result


def load_cases(
    directory: pathlib.Path | None = None,
    profile: str | None = None,
    operations: Iterable[str] | None = None,
    flags: Iterable[str] | None = None,
) -> list[Case]:
    """Every case of every vector file, filtered by profile, operation and flags.

    ``flags`` keeps a case that carries at least one of them. Order: file name,
    then the order of the file (groups, then tests).
    """
    directory = vectors_dir(directory)
    ops = set(operations) if operations else None
    wanted = set(flags) if flags else None
    cases: list[Case] = []
    for path in vector_files(directory):
        doc = _load_file(path)
        if profile is not None and doc.get("profile") != profile:
            continue
        if ops is not None and doc["operation"] not in ops:
            continue
        notes = doc.get("notes") or {}
        for group in doc["testGroups"]:
            for t in group.get("tests", []):
                case_flags = tuple(t.get("flags") or ())
                if wanted is not None and not wanted.intersection(case_flags):
                    continue
                cases.append(
                    Case(
                        operation=doc["operation"],
                        profile=doc.get("profile", "v1"),
                        tc_id=int(t["tcId"]),
                        comment=t.get("comment", ""),
                        flags=case_flags,
                        input=t.get("input", {}),
                        result=_result(t, case_flags),
                        expected=t.get("expected"),
                        group_comment=group.get("comment", ""),
                        source=path.name,
                        notes=notes,
                    )
                )
    return cases


def all_notes(cases: Iterable[Case]) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in cases:
        for k, v in c.notes.items():
            out.setdefault(k, v)
    return out


def decode_f64(hex_text: object, where: str = "f64") -> float:
    """The double whose IEEE-754 bits are ``hex_text`` (16 lowercase hex digits)."""
    if not isinstance(hex_text, str) or len(hex_text) != 16 or not set(hex_text) <= _HEX:
        raise InvalidInput(where, "f64 must be 16 lowercase hexadecimal digits")
    return struct.unpack(">d", bytes.fromhex(hex_text))[0]


def encode_f64(x: float) -> dict[str, str]:
    """The ``{"f64": hex}`` form of a float (IEEE-754 bits, big-endian)."""
    return {"f64": struct.pack(">d", x).hex()}


def json_number(x: Any) -> Any:
    """A float as vector JSON: a plain number when JSON carries it exactly
    (finite, not -0.0), else its ``f64`` form (inverse of :func:`decode_input`)."""
    if isinstance(x, float) and (not math.isfinite(x) or (x == 0.0 and math.copysign(1.0, x) < 0)):
        return encode_f64(x)
    return x


def decode_input(value: Any, where: str = "input") -> Any:
    """Replace every ``{"f64": hex}`` object (and only those) by its float."""
    if isinstance(value, dict):
        if len(value) == 1 and "f64" in value:
            return decode_f64(value["f64"], where)
        return {k: decode_input(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [decode_input(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
