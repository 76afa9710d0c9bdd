"""Policies are data: one schema for the operator's three resources.

Why this module exists: the seeds' operator takes declarative resources
(ShardMigration, CRRPolicy, TieringPolicy). Here each is a TOML document::

    kind = "ShardMigration"
    name = "grow-to-4"
    [spec]
    old = { s0 = "sqlite:///s0.db", s1 = "sqlite:///s1.db", s2 = "sqlite:///s2.db" }
    new = { s0 = "sqlite:///s0.db", s1 = "sqlite:///s1.db", s2 = "sqlite:///s2.db", s3 = "sqlite:///s3.db" }
    [spec.gates]
    max_latency_p95_ms = 50.0

checked strictly (the rows are :class:`flk.impl.core.schema.Field`, checked by
the one engine the simulator's scenarios use too) before anything runs: an unknown key,
a wrong type, an out-of-range number or a missing required key is a
:class:`PolicyError` naming the file, the key path and the reason (``flk
operator validate`` exits 2 with it). The same schema renders the reference
in spec/OPERATOR.md (:func:`reference_markdown`), so the document cannot drift
from what the loader accepts. The simulator's scenarios declare policies with
the same tables (``[[policies]]``), checked by :func:`check_policy`.

A policy's *spec* is what the user asks for; its *status* (phase, progress,
last transition time, conditions) is the controller's, kept beside it
(:mod:`.status`). ``generation`` is the digest of the spec: a changed spec is a
new generation (CRRPolicy re-applies it).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core import textdata
from ..core.schema import Engine, Field, SchemaError, join

KINDS = ("ShardMigration", "CRRPolicy", "TieringPolicy")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
SHARD_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
URL_PREFIXES = ("sqlite://", "redis://", "rediss://", "unix://", "postgresql://", "postgres://", "sim://",
                "memory://")


class PolicyError(SchemaError):
    """A policy document that cannot be used; ``key`` is the key path (``spec.gates.window_s``)."""


# upper bounds of the integer settings: past them a value is a typo's zeros, never a plan (a
# 20-digit season_bins was valid; the run then failed or held its memory)
RING_MAX_VNODES = 10_000  # what flk.impl.dedup.sharded.Ring builds (it refuses more when the migration starts)
RING_MAX_PROBES = 4  # a key's digest holds four probe positions (flk.impl.dedup.sharded.key_probes)
MAX_BATCH = 1_000_000  # entries of one copy/verify/prune action, promotions of one tiering cycle (held in memory)
MAX_COUNT = 1_000_000  # gate samples in a window
MAX_VERIFY_ROUNDS = 1_000
MAX_SEASON_BINS = 10_000  # a year of hourly bins is 8,760; holt-winters keeps one value per bin


def _n(name: str, default: Any, doc: str, minimum: float | None = 0.0, maximum: float | None = None) -> Field:
    return Field(name, "number", default, doc, minimum=minimum, maximum=maximum)


GATE_FIELDS = (
    _n("window_s", 10.0, "health gates are evaluated over the samples of the last window_s seconds", 0.001),
    Field("min_samples", "int", 3, "fewer samples in the window: the gate is unknown (hold, never roll back)",
          minimum=1, maximum=MAX_COUNT),
    _n("breach_fraction", 0.5, "share of the window's samples over a limit that is a breach", 0.0, 1.0),
    _n("max_latency_p95_ms", None, "MaxLatencyP95: a sample's server-side p95 above this violates (unset: off)"),
    _n("max_error_rate", None, "MaxErrorRate: a sample's share of 5xx answers above this violates", 0.0, 1.0),
    _n("min_dedup_hit_ratio", None, "MinDedupHitRatio: a sample's duplicate-hit share below this violates", 0.0, 1.0),
    _n("max_replication_lag_s", None, "CRRPolicy: replication lag above this violates"),
    Field("on_unknown", "str", "hold", "what a progress step does while the gates are unknown",
          choices=("hold", "proceed")),
)
COST_FIELDS = (
    _n("hot_gb_month", 8.0, "hot tier (memory/Redis) storage, currency per GB-month"),
    _n("warm_gb_month", 0.25, "warm tier (SQL) storage, currency per GB-month"),
    _n("cold_gb_month", 0.023, "cold tier (object store) storage, currency per GB-month"),
    _n("per_cold_request", 4e-7, "one cold-tier GET"),
    _n("per_promotion", 5e-7, "one promotion into hot (a cold GET plus a hot write)"),
    _n("hot_read_ms", 0.3, "read latency served from hot, ms"),
    _n("warm_read_ms", 2.0, "read latency served from warm, ms"),
    _n("cold_read_ms", 40.0, "read latency of a cold miss, ms"),
    _n("latency_cost_per_s", 1e-4, "what one second of read latency costs (turns a latency saving into currency)"),
    _n("max_monthly_cost", None, "cost limit: a projected monthly cost above it sets condition CostLimit"),
)
SPEC_FIELDS: dict[str, tuple[Field, ...]] = {
    "ShardMigration": (
        Field("old", "shards", None, "old ring: shard name -> store URL", required=True),
        Field("new", "shards", None, "new ring: shard name -> store URL", required=True),
        Field("vnodes", "int", 150, "virtual nodes per shard (both rings)", minimum=1, maximum=RING_MAX_VNODES),
        Field("probes", "int", 4, "ring probes (both rings)", minimum=1, maximum=RING_MAX_PROBES),
        Field("batch", "int", 500, "entries per copy/verify batch (one action)", minimum=1, maximum=MAX_BATCH),
        Field("prune_batch", "int", 2000, "entries per prune batch (one action; the prune reads every entry of "
              "the new ring and deletes only the moved keys' old copies)", minimum=1, maximum=MAX_BATCH),
        _n("settle_s", 1.0, "wait before re-checking keys verify found missing (writes in flight), s"),
        _n("soak_s", 5.0, "healthy time in Cutover (gates ok) before Cleanup stops writing the old ring, s"),
        Field("max_verify_rounds", "int", 3, "copy+verify rounds before a dirty verify rolls back", minimum=1,
              maximum=MAX_VERIFY_ROUNDS),
        Field("auto_rollback", "bool", True, "roll back to the old ring on a gate breach"),
        Field("gates", "table", {}, "health gates", fields=GATE_FIELDS),
    ),
    "CRRPolicy": (
        Field("mode", "str", "full", "what is replicated", choices=("full", "selective", "multi-way")),
        Field("regions", "str_list", [], "regions the policy covers (empty: every region)"),
        Field("tenants", "str_list", [], "selective: the tenants replicated (required for selective)"),
        _n("ship_interval_s", 1.0, "how often a region seals and ships a segment, s", 0.001),
        Field("auto_reconcile", "bool", True, "reconcile conflicts automatically (auto-safe) or flag them (manual)"),
        Field("gates", "table", {}, "health gates (max_replication_lag_s)", fields=GATE_FIELDS),
    ),
    "TieringPolicy": (
        _n("hot_s", 300.0, "how long an outcome stays in hot after a write or promotion, s", 0.001),
        _n("warm_s", 86400.0, "age after which demotion moves a body to cold, s"),
        Field("forecaster", "str", "holt-winters", "access forecast per tenant",
              choices=("none", "ewma", "holt-winters")),
        _n("alpha", 0.3, "level smoothing", 0.0, 1.0),
        _n("beta", 0.05, "trend smoothing (holt-winters)", 0.0, 1.0),
        _n("gamma", 0.3, "seasonal smoothing (holt-winters)", 0.0, 1.0),
        Field("season_bins", "int", 24, "cycles in one season (holt-winters)", minimum=2, maximum=MAX_SEASON_BINS),
        _n("cycle_s", 3600.0, "one reconcile cycle: forecast horizon and pre-warm period, s", 0.001),
        Field("max_promotions_per_cycle", "int", 100, "pre-warm budget per cycle", minimum=0, maximum=MAX_BATCH),
        _n("min_probability", 0.0, "never pre-warm a key whose access probability is below this", 0.0, 1.0),
        Field("cost", "table", {}, "cost model", fields=COST_FIELDS),
    ),
}
DOC_FIELDS = (
    Field("kind", "str", None, "resource kind", choices=KINDS, required=True),
    Field("name", "str", None, "policy name: lower case letters, digits, dashes", required=True),
    Field("spec", "table", None, "the desired state (fields per kind below)", required=True),
)


def _check_shards(e: Engine, v: Any, f: Field, path: str, ctx: Any) -> None:
    if not isinstance(v, Mapping) or not v:
        raise PolicyError(path, "must be a non-empty table of shard name = store URL")
    for name, url in v.items():
        if not isinstance(name, str) or not SHARD_RE.match(name):
            raise PolicyError(join(path, name), "a shard name is 1-64 of A-Z a-z 0-9 _ . -")
        if not isinstance(url, str) or not url.startswith(URL_PREFIXES):
            raise PolicyError(join(path, name), f"must be a store URL ({', '.join(URL_PREFIXES)}...)")


ENGINE = Engine({"shards": _check_shards}, error=PolicyError)


def check_table(table: Any, fields: tuple[Field, ...], path: str) -> None:
    """No unknown key, every required key present, every value of its kind."""
    ENGINE.check_table(table, fields, path)


@dataclass(frozen=True)
class Policy:
    kind: str
    name: str
    spec: dict
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def generation(self) -> str:
        """First 16 hex of SHA-256 of the canonical spec: a changed spec is a new generation."""
        return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "spec": self.spec}


def check_policy(doc: Any, source: str = "", path: str = "") -> Policy:
    """The :class:`Policy` of a parsed document (defaults filled in) or a :class:`PolicyError`."""
    check_table(doc, DOC_FIELDS, path)
    pre = f"{path}." if path else ""
    if not NAME_RE.match(doc["name"]):
        raise PolicyError(f"{pre}name", "must be 1-63 of a-z 0-9 - (starting with a letter or digit)")
    kind = doc["kind"]
    check_table(doc["spec"], SPEC_FIELDS[kind], f"{pre}spec")
    spec = ENGINE.with_defaults(doc["spec"], SPEC_FIELDS[kind])
    _check_semantics(kind, spec, f"{pre}spec")
    return Policy(kind, doc["name"], spec, source)


def _check_semantics(kind: str, spec: dict, path: str) -> None:
    if kind == "ShardMigration":
        if spec["old"] == spec["new"]:
            raise PolicyError(f"{path}.new", "the old and new ring are the same")
        for n in set(spec["old"]) & set(spec["new"]):
            if spec["old"][n] != spec["new"][n]:
                raise PolicyError(f"{path}.new.{n}", "a shard in both rings must have the same URL")
    if kind == "CRRPolicy" and spec["mode"] == "selective" and not spec["tenants"]:
        raise PolicyError(f"{path}.tenants", "selective replication needs at least one tenant")
    if kind == "TieringPolicy" and spec["hot_s"] > spec["warm_s"] > 0:
        raise PolicyError(f"{path}.hot_s", "hot_s must be <= warm_s")


def parse_policy(data: bytes, source: str = "") -> Policy:
    try:
        doc = textdata.toml_loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError("(file)", "not UTF-8 text", source) from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("(file)", f"not TOML: {exc}", source) from None
    try:
        return check_policy(doc, source)
    except PolicyError as exc:
        raise PolicyError(exc.key, exc.reason, source) from None


def load_policy(path: str) -> Policy:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PolicyError("(file)", exc.strerror or type(exc).__name__, path) from None
    return parse_policy(data, path)


def load_policies(paths: list[str]) -> list[Policy]:
    """The policies of ``paths``: each a policy file, or a directory whose ``*.toml`` files are
    policies (in name order; what ``flk operator run --policies`` reads). Two documents for one
    policy (the same kind and name) are refused, naming both files: the controller keeps one
    status and one audit trail per policy, and which document won would be an accident of order."""
    import os

    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(n for n in os.listdir(path) if n.endswith(".toml"))
            if not found:
                raise PolicyError("(file)", "a directory with no *.toml policy files", path)
            files += [os.path.join(path, n) for n in found]
        else:
            files.append(path)
    out: list[Policy] = []
    seen: dict[str, str] = {}
    for f in files:
        pol = load_policy(f)
        if pol.key in seen:
            raise PolicyError("name", f"{pol.kind} {pol.name!r} is also defined by {seen[pol.key]} (one document "
                              "per policy)", f)
        seen[pol.key] = f
        out.append(pol)
    return out


def reference_markdown() -> str:
    """The schema as Markdown tables (spec/OPERATOR.md embeds it)."""
    lines = ["| key | kind | default | meaning |", "|---|---|---|---|"]
    lines += [_row(f, "") for f in DOC_FIELDS]
    for kind, fields in SPEC_FIELDS.items():
        lines += ["", f"**{kind}** `spec`:", "", "| key | kind | default | meaning |", "|---|---|---|---|"]
        for f in fields:
            lines.append(_row(f, "spec."))
            lines += [_row(g, f"spec.{f.name}.") for g in f.fields]
    return "\n".join(lines) + "\n"


def _row(f: Field, pre: str) -> str:
    kind = f.kind + (" (" + " \\| ".join(f.choices) + ")" if f.choices else "")
    if f.minimum is not None:
        kind += f" >= {f.minimum:g}"
    if f.maximum is not None:
        kind += f" <= {f.maximum:g}"
    default = "required" if f.required else ("unset" if f.default is None else json.dumps(f.default))
    return f"| `{pre}{f.name}` | {kind} | {default} | {f.doc} |"
