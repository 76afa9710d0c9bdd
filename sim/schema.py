"""One schema for scenario files: every key of every section, every fault's
parameters and every SLO metric, each with its type, default and meaning.

:mod:`flk.sim.scenario` validates a file against it (unknown keys, wrong types,
out-of-range numbers, unknown regions or targets are a :class:`ScenarioError`
naming the file, the key path and the reason), and ``sim/SCENARIOS.md`` is
generated from it (:func:`flk.sim.scenario.reference_markdown`), so the
documentation cannot drift from what the loader accepts.

Value kinds (``Field.kind``): ``str``, ``bool``, ``int`` (not a bool, not 2.5),
``number`` (int or float), ``dist`` (a number or a latency distribution table),
``regions`` (``"*"``, a region id or a list of them), ``agents`` (``"*"``, an
agent id or a list), ``nodes`` (a list of topology nodes: region ids,
``"clients"``), ``str_list``, ``list`` (of tables, checked by the caller), ``table``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .rng import DIST_KINDS

DIST_PARAMS = {"constant": ("value",), "uniform": ("lo", "hi"), "exponential": ("mean",),
               "lognormal": ("median", "sigma"), "normal": ("mean", "sd"), "pareto": ("scale", "alpha")}


class ScenarioError(ValueError):
    """A scenario file or override that cannot be run; ``key`` names the place."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key = key
        self.reason = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}{ordinals(key)}: {message}")


LIST_ITEMS = {"faults": "fault", "regions": "region", "slo": "SLO", "links": "link", "headline": "headline figure",
              "expect": "expectation", "schedule": "schedule item"}


def ordinals(key: str) -> str:
    """`` (fault #2)`` for a key path ``faults.1...``: key paths index lists from 0 (as ``--set``
    does), people count tables from 1."""
    import re

    found = [f"{LIST_ITEMS[m.group(1)]} #{int(m.group(2)) + 1}"
             for m in re.finditer(r"(?:^|\.)(" + "|".join(LIST_ITEMS) + r")\.(\d+)(?=\.|$)", key)]
    return f" ({', '.join(found)})" if found else ""


def did_you_mean(word: str, choices) -> str:
    """`` -- did you mean 'x'?`` for the closest of ``choices`` (or nothing)."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" -- did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Field:
    """One key: its value kind, default (``None`` = optional, no default), meaning and bounds."""

    name: str
    kind: str
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    required: bool = False


@dataclass
class Context:
    """What names a scenario defines, for checking references to them."""

    regions: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a non-integer number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_bounds(value: float, spec: Field, path: str) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise ScenarioError(path, f"must be >= {spec.minimum:g}, got {value!r}")
    if spec.maximum is not None and value > spec.maximum:
        raise ScenarioError(path, f"must be <= {spec.maximum:g}, got {value!r}")


def check_dist(value: Any, path: str) -> None:
    if _is_number(value):
        if value < 0:
            raise ScenarioError(path, f"must be >= 0, got {value!r}")
        return
    if not isinstance(value, Mapping):
        raise ScenarioError(path, f"must be a number or a distribution table, got {_type_name(value)}")
    kind = value.get("dist", "constant")
    if kind not in DIST_KINDS:
        raise ScenarioError(f"{path}.dist", f"must be one of {', '.join(DIST_KINDS)}, got {kind!r}")
    wanted = DIST_PARAMS[kind]
    for key in sorted(set(value) - {"dist", *wanted}):
        raise ScenarioError(f"{path}.{key}", f"unknown key for dist {kind!r} (known: {', '.join(wanted)})")
    for key in wanted:
        if key not in value:
            raise ScenarioError(f"{path}.{key}", f"missing (dist {kind!r} needs {', '.join(wanted)})")
        if not _is_number(value[key]) or value[key] < 0:
            raise ScenarioError(f"{path}.{key}", f"must be a number >= 0, got {value[key]!r}")
    if kind == "uniform" and value["lo"] > value["hi"]:
        raise ScenarioError(path, f"lo ({value['lo']}) must be <= hi ({value['hi']})")


def _check_names(value: Any, known: Sequence[str], what: str, path: str, star: bool) -> None:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        prefix = '"*", ' if star else ""
        raise ScenarioError(path, f"must be {prefix}a {what} id or a non-empty list of them")
    for item in items:
        if item == "*" and star and isinstance(value, str):
            continue
        if item not in known:
            raise ScenarioError(path, f"unknown {what} {item!r} (known: {', '.join(known)})")


def check_value(value: Any, spec: Field, path: str, ctx: Context) -> None:
    """Raise :class:`ScenarioError` unless ``value`` fits ``spec``."""
    kind = spec.kind
    if kind == "dist":
        check_dist(value, path)
    elif kind == "regions":
        _check_names(value, ctx.regions, "region", path, star=True)
    elif kind == "agents":
        _check_names(value, ctx.agents, "agent", path, star=True)
    elif kind == "nodes":
        if isinstance(value, str):
            raise ScenarioError(path, "must be a list of node names")
        _check_names(value, ctx.nodes, "node", path, star=False)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ScenarioError(path, f"must be true or false, got {_type_name(value)} {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(path, f"must be an integer, got {_type_name(value)} {value!r}")
        _check_bounds(value, spec, path)
    elif kind == "number":
        if not _is_number(value):
            raise ScenarioError(path, f"must be a number, got {_type_name(value)} {value!r}")
        _check_bounds(value, spec, path)
    elif kind == "str":
        if not isinstance(value, str):
            raise ScenarioError(path, f"must be a string, got {_type_name(value)} {value!r}")
        if spec.choices and value not in spec.choices:
            raise ScenarioError(path, f"must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    elif kind == "str_list":
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ScenarioError(path, "must be a list of strings")
        for item in value:
            if spec.choices and item not in spec.choices:
                raise ScenarioError(path, f"unknown {item!r} (known: {', '.join(spec.choices)})")
    elif kind == "list":
        if not isinstance(value, list):
            raise ScenarioError(path, f"must be a list, got {_type_name(value)}")
    elif kind == "table":
        if not isinstance(value, Mapping):
            raise ScenarioError(path, f"must be a table, got {_type_name(value)}")
    else:  # pragma: no cover - a schema bug, not user input
        raise AssertionError(f"unknown field kind {kind!r}")


def check_table(table: Any, fields: Sequence[Field], path: str, ctx: Context,
                ignore: Sequence[str] = ()) -> None:
    """Check a table: no unknown key, every required key present, every value of its kind."""
    if not isinstance(table, Mapping):
        raise ScenarioError(path, f"must be a table, got {_type_name(table)}")
    by_name = {f.name: f for f in fields}
    for key in table:
        if key not in by_name and key not in ignore:
            known = ", ".join(sorted(by_name))
            raise ScenarioError(f"{path}.{key}", f"unknown key{did_you_mean(key, by_name)} (known: {known})")
    for spec in fields:
        if spec.name not in table:
            if spec.required:
                raise ScenarioError(f"{path}.{spec.name}", "missing (required)")
            continue
        if table[spec.name] is None and not spec.required:
            continue
        check_value(table[spec.name], spec, f"{path}.{spec.name}", ctx)


def describe_default(spec: Field) -> str:
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
