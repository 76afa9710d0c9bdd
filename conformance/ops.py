"""The conformance ops over the reference core (spec/ARCHITECTURE.md table).

Why this module exists: the builtin adapter, the Python subprocess adapter and
the planted-bug adapters answer the same ops the same way; this is the one
mapping from ``(op, profile, input)`` to an output dict, on top of
``flk.impl`` (canonical, signing, pcs, merkle, signals). Bad input raises
:class:`~flk.impl.core.errors.InvalidInput` (-> ``invalid_input``); an op or profile
this implementation does not offer raises :class:`Unsupported`.

Every op is a plain function ``op(input: dict, profile: str) -> dict`` in
:data:`OPS`; adapters with a planted bug replace one entry in a copy of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flk.impl.core import canonical, merkle, pcs, signals, signing
from flk.impl.core.errors import InvalidInput

from .vectors import decode_input

NAME = "flk-reference"
PROFILES = ("v1", "legacy-0.1")
REQUIRED_OPS = (
    "canonical_bytes",
    "fmt9",
    "sign_hmac",
    "verify_hmac",
    "sign_ed25519",
    "verify_ed25519",
    "pcs_id",
    "merkle_root",
    "d_hat",
    "budget",
    "regime",
)
OPTIONAL_OPS = ("coherence", "build_pcs")
ALL_OPS = REQUIRED_OPS + OPTIONAL_OPS


class Unsupported(Exception):
    """The implementation does not offer this op (or this op under this profile)."""


OpFn = Callable[[Mapping[str, Any], str], dict]


def field(inp: Mapping[str, Any], name: str) -> Any:
    if not isinstance(inp, Mapping):
        raise InvalidInput("input", "must be an object")
    if name not in inp:
        raise InvalidInput(name, "missing")
    return inp[name]


def b64_field(value: object, name: str, length: int | None = None) -> bytes:
    return signing.b64decode_strict(value, length, field=name)


def b64_list(value: object, name: str, length: int | None = None) -> list[bytes]:
    if not isinstance(value, list):
        raise InvalidInput(name, "must be a list of base64 strings")
    return [b64_field(v, f"{name}[{i}]", length) for i, v in enumerate(value)]


def _subset(inp: Mapping[str, Any]) -> Mapping[str, Any]:
    s = field(inp, "subset")
    if not isinstance(s, Mapping):
        raise InvalidInput("subset", "must be an object")
    return s


def op_canonical_bytes(inp, profile):
    return {"bytes_b64": signing.b64encode(canonical.canonical_bytes(_subset(inp), profile))}


def op_fmt9(inp, profile):
    if profile != "v1":
        raise Unsupported(f"fmt9 is defined for profile v1 only, not {profile}")
    return {"text": canonical.fmt9(field(inp, "x"), "x")}


def op_sign_hmac(inp, profile):
    key = b64_field(field(inp, "key_b64"), "key_b64")
    if not key:
        raise InvalidInput("key_b64", "HMAC key must be non-empty")
    return {"sig": signing.sign_hmac(_subset(inp), key, profile)}


def op_verify_hmac(inp, profile):
    keys = b64_list(field(inp, "keys_b64"), "keys_b64")
    for i, key in enumerate(keys):
        if not key:
            raise InvalidInput(f"keys_b64[{i}]", "HMAC key must be non-empty")
    sig = field(inp, "sig")
    return {"valid": signing.verify_hmac(_subset(inp), sig, keys, profile)}


def op_sign_ed25519(inp, profile):
    seed = b64_field(field(inp, "private_key_b64"), "private_key_b64", 32)
    return {"sig": signing.sign_ed25519(_subset(inp), seed, profile)}


def op_verify_ed25519(inp, profile):
    keys = b64_list(field(inp, "public_keys_b64"), "public_keys_b64", 32)
    sig = field(inp, "sig")
    return {"valid": signing.verify_ed25519(_subset(inp), sig, keys, profile)}


def op_pcs_id(inp, profile):
    return {
        "pcs_id": pcs.pcs_id(field(inp, "merkle_root"), field(inp, "epoch"), field(inp, "shard_id"))
    }


def op_merkle_root(inp, profile):
    chunks = b64_list(field(inp, "chunks_b64"), "chunks_b64")
    return {"root": merkle.merkle_root(chunks, profile)}


def op_d_hat(inp, profile):
    d = signals.d_hat(field(inp, "scales"), field(inp, "n_j"), profile)
    return {"d_hat": canonical.fmt9(d, "d_hat")}


def op_budget(inp, profile):
    params = inp.get("params") if isinstance(inp, Mapping) else None
    if params is not None and not isinstance(params, Mapping):
        raise InvalidInput("params", "must be an object")
    p = signals.budget_params(params)
    b = signals.budget(field(inp, "D_hat"), field(inp, "coh_star"), field(inp, "r"), p)
    return {"budget": canonical.fmt9(b, "budget")}


def op_regime(inp, profile):
    return {"regime": signals.regime(field(inp, "D_hat"), field(inp, "coh_star"))}


def _int_opt(inp: Mapping[str, Any], name: str, default: int) -> int:
    v = inp.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidInput(name, "must be an integer >= 1")
    return v


def _check_points(points: object) -> None:
    """Points are a list of numbers or of lists of numbers. (numpy alone would
    also take booleans and numeric strings as coordinates; JSON says otherwise.)"""
    if not isinstance(points, list):
        raise InvalidInput("points", "must be a list of points")
    for i, row in enumerate(points):
        for v in row if isinstance(row, list) else [row]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidInput(f"points[{i}]", f"coordinates must be numbers, got {type(v).__name__}")


def op_coherence(inp, profile):
    points = field(inp, "points")
    _check_points(points)
    seed = field(inp, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInput("seed", "must be an integer in [0, 2^64-1]")
    n_dir = _int_opt(inp, "n_directions", signals.COH_DIRECTIONS)
    bins = _int_opt(inp, "bins", signals.COH_BINS)
    return {"coh_star": canonical.fmt9(signals.coherence(points, seed, n_dir, bins), "coh_star")}


def op_build_pcs(inp, profile):
    if profile != "v1":
        raise Unsupported("build_pcs is defined for profile v1 only")
    try:
        from flk.impl.agent.builder import build_pcs_from_stream
    except ImportError:
        raise Unsupported("build_pcs needs flk.impl.agent.builder, which is not available") from None
    raw = b64_field(field(inp, "events_b64"), "events_b64")
    fmt = field(inp, "format")
    seed = field(inp, "seed")
    pcs_doc = build_pcs_from_stream(raw, fmt, field(inp, "shard_id"), field(inp, "epoch"), None, seed=seed)
    return {"pcs": pcs_doc}


OPS: dict[str, OpFn] = {
    "canonical_bytes": op_canonical_bytes,
    "fmt9": op_fmt9,
    "sign_hmac": op_sign_hmac,
    "verify_hmac": op_verify_hmac,
    "sign_ed25519": op_sign_ed25519,
    "verify_ed25519": op_verify_ed25519,
    "pcs_id": op_pcs_id,
    "merkle_root": op_merkle_root,
    "d_hat": op_d_hat,
    "budget": op_budget,
    "regime": op_regime,
    "coherence": op_coherence,
    "build_pcs": op_build_pcs,
}


def hello(ops: Mapping[str, OpFn] = OPS, name: str = NAME) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("flk-lab")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        ver = "0+unknown"
    supported = [op for op in ALL_OPS if op in ops]
    if "build_pcs" in supported:
        try:
            from flk.impl.agent.builder import build_pcs_from_stream  # noqa: F401
        except ImportError:
            supported.remove("build_pcs")
    return {"name": name, "version": ver, "ops": supported, "profiles": list(PROFILES)}


def handle(request: object, ops: Mapping[str, OpFn] = OPS, name: str = NAME) -> dict:
    """One protocol request (already parsed JSON) -> one response dict. Never raises."""
    if not isinstance(request, dict):
        return {"id": None, "ok": False, "error": {"kind": "invalid_input", "message": "request must be a JSON object"}}
    rid = request.get("id")
    op = request.get("op")
    profile = request.get("profile", "v1")
    try:
        if op == "hello":
            return {"id": rid, "ok": True, "output": hello(ops, name)}
        if op not in ops:
            raise Unsupported(f"op {op!r} is not supported")
        if profile not in PROFILES:
            raise Unsupported(f"profile {profile!r} is not supported")
        inp = decode_input(request.get("input", {}))
        if not isinstance(inp, dict):
            raise InvalidInput("input", "must be an object")
        return {"id": rid, "ok": True, "output": ops[op](inp, profile)}
    except Unsupported as exc:
        return {"id": rid, "ok": False, "error": {"kind": "unsupported", "message": str(exc)}}
    except InvalidInput as exc:
        return {"id": rid, "ok": False, "error": {"kind": "invalid_input", "message": str(exc)}}
    except Exception as exc:  # noqa: BLE001 - reported to the runner, never a traceback
        return {"id": rid, "ok": False, "error": {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}}
