"""One seam for the compiled fast paths: the registry of accelerated functions.

Why this module exists: the compiled extensions (``flk.impl.core._fastcore``,
``flk.impl.verifier._fastverify`` and ``flk.impl.dedup._fastsqlite``, C) answer the common case of a few hot
functions and hand everything else to the readable pure-Python code, which
stays the reference. Which path runs is decided once, here, at import:
``FLK_PURE`` (any value but ``0``) or an extension that was not built (an
install without a C compiler) means the pure path. Every accelerated function
is an :class:`Accelerated` entry -- its name, the extension that provides it,
its pure reference (the oracle) and the differential test that proves both
agree -- registered by the package that owns it (the core's entries below, the
verifier's in ``flk.impl.verifier.accelerated``, the SQLite store's rows in
``flk.impl.dedup.sqlite``, the simulator's history lines in ``flk.sim.history``).

Consumers get a compiled function only through :func:`bind`: it returns the
compiled callable (or the pure value, normally None: "take the pure path") and
records the module global that keeps it, so a hot call costs one global load.
Tests switch paths with :func:`pure` (every binding routed to the reference
and back) and check that a differential test really runs the compiled code
with :func:`counting`; nothing else rebinds those globals.
``tests/quality/test_accel_registry.py`` fails when an entry names no existing
test marked ``@pytest.mark.differential(<entry>)``, or when an extension
exports a function no entry registers.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

PURE_REQUESTED = os.environ.get("FLK_PURE", "") not in ("", "0")  # read once, at import

CORE_EXTENSION = "flk.impl.core._fastcore"


@dataclass(frozen=True)
class Accelerated:
    """One accelerated function: ``compiled`` answers the common case (None from
    it means "the reference decides", except for total functions), ``reference``
    (``module:qualname``) is the oracle, ``test`` (``tests/...py::name``) the
    differential test that compares them."""

    name: str
    extension: str
    reference: str
    test: str
    compiled: Callable[..., Any] | None

    def resolve_reference(self) -> Callable[..., Any]:
        module, _, qualname = self.reference.partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj


_extensions: dict[str, ModuleType | None] = {}
_entries: dict[str, Accelerated] = {}
_active: dict[str, Callable[..., Any] | None] = {}  # what the bindings hold now (None: the pure path)
_bindings: list[tuple[dict, str, str, Any]] = []  # (module globals, global name, entry, value on the pure path)


def extension(dotted: str) -> ModuleType | None:
    """The compiled module ``dotted``, or None: ``FLK_PURE`` set, or not built."""
    if dotted not in _extensions:
        module = None
        if not PURE_REQUESTED:
            try:
                module = importlib.import_module(dotted)
            except ImportError:  # installed without a C compiler: the pure code is complete
                module = None
        _extensions[dotted] = module
    return _extensions[dotted]


def register(name: str, extension_name: str, reference: str, test: str) -> Accelerated:
    """Add one entry (idempotent for the same definition; a name is registered once)."""
    module = extension(extension_name)
    compiled = None if module is None else getattr(module, name, None)
    entry = Accelerated(name, extension_name, reference, test, compiled)
    known = _entries.get(name)
    if known is not None and (known.extension, known.reference, known.test) != (extension_name, reference, test):
        raise ValueError(f"accelerated function {name!r} registered twice with different definitions")
    if known is None:
        _entries[name] = entry
        _active[name] = compiled
    return _entries[name]


def entry(name: str) -> Accelerated:
    return _entries[name]


def entries() -> tuple[Accelerated, ...]:
    """Every registered entry (the verifier's appear once ``flk.impl.verifier`` is imported)."""
    return tuple(_entries.values())


def active(name: str) -> Callable[..., Any] | None:
    """The callable the bindings of ``name`` hold now (None on the pure path)."""
    return _active[name]


def bind(which: str | Accelerated, namespace: dict, global_name: str, pure_value: Any = None) -> Any:
    """``namespace[global_name]`` := the compiled function of entry ``which`` (or ``pure_value``
    on the pure path), recorded so :func:`pure` and :func:`counting` can route it; returns it."""
    name = which.name if isinstance(which, Accelerated) else which
    value = _active[name]
    _bindings.append((namespace, global_name, name, pure_value))
    namespace[global_name] = pure_value if value is None else value
    return namespace[global_name]


def _apply() -> None:
    for namespace, global_name, name, pure_value in _bindings:
        value = _active[name]
        namespace[global_name] = pure_value if value is None else value


@contextlib.contextmanager
def _routed(replace: Callable[[str, Callable[..., Any] | None], Callable[..., Any] | None]) -> Iterator[None]:
    saved = dict(_active)
    for name, value in saved.items():
        _active[name] = replace(name, value)
    _apply()
    try:
        yield
    finally:
        _active.update(saved)  # entries registered inside the block keep their own value
        _apply()


@contextlib.contextmanager
def pure() -> Iterator[None]:
    """Every consumer takes the pure reference inside the block (what ``FLK_PURE=1`` does at import)."""
    with _routed(lambda _name, _value: None):
        yield


@contextlib.contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Calls of each compiled function inside the block (through any binding), by entry name."""
    counts = dict.fromkeys(_entries, 0)

    def wrap(name: str, fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if fn is None:
            return None

        def counted(*args: Any) -> Any:
            counts[name] += 1
            return fn(*args)
        return counted

    with _routed(wrap):
        yield counts


class _ActiveView:
    """``ACTIVE.<entry name>``: the compiled function active now (AttributeError on the pure path)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = _active.get(name)
        if fn is None:
            raise AttributeError(f"{name}: no compiled function is active (pure path, or not an entry)")
        return fn


ACTIVE = _ActiveView()


def path() -> str:
    """``compiled`` when the core's extension is active, else ``pure`` (``flk --version`` prints it)."""
    return "pure" if extension(CORE_EXTENSION) is None else "compiled"


# every optional extension setup.py builds (a test pins this against setup.py's ext_modules)
EXTENSIONS = ("flk.impl.core._fastcore", "flk.impl.verifier._fastverify", "flk.impl.dedup._fastsqlite",
              "flk.sim._fasthistory")


def extensions_report() -> str:
    """One line naming which extensions are active and which run the pure code (``flk --version``'s
    second line: an install without libsqlite3's headers gets the compiled core and the pure SQLite
    rows, and should be able to see that)."""
    active_now = [d.rsplit(".", 1)[1] for d in EXTENSIONS if extension(d) is not None]
    pure_now = [d.rsplit(".", 1)[1] for d in EXTENSIONS if extension(d) is None]
    why = " (FLK_PURE set)" if PURE_REQUESTED and pure_now else ""
    return f"compiled: {', '.join(active_now) or 'none'}; pure: {', '.join(pure_now) or 'none'}{why}"


# ---- the core's entries (impl/core/_fastcore.c) -----------------------------------------------
_CORE_TESTS = "tests/foundation/test_fastcore.py::"
_VERIFY_TESTS = "tests/verifier/test_fastpath_differential.py::"
register("canonical_v1", CORE_EXTENSION, "flk.impl.core.canonical:canonical_bytes_careful",
         _CORE_TESTS + "test_inv_canon_compiled_and_pure_canonical_bytes_agree")
register("round9", CORE_EXTENSION, "flk.impl.core.canonical:pure_round9",
         _VERIFY_TESTS + "test_round9_is_the_same_on_both_paths")
register("theil_sen", CORE_EXTENSION, "flk.impl.core.signals:pure_theil_sen_slope",
         _VERIFY_TESTS + "test_theil_sen_slope_is_the_same_on_both_paths")
register("hmac_sha256_b64", CORE_EXTENSION, "flk.impl.core.signing:pure_hmac_b64",
         _CORE_TESTS + "test_compiled_hmac_equals_the_standard_library")
register("hmac_sha256_any", CORE_EXTENSION, "flk.impl.core.signing:pure_hmac_any",
         _CORE_TESTS + "test_compiled_hmac_any_equals_the_pure_loop")
register("b64decode_canonical", CORE_EXTENSION, "flk.impl.core.signing:pure_b64decode_strict",
         _CORE_TESTS + "test_compiled_b64decode_agrees_with_the_pure_reference")
