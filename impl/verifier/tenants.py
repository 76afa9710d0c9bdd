"""Tenants: who may submit, with which keys, how often.

Why this module exists: the pipeline must resolve a tenant and its *own* keys
before it verifies a signature and before it touches the dedup store
(INV-VERIFY-BEFORE-DEDUP, INV-TENANT-ISOLATION): a key of tenant A is never
tried on a PCS submitted as tenant B.

Configuration sources (all produce a :class:`TenantRegistry`):

* a TOML file (:func:`load_toml` / :func:`from_mapping`)::

      [defaults]                 # optional, applies to every tenant
      rate_per_s = 100.0         # token-bucket refill; 0 = unlimited
      burst = 200                # bucket size
      daily_quota = 0            # requests per UTC day; 0 = unlimited
      profiles = ["v1"]          # or ["v1", "legacy-0.1"]
      pii_mode = "off"           # off | detect | block | redact (governance's gate)
      vrf = "off"                # off | optional | required (needs vrf_public_key_b64)

      [tenants.acme]
      alg = "hmac"               # hmac | ed25519
      labels = { team = "x" }    # extra metrics labels (config only)
      [[tenants.acme.keys]]
      id = "2026-01"
      secret = "..."             # hmac: UTF-8 secret, or secret_b64 = "..."
      # ed25519: public_key_b64 = "<32 raw bytes, base64>"
      not_before = 1767225600    # seconds since the epoch (or a TOML datetime); optional
      not_after = 1769904000     # exclusive; optional
      # vrf_public_key_b64 = "..." (32-byte ECVRF-EDWARDS25519 public key) with vrf = "optional"|"required":
      # a PCS must carry a valid ``vrf_proof`` for its pcs_id preimage (401 vrf_invalid / vrf_missing /
      # vrf_seed_mismatch otherwise; GOVERNANCE.md section 6)

* the environment form ``TENANTS=t1:hmac:key1,t2:ed25519:pubkey_b64``
  (repeat a tenant to give it several keys; :func:`tenants_setting_entries` is
  the one grammar of that setting, ``flk serve``'s configuration parses it there too), and
* single-tenant mode (tenant ``default``) from ``PCS_SIGN_ALG`` (``hmac`` or
  ``ed25519``), ``PCS_HMAC_KEY`` / ``PCS_HMAC_KEYS`` (comma-separated) or
  ``PCS_ED25519_PUB_B64`` (comma-separated allowed). A ``none``
  algorithm is refused: the pipeline always verifies (fail closed).

A tenant's rate limit and daily quota are enforced by the token buckets of
:mod:`flk.impl.verifier.admission` (:class:`~flk.impl.verifier.admission.Limiter`,
re-exported here); the pipeline asks them before the WAL append and answers
429 + ``Retry-After``.
Never log keys: :class:`TenantKey` hides its material from ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..core import textdata
from ..core.canonical import PROFILES
from ..core.errors import InvalidInput
from ..core.tenantid import DEFAULT_TENANT, check_tenant_id
from .admission import DAY_S, Admission, Limiter  # noqa: F401 -- re-exported: the buckets live in admission

ALGS = ("hmac", "ed25519")
PII_MODES = ("off", "detect", "block", "redact")


@dataclass(frozen=True)
class TenantKey:
    key_id: str
    material: bytes = field(repr=False)  # HMAC secret or raw 32-byte Ed25519 public key
    not_before: float | None = None
    not_after: float | None = None  # exclusive

    def active(self, now: float) -> bool:
        if self.not_before is not None and now < self.not_before:
            return False
        return not (self.not_after is not None and now >= self.not_after)


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    alg: str
    keys: tuple[TenantKey, ...]
    rate_per_s: float = 0.0
    burst: float = 0.0
    daily_quota: int = 0
    profiles: tuple[str, ...] = ("v1",)
    pii_mode: str = "off"
    labels: tuple[tuple[str, str], ...] = ()
    vrf: str = "off"
    vrf_public_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # keys without a validity window are active at any time: no per-call test (a cache, not a field)
        timeless = all(k.not_before is None and k.not_after is None for k in self.keys)
        object.__setattr__(self, "_timeless_keys", tuple(k.material for k in self.keys) if timeless else None)

    def active_keys(self, now: float) -> list[bytes]:
        if self._timeless_keys is not None:
            return list(self._timeless_keys)
        return [k.material for k in self.keys if k.active(now)]

    def allows(self, profile: str) -> bool:
        return profile in self.profiles


class TenantRegistry:
    """Tenants by id; ``single`` means a missing ``X-Tenant-Id`` means ``default``."""

    def __init__(self, tenants: list[Tenant] | tuple[Tenant, ...], single: bool = False) -> None:
        self._by_id: dict[str, Tenant] = {}
        for t in tenants:
            check_tenant_id(t.tenant_id, f"tenants.{t.tenant_id}")  # every registry, however built (the simulator's too)
            if t.tenant_id in self._by_id:
                raise InvalidInput(f"tenants.{t.tenant_id}", "defined twice")
            self._by_id[t.tenant_id] = t
        self.single = single

    def resolve(self, header: str | None) -> Tenant | None:
        if header is None or header == "":
            return self._by_id.get(DEFAULT_TENANT) if self.single else None
        return self._by_id.get(header)

    def ids(self) -> list[str]:
        return sorted(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)


# -- parsing -----------------------------------------------------------------------------
def _b64(text: object, field_name: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(field_name, "must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(field_name, "not valid base64") from None


def _ed_pub(text: object, field_name: str) -> bytes:
    raw = _b64(text, field_name)
    if len(raw) != 32:
        raise InvalidInput(field_name, f"Ed25519 public key must be 32 bytes, got {len(raw)}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise InvalidInput(field_name, "not a valid Ed25519 public key") from None
    return raw


def _time(v: object, field_name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.UTC)
        return v.timestamp()
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidInput(field_name, "must be seconds since the epoch or a TOML datetime")
    return float(v)


def _num(v: object, field_name: str, integer: bool = False) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise InvalidInput(field_name, "must be a non-negative number")
    if integer and not isinstance(v, int):
        raise InvalidInput(field_name, "must be a non-negative integer")
    return v


def _key(alg: str, spec: Mapping, where: str, index: int) -> TenantKey:
    if not isinstance(spec, Mapping):
        raise InvalidInput(where, "each key must be a table")
    known = {"id", "secret", "secret_b64", "public_key_b64", "not_before", "not_after"}
    for k in spec:
        if k not in known:
            raise InvalidInput(f"{where}.{k}", "unknown key field")
    kid = spec.get("id", f"k{index}")
    if not isinstance(kid, str):
        raise InvalidInput(f"{where}.id", "must be a string")
    if alg == "hmac":
        if "secret" in spec:
            if not isinstance(spec["secret"], str) or not spec["secret"]:
                raise InvalidInput(f"{where}.secret", "must be a non-empty string")
            material = spec["secret"].encode("utf-8")
        elif "secret_b64" in spec:
            material = _b64(spec["secret_b64"], f"{where}.secret_b64")
            if not material:
                raise InvalidInput(f"{where}.secret_b64", "must not be empty")
        else:
            raise InvalidInput(where, "hmac key needs secret or secret_b64")
        if "public_key_b64" in spec:
            raise InvalidInput(f"{where}.public_key_b64", "not allowed for hmac")
    else:
        if "public_key_b64" not in spec:
            raise InvalidInput(where, "ed25519 key needs public_key_b64")
        if "secret" in spec or "secret_b64" in spec:
            raise InvalidInput(where, "ed25519 tenants hold public keys only")
        material = _ed_pub(spec["public_key_b64"], f"{where}.public_key_b64")
    nb = _time(spec.get("not_before"), f"{where}.not_before")
    na = _time(spec.get("not_after"), f"{where}.not_after")
    if nb is not None and na is not None and na <= nb:
        raise InvalidInput(f"{where}.not_after", "must be after not_before")
    return TenantKey(kid, material, nb, na)


_TENANT_FIELDS = {"alg", "keys", "rate_per_s", "burst", "daily_quota", "profiles", "pii_mode", "labels", "vrf",
                  "vrf_public_key_b64"}
VRF_MODES = ("off", "optional", "required")


def _vrf(merged: Mapping, where: str) -> tuple[str, bytes | None]:
    """The tenant's VRF mode and public key (a mode other than off needs the key)."""
    mode = merged.get("vrf", "off")
    if mode not in VRF_MODES:
        raise InvalidInput(f"{where}.vrf", f"must be one of {VRF_MODES}")
    text = merged.get("vrf_public_key_b64")
    if text is None:
        if mode != "off":
            raise InvalidInput(f"{where}.vrf_public_key_b64", f"vrf = {mode!r} needs the tenant's VRF public key")
        return mode, None
    if not isinstance(text, str):
        raise InvalidInput(f"{where}.vrf_public_key_b64", "must be a base64 string")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}.vrf_public_key_b64", "is not strict base64") from None
    if len(key) != 32:
        raise InvalidInput(f"{where}.vrf_public_key_b64", f"must decode to 32 bytes, got {len(key)}")
    return mode, key


def _tenant(tid: str, spec: Mapping, defaults: Mapping) -> Tenant:
    where = f"tenants.{tid}"
    if not isinstance(spec, Mapping):
        raise InvalidInput(where, "must be a table")
    for k in spec:
        if k not in _TENANT_FIELDS:
            raise InvalidInput(f"{where}.{k}", "unknown tenant field")
    merged = {**defaults, **spec}
    alg = merged.get("alg")
    if alg not in ALGS:
        raise InvalidInput(f"{where}.alg", f"must be one of {ALGS}")
    keys_spec = spec.get("keys")
    if not isinstance(keys_spec, list) or not keys_spec:
        raise InvalidInput(f"{where}.keys", "needs at least one key")
    keys = tuple(_key(alg, k, f"{where}.keys[{i}]", i) for i, k in enumerate(keys_spec))
    profiles = merged.get("profiles", ["v1"])
    if not isinstance(profiles, list) or not profiles or any(p not in PROFILES for p in profiles):
        raise InvalidInput(f"{where}.profiles", f"must be a non-empty list of {PROFILES}")
    pii = merged.get("pii_mode", "off")
    if pii not in PII_MODES:
        raise InvalidInput(f"{where}.pii_mode", f"must be one of {PII_MODES}")
    labels = merged.get("labels", {})
    if not isinstance(labels, Mapping) or any(not isinstance(v, str) for v in labels.values()):
        raise InvalidInput(f"{where}.labels", "must be a table of strings")
    vrf_mode, vrf_key = _vrf(merged, where)
    rate = float(_num(merged.get("rate_per_s", 0.0), f"{where}.rate_per_s"))
    burst = float(_num(merged.get("burst", max(1.0, rate)), f"{where}.burst"))
    if rate > 0 and burst < 1:
        raise InvalidInput(f"{where}.burst", "must be >= 1 when rate_per_s > 0")
    return Tenant(
        tenant_id=tid,
        alg=alg,
        keys=keys,
        rate_per_s=rate,
        burst=burst,
        daily_quota=int(_num(merged.get("daily_quota", 0), f"{where}.daily_quota", integer=True)),
        profiles=tuple(sorted(set(profiles), key=PROFILES.index)),
        pii_mode=pii,
        labels=tuple(sorted(labels.items())),
        vrf=vrf_mode,
        vrf_public_key=vrf_key,
    )


def from_mapping(doc: Mapping) -> TenantRegistry:
    for k in doc:
        if k not in ("defaults", "tenants", "single_tenant"):
            raise InvalidInput(k, "unknown top-level table (expected defaults, tenants, single_tenant)")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise InvalidInput("defaults", "must be a table")
    for k in defaults:
        if k not in _TENANT_FIELDS - {"keys"}:
            raise InvalidInput(f"defaults.{k}", "unknown default")
    tenants = doc.get("tenants", {})
    if not isinstance(tenants, Mapping) or not tenants:
        raise InvalidInput("tenants", "needs at least one tenant")
    out = [_tenant(check_tenant_id(tid, f"tenants.{tid}"), spec, defaults) for tid, spec in sorted(tenants.items())]
    single = doc.get("single_tenant", False)
    if not isinstance(single, bool):
        raise InvalidInput("single_tenant", "must be true or false")
    return TenantRegistry(out, single=single)


def load_toml(path: str) -> TenantRegistry:
    try:
        with open(path, "rb") as f:
            doc = textdata.toml_load(f)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput("tenants_file", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise InvalidInput("tenants_file", f"cannot read: {exc.strerror}") from None
    return from_mapping(doc)


def tenants_setting_entries(raw: str | Mapping) -> list[tuple[str, str, str]]:
    """The one grammar of the ``TENANTS`` setting: ``(tenant, alg, key text)`` in order.

    ``raw`` is the text form ``t1:hmac:key1,t2:ed25519:pubkey_b64`` (the seed's form:
    items separated by ``,``, fields by the first two ``:``, so a key may hold ``:``; a
    tenant repeated gets several keys, for rotation) or the TOML table form
    ``{t1 = [{alg = "hmac", key = "key1"}], ...}`` of ``flk serve --config``. Every tenant
    id passes the one rule (:mod:`flk.impl.core.tenantid`), every algorithm is one of
    :data:`ALGS`, one algorithm per tenant, at least one entry. Raises
    :class:`InvalidInput` naming ``TENANTS[i]`` (text) or ``TENANTS.<tenant>`` (table);
    a message never shows a key. What a key must be is left to the caller (a server
    demands 16-byte HMAC keys; an agent-side registry takes the text as given)."""
    entries: list[tuple[str, str, str, str]] = []  # (where, tenant, alg, key)
    if isinstance(raw, Mapping):
        for tid, keys in raw.items():
            where = f"TENANTS.{tid}"
            if not isinstance(keys, list):
                raise InvalidInput(where, "must be a list of {alg, key} tables")
            for item in keys:
                if not isinstance(item, Mapping) or set(item) != {"alg", "key"} or not isinstance(item["key"], str):
                    raise InvalidInput(where, "each entry is a table with alg and key (strings)")
                entries.append((where, tid, item["alg"], item["key"]))
    else:
        for i, item in enumerate(x for x in str(raw).split(",") if x.strip()):
            parts = item.strip().split(":", 2)
            if len(parts) != 3 or not parts[2]:
                raise InvalidInput(f"TENANTS[{i}]", "expected tenant:alg:key (alg hmac or ed25519)")
            entries.append((f"TENANTS[{i}]", *parts))
    if not entries:
        raise InvalidInput("TENANTS", "no tenants given")
    algs: dict[str, str] = {}
    for where, tid, alg, _ in entries:
        check_tenant_id(tid, where)
        if alg not in ALGS:
            raise InvalidInput(where, f"algorithm must be one of {ALGS}")
        if algs.setdefault(tid, alg) != alg:
            raise InvalidInput(where, f"tenant {tid} listed with two algorithms (one algorithm per tenant)")
    return [(tid, alg, key) for _, tid, alg, key in entries]


def parse_tenants_env(value: str | Mapping, **common) -> TenantRegistry:
    """The registry of a ``TENANTS`` value (:func:`tenants_setting_entries`).

    HMAC keys are the UTF-8 text (as agents use them); ``common`` may
    set rate_per_s, burst, daily_quota, profiles, pii_mode for every tenant."""
    specs: dict[str, dict] = {}
    for tid, alg, key in tenants_setting_entries(value):
        spec = specs.setdefault(tid, {"alg": alg, "keys": []})
        k = {"id": f"k{len(spec['keys'])}"}
        k["secret" if alg == "hmac" else "public_key_b64"] = key
        spec["keys"].append(k)
    return from_mapping({"defaults": dict(common), "tenants": specs})


def from_env(env: Mapping[str, str], **common) -> TenantRegistry:
    """``TENANTS`` if set (multi-tenant), else single-tenant mode from ``PCS_*``."""
    if env.get("TENANTS"):
        return parse_tenants_env(env["TENANTS"], **common)
    alg = env.get("PCS_SIGN_ALG") or "hmac"  # the server's and the agent's default
    if alg == "hmac":
        raw = env.get("PCS_HMAC_KEYS") or env.get("PCS_HMAC_KEY") or ""
        keys = [{"id": f"k{i}", "secret": k} for i, k in enumerate(x for x in raw.split(",") if x)]
        if not keys:
            raise InvalidInput("PCS_HMAC_KEY", "required when PCS_SIGN_ALG=hmac (the default)")
    elif alg == "ed25519":
        raw = env.get("PCS_ED25519_PUB_B64", "")
        keys = [{"id": f"k{i}", "public_key_b64": k} for i, k in enumerate(x for x in raw.split(",") if x)]
        if not keys:
            raise InvalidInput("PCS_ED25519_PUB_B64", "required when PCS_SIGN_ALG=ed25519")
    else:
        raise InvalidInput("PCS_SIGN_ALG", "must be hmac or ed25519 (or set TENANTS); 'none' is not supported")
    return from_mapping(
        {"defaults": dict(common), "tenants": {DEFAULT_TENANT: {"alg": alg, "keys": keys}}, "single_tenant": True}
    )
