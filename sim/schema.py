"""One schema for scenario files: every key of every section, every fault's
parameters and every SLO metric, each with its type, default and meaning.

The checking engine is :mod:`flk.impl.core.schema` (the operator's policies use
it too); this module adds the scenario's own value kinds (latency
distributions, region/agent/node names) and :class:`ScenarioError`, which
counts list items for people (``faults.1`` is "fault #2").

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

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flk.impl.core.schema import (
    Engine,
    Field,
    SchemaError,
    describe_default,
    describe_kind,
    did_you_mean,
    is_number,
    type_name,
)

from .rng import DIST_KINDS

__all__ = ["DIST_PARAMS", "MAX_LATENCY_MS", "MAX_TIME", "Context", "Field", "ScenarioError", "check_dist", "check_table", "check_value",
           "describe_default", "describe_kind", "did_you_mean", "ordinals"]

DIST_PARAMS = {"constant": ("value",), "uniform": ("lo", "hi"), "exponential": ("mean",),
               "lognormal": ("median", "sigma"), "normal": ("mean", "sd"), "pareto": ("scale", "alpha")}


# a Pareto draw is scale x U^(-1 / alpha) with U >= 2^-53 (random.paretovariate): 2^(53 / alpha)
# overflows a double below alpha = 0.052; at 0.1 the largest draw is scale x 2^530
PARETO_ALPHA_MIN = 0.1
# a lognormal's spread: p99 is already median x 1.3e10 at 10; a draw past 709 / sigma deviations
# overflows a double, which at 10 is 70 deviations (never), at 1e9 every draw
LOGNORMAL_SIGMA_MAX = 10.0


# every time and interval (s or ms) at most a billion: the history stamps events in whole
# microseconds from a float second, which still resolves 1 us at 1e9 s (30 years); past it
# events blur together, and at 1e308 the stamp overflows (quiescence_s = 1e308 ended a run
# with an OverflowError, or never ended it)
MAX_TIME = 1e9
# a latency (a number or a distribution's location and spread: value, lo, hi, mean, median, sd,
# scale; ms) at most a day: a message or a disk call slower than that is a typo's exponent, not a
# network (network.latency_ms = 1e308 ran: every request timed out, an INVALID run with no fault)
MAX_LATENCY_MS = 86_400_000.0
DIST_SHAPE_PARAMS = ("sigma", "alpha")  # no unit: bounded by their own rules below


class ScenarioError(SchemaError):
    """A scenario file or override that cannot be run; ``key`` names the place."""

    @classmethod
    def annotate(cls, key: str) -> str:
        return ordinals(key)


LIST_ITEMS = {"faults": "fault", "regions": "region", "slo": "SLO", "links": "link", "headline": "headline figure",
              "expect": "expectation", "schedule": "schedule item"}


def ordinals(key: str) -> str:
    """`` (fault #2)`` for a key path ``faults.1...``: key paths index lists from 0 (as ``--set``
    does), people count tables from 1."""
    found = [f"{LIST_ITEMS[m.group(1)]} #{int(m.group(2)) + 1}"
             for m in re.finditer(r"(?:^|\.)(" + "|".join(LIST_ITEMS) + r")\.(\d+)(?=\.|$)", key)]
    return f" ({', '.join(found)})" if found else ""


@dataclass
class Context:
    """What names a scenario defines, for checking references to them."""

    regions: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


def _check_latency(ms: float, path: str) -> None:
    if ms > MAX_LATENCY_MS:
        raise ScenarioError(path, f"must be <= {MAX_LATENCY_MS:g} (ms: a day), got {ms!r}")


def check_dist(value: Any, path: str) -> None:
    if is_number(value):
        if value < 0:
            raise ScenarioError(path, f"must be >= 0, got {value!r}")
        _check_latency(value, path)
        return
    if isinstance(value, float):  # nan, inf: a number, not a finite one (as the number kind says)
        raise ScenarioError(path, f"must be a finite number or a distribution table, got {value!r}")
    if not isinstance(value, Mapping):
        raise ScenarioError(path, f"must be a number or a distribution table, got {type_name(value)}")
    kind = value.get("dist", "constant")
    if kind not in DIST_KINDS:
        raise ScenarioError(f"{path}.dist", f"must be one of {', '.join(DIST_KINDS)}, got {kind!r}")
    wanted = DIST_PARAMS[kind]
    for key in sorted(map(str, set(value) - {"dist", *wanted})):
        raise ScenarioError(f"{path}.{key}", f"unknown key for dist {kind!r} (known: {', '.join(wanted)})")
    for key in wanted:
        if key not in value:
            raise ScenarioError(f"{path}.{key}", f"missing (dist {kind!r} needs {', '.join(wanted)})")
        if not is_number(value[key]) or value[key] < 0:
            raise ScenarioError(f"{path}.{key}", f"must be a finite number >= 0, got {value[key]!r}")
        if key not in DIST_SHAPE_PARAMS:
            _check_latency(value[key], f"{path}.{key}")
    if kind == "uniform" and value["lo"] > value["hi"]:
        raise ScenarioError(path, f"lo ({value['lo']}) must be <= hi ({value['hi']})")
    if kind == "exponential" and value["mean"] == 0:  # flk.sim.rng draws at the rate 1 / mean
        raise ScenarioError(f"{path}.mean", "must be > 0 (a draw's rate is 1 / mean)")
    if kind == "pareto" and value["alpha"] < PARETO_ALPHA_MIN:
        raise ScenarioError(f"{path}.alpha", f"must be >= {PARETO_ALPHA_MIN:g}, got {value['alpha']!r} (a draw is "
                                             f"scale x U^(-1 / alpha): below that it overflows)")
    if kind == "lognormal" and value["sigma"] > LOGNORMAL_SIGMA_MAX:
        raise ScenarioError(f"{path}.sigma", f"must be <= {LOGNORMAL_SIGMA_MAX:g}, got {value['sigma']!r} (a draw "
                                             f"is median x e^(sigma x a standard normal): past that it overflows)")


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


def _nodes(e: Engine, value: Any, spec: Field, path: str, ctx: Context) -> None:
    if isinstance(value, str):
        raise ScenarioError(path, "must be a list of node names")
    _check_names(value, ctx.nodes, "node", path, star=False)


ENGINE = Engine({
    "dist": lambda e, value, spec, path, ctx: check_dist(value, path),
    "regions": lambda e, value, spec, path, ctx: _check_names(value, ctx.regions, "region", path, star=True),
    "agents": lambda e, value, spec, path, ctx: _check_names(value, ctx.agents, "agent", path, star=True),
    "nodes": _nodes,
}, error=ScenarioError)


def check_value(value: Any, spec: Field, path: str, ctx: Context) -> None:
    """Raise :class:`ScenarioError` unless ``value`` fits ``spec``."""
    ENGINE.check_value(value, spec, path, ctx)


def check_table(table: Any, fields: Sequence[Field], path: str, ctx: Context,
                ignore: Sequence[str] = ()) -> None:
    """Check a table: no unknown key, every required key present, every value of its kind."""
    ENGINE.check_table(table, fields, path, ctx, ignore)
