"""JSON and TOML text the process did not write itself -- a file a user names, a run folder or a
state file on disk, an HTTP body, a peer's or a server's answer -- parsed so that every failure is
the format's own decode error, a ``ValueError``, and never another exception.

The standard parsers let three kinds of bad text escape as something else, each a traceback
where a caller that handles ``ValueError`` meant to print one line or answer a problem:

* nesting deeper than the interpreter's recursion limit (``[[[[...``, ``a = [[[[...``,
  ``a = {b = {b = ...``): ``RecursionError``;
* an integer of more digits than ``sys.get_int_max_str_digits()`` allows: a plain ``ValueError``
  (not the decode error a caller of ``tomllib`` catches);
* TOML bytes that are not UTF-8: ``UnicodeDecodeError``.

:func:`json_loads` raises ``json.JSONDecodeError`` for the first two (and for a ``ValueError``
raised by a hook such as ``parse_constant``, its message kept); bytes that are not UTF-8 stay the
``UnicodeDecodeError`` that ``json.loads`` raises (a ``ValueError`` too). :func:`toml_loads` and
:func:`toml_load` raise ``tomllib.TOMLDecodeError`` for all three. Every parse of such text in flk
goes through here (``tests/quality/test_text_parsing.py``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Iterator
from typing import IO, Any

TOO_DEEP = "nested deeper than this parser allows"


def _message(exc: ValueError) -> str:
    """A ``ValueError``'s text without Python's advice to the programmer (the digit limit's
    "; use sys.set_int_max_str_digits() to increase the limit")."""
    return str(exc).split("; use sys.", 1)[0]


def _json_error(message: str) -> json.JSONDecodeError:
    err = json.JSONDecodeError(message, "", 0)
    err.args = (message,)  # no "line 1 column 1": where the parser gave up is not known
    return err


def json_loads(data: str | bytes | bytearray, **kw: Any) -> Any:
    """``json.loads(data, **kw)``; every failure a ``ValueError`` (see the module's text)."""
    try:
        return json.loads(data, **kw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except RecursionError:
        raise _json_error(f"JSON {TOO_DEEP}") from None
    except ValueError as exc:  # an integer past the digit limit; a hook's refusal
        raise _json_error(_message(exc)) from None


def json_load(fh: IO, **kw: Any) -> Any:
    """:func:`json_loads` of a file object's whole content."""
    return json_loads(fh.read(), **kw)


def json_lines(lines: Iterable[str], where: str, error: type[ValueError] = ValueError) -> Iterator[tuple[int, Any]]:
    """(1-based line number, value) of each non-blank line of JSON Lines text; a line that is
    not JSON raises ``error`` (a ``ValueError`` class) naming ``where:number``."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                yield number, json_loads(line)
            except ValueError as exc:
                raise error(f"{where}:{number}: not JSON ({exc})") from None


def toml_loads(text: str) -> dict[str, Any]:
    """``tomllib.loads(text)``; every failure a ``tomllib.TOMLDecodeError``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except RecursionError:
        raise tomllib.TOMLDecodeError(f"TOML {TOO_DEEP}") from None
    except ValueError as exc:  # an integer past the digit limit
        raise tomllib.TOMLDecodeError(_message(exc)) from None


def toml_load(fh: IO[bytes]) -> dict[str, Any]:
    """:func:`toml_loads` of a binary file object's content, which must be UTF-8 (TOML's rule)."""
    data = fh.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise tomllib.TOMLDecodeError(f"not UTF-8 text (byte {exc.start})") from None
    return toml_loads(text)
