"""``@frozen_record``: a frozen dataclass whose ``__init__`` fills the instance ``__dict__``.

A ``@dataclass(frozen=True)`` generates an ``__init__`` that calls ``object.__setattr__``
once per field, about twice the cost of storing into ``__dict__``; the hot records of the
request path (requests, responses, stored outcomes, inbox records, the client's events)
are made several times per submission. ``@frozen_record`` is ``@dataclass(frozen=True)``
with that one difference: the same fields, defaults, ``default_factory``, ordering,
equality, hash, repr and immutability (assignment still raises ``FrozenInstanceError``).

``field(init=False)`` fields take their default (or factory) as the generated ``__init__``
gives them; ``__post_init__``, ``InitVar`` and ``slots=True`` are refused (none of the
records needs them, and a silent difference from ``dataclass`` would be a trap).
tests/foundation/test_frozen_record.py checks every behaviour against ``@dataclass``.
"""

from __future__ import annotations

import dataclasses
import keyword
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["frozen_record"]


class _NoDefault:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _NoDefault()  # the parameter default of a field with a default_factory


def frozen_record(cls: type[T] | None = None, /, **options: Any):
    """``@frozen_record`` or ``@frozen_record(eq=..., order=..., repr=...)``: see the module."""
    if "frozen" in options or "init" in options or options.get("slots"):
        raise TypeError("frozen_record: frozen, init and slots are fixed (frozen, its own __init__, no slots)")

    def wrap(klass: type[T]) -> type[T]:
        if "__init__" in klass.__dict__:
            raise TypeError(f"frozen_record: {klass.__qualname__} defines its own __init__")
        if hasattr(klass, "__post_init__"):
            raise TypeError(f"frozen_record: {klass.__qualname__} has __post_init__ (not supported)")
        out = dataclasses.dataclass(frozen=True, init=False, **options)(klass)
        out.__init__ = _make_init(out)  # type: ignore[misc]
        return out

    return wrap if cls is None else wrap(cls)


def _make_init(cls: type) -> Any:
    params: list[str] = []
    body: list[str] = ["d = self.__dict__"]
    env: dict[str, Any] = {"_FACTORY": _FACTORY}
    for f in dataclasses.fields(cls):
        name = f.name
        if keyword.iskeyword(name) or not name.isidentifier():  # pragma: no cover - dataclass refuses these
            raise TypeError(f"frozen_record: field name {name!r}")
        if isinstance(f.type, dataclasses.InitVar) or f.type is dataclasses.InitVar:
            raise TypeError(f"frozen_record: {cls.__qualname__}.{name} is an InitVar (not supported)")
        has_default = f.default is not dataclasses.MISSING
        has_factory = f.default_factory is not dataclasses.MISSING
        if has_default:
            env[f"_d_{name}"] = f.default
        if has_factory:
            env[f"_f_{name}"] = f.default_factory
        if not f.init:
            if has_default:
                body.append(f"d[{name!r}] = _d_{name}")
            elif has_factory:
                body.append(f"d[{name!r}] = _f_{name}()")
            continue
        if has_default:
            params.append(f"{name}=_d_{name}")
            body.append(f"d[{name!r}] = {name}")
        elif has_factory:
            params.append(f"{name}=_FACTORY")
            body.append(f"d[{name!r}] = _f_{name}() if {name} is _FACTORY else {name}")
        else:
            if any("=" in p for p in params):
                raise TypeError(f"frozen_record: non-default field {name!r} follows a default")
            params.append(name)
            body.append(f"d[{name!r}] = {name}")
    src = f"def __init__(self, {', '.join(params)}):\n" + "".join(f"    {line}\n" for line in body)
    if not params:
        src = "def __init__(self):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(src, f"<frozen_record {cls.__qualname__}>", "exec"), env)  # noqa: S102 - generated from field names
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init
