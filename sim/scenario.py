"""Scenarios are data: TOML files in ``sim/scenarios/`` read by one runner.

A scenario names its topology (regions, dedup store, disks, network links), a
workload (agents, rate, tenants, duplicate / bad-signature / conflict rates,
shape), a fault schedule (fixed times and/or a seeded random nemesis), its
phases (faults -> heal -> quiescence -> final checks) and the SLOs to assert.
:func:`load` validates everything and raises :class:`ScenarioError` naming the
offending key, so ``flk sim run`` can exit 2 with a clear message.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .rng import DIST_KINDS

FAULT_KINDS = (
    "crash", "restart", "pause", "resume", "partition", "heal", "store_down", "store_up",
    "store_latency", "clock_skew", "clock_jump", "bitflip_wal", "disk_slow", "ship_stop",
    "ship_start", "objstore_down", "objstore_up", "rotate_key", "burst", "bitflip_shipped",
    "shard_down", "shard_up", "cold_down", "cold_up", "migrate", "reader_rewind", "agent_crash",
)
SLO_OPS = ("<=", "<", ">=", ">", "==")

DEFAULTS: dict[str, Any] = {
    "scenario": {"name": "", "description": "", "seed": 1, "duration_s": 30.0, "quiescence_s": 10.0,
                 "tier": "small"},
    "regions": [{"id": "r1"}],
    "region_defaults": {
        "dedup": "memory", "group_commit_ms": 2.0, "fsync_ms": {"dist": "lognormal", "median": 1.0, "sigma": 0.3},
        "store_ms": {"dist": "lognormal", "median": 0.3, "sigma": 0.3}, "verify_ms": 0.05,
        "max_inflight": 256, "torn_writes": True,
    },
    "network": {"latency_ms": {"dist": "uniform", "lo": 1.0, "hi": 3.0}, "loss": 0.0, "duplicate": 0.0,
                "reorder": 0.0, "links": []},
    "workload": {"agents": 8, "rate_per_s": 100.0, "tenants": 1, "dup_rate": 0.0, "bad_sig_rate": 0.0,
                 "conflict_rate": 0.0, "shape": "constant", "burst_factor": 10.0, "burst_at_s": 0.0,
                 "burst_s": 0.0, "max_attempts": 8, "backoff_base_ms": 50.0, "backoff_cap_ms": 2000.0,
                 "timeout_ms": 1000.0, "home_region": "", "pool": 256, "cross_region_conflict_rate": 0.0, "outbox": False},
    "replication": {"enabled": False, "ship_interval_s": 1.0, "read_interval_s": 0.5,
                    "upload_ms": {"dist": "lognormal", "median": 40.0, "sigma": 0.3},
                    "backoff_base_s": 0.5, "backoff_cap_s": 5.0, "mode": "auto-safe"},
    "faults": [],
    "nemesis": {"enabled": False, "rate_per_min": 2.0, "kinds": ["crash"], "min_gap_s": 2.0,
                "duration_s": 3.0},
    "slo": [],
}


class ScenarioError(ValueError):
    """A scenario file or override that cannot be run; ``key`` names the place."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


@dataclass
class Scenario:
    name: str
    source: str
    data: dict[str, Any]

    @property
    def seed(self) -> int:
        return int(self.data["scenario"]["seed"])

    def section(self, name: str) -> Any:
        return self.data[name]


def scenario_dir() -> Path:
    return Path(str(resources.files("flk.sim") / "scenarios"))


def list_scenarios() -> list[str]:
    return sorted(p.stem for p in scenario_dir().glob("*.toml"))


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as TOML, else a string); list items by index: ``regions.0.id``."""
    if "=" not in assignment:
        raise ScenarioError(assignment, "override must look like key.path=value")
    path, text = assignment.split("=", 1)
    keys = path.strip().split(".")
    node: Any = data
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(k)]
            except (ValueError, IndexError):
                raise ScenarioError(path, f"no list item {k!r}") from None
        elif isinstance(node, dict):
            if k not in node:
                raise ScenarioError(path, f"unknown key {'.'.join(keys[: i + 1])!r}")
            node = node[k]
        else:
            raise ScenarioError(path, "cannot descend into a value")
    last = keys[-1]
    value = _parse_value(text.strip())
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise ScenarioError(path, f"no list item {last!r}") from None
    elif isinstance(node, dict):
        if last not in node:
            raise ScenarioError(path, f"unknown key {path!r}")
        node[last] = value
    else:
        raise ScenarioError(path, "cannot set a field of a value")


def _num(d: dict, key: str, where: str, lo: float | None = None, hi: float | None = None) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ScenarioError(f"{where}.{key}", f"must be a number, got {v!r}")
    if lo is not None and v < lo:
        raise ScenarioError(f"{where}.{key}", f"must be >= {lo}")
    if hi is not None and v > hi:
        raise ScenarioError(f"{where}.{key}", f"must be <= {hi}")
    return float(v)


def _dist(v: Any, where: str) -> None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if v < 0:
            raise ScenarioError(where, "must be >= 0")
        return
    if not isinstance(v, dict) or v.get("dist", "constant") not in DIST_KINDS:
        raise ScenarioError(where, f"must be a number or a table with dist in {DIST_KINDS}")


def validate(data: dict) -> None:
    sc = data["scenario"]
    if not isinstance(sc.get("name"), str) or not sc["name"]:
        raise ScenarioError("scenario.name", "must be a non-empty string")
    if isinstance(sc.get("seed"), bool) or not isinstance(sc.get("seed"), int) or sc["seed"] < 0:
        raise ScenarioError("scenario.seed", "must be a non-negative integer")
    _num(sc, "duration_s", "scenario", 0.001)
    _num(sc, "quiescence_s", "scenario", 0.0)
    regions = data["regions"]
    if not isinstance(regions, list) or not regions:
        raise ScenarioError("regions", "needs at least one region")
    seen = set()
    for i, r in enumerate(regions):
        if not isinstance(r, dict) or not isinstance(r.get("id"), str) or not r["id"]:
            raise ScenarioError(f"regions.{i}.id", "must be a non-empty string")
        if r["id"] in seen:
            raise ScenarioError(f"regions.{i}.id", f"duplicate region {r['id']!r}")
        seen.add(r["id"])
    rd = data["region_defaults"]
    for key in ("fsync_ms", "store_ms"):
        _dist(rd[key], f"region_defaults.{key}")
    net = data["network"]
    _dist(net["latency_ms"], "network.latency_ms")
    for key in ("loss", "duplicate", "reorder"):
        _num(net, key, "network", 0.0, 1.0)
    w = data["workload"]
    _num(w, "agents", "workload", 1)
    _num(w, "rate_per_s", "workload", 0.0)
    _num(w, "tenants", "workload", 1)
    for key in ("dup_rate", "bad_sig_rate", "conflict_rate"):
        _num(w, key, "workload", 0.0, 1.0)
    if w["shape"] not in ("constant", "burst", "diurnal"):
        raise ScenarioError("workload.shape", "must be constant, burst or diurnal")
    for i, f in enumerate(data["faults"]):
        if not isinstance(f, dict):
            raise ScenarioError(f"faults.{i}", "must be a table")
        if f.get("kind") not in FAULT_KINDS:
            raise ScenarioError(f"faults.{i}.kind", f"must be one of {FAULT_KINDS}")
        _num(f, "at_s", f"faults.{i}", 0.0)
    for i, s in enumerate(data["slo"]):
        if not isinstance(s, dict) or not isinstance(s.get("metric"), str):
            raise ScenarioError(f"slo.{i}.metric", "must be a string")
        if s.get("op") not in SLO_OPS:
            raise ScenarioError(f"slo.{i}.op", f"must be one of {SLO_OPS}")
        _num(s, "value", f"slo.{i}")


def load(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Load a catalog scenario by name, or a TOML file by path; apply ``key=value`` overrides."""
    p = Path(name_or_path)
    if p.suffix != ".toml":
        candidate = scenario_dir() / f"{name_or_path}.toml"
        if not candidate.exists():
            raise ScenarioError("scenario", f"no scenario named {str(name_or_path)!r} (see `flk sim list`)")
        p = candidate
    if not p.exists():
        raise ScenarioError("scenario", f"file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(p.name), f"not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ScenarioError(unknown[0], f"unknown section (known: {sorted(DEFAULTS)})")
    data = _merge(DEFAULTS, raw)
    if not data["scenario"]["name"]:
        data["scenario"]["name"] = p.stem
    for o in overrides:
        apply_override(data, o)
    validate(data)
    return Scenario(name=data["scenario"]["name"], source=str(p), data=data)
