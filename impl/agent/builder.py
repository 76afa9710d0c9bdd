"""The PCS builder: from an event stream to a signed PCS.

Why this module exists: the agent is where a PCS is born. Everything a
verifier later recomputes or checks -- N_j, D-hat, coh-star, r, the Merkle root
of the raw bytes, pcs_id, regime, budget and the signature -- is computed here
from two inputs: the *points* of the stream (what the signals are computed on)
and the *raw bytes* of the stream (what r and the Merkle root commit to).

Event stream formats (:func:`parse_events`):

* ``csv``  -- one point per row, every row the same number of numeric columns;
  a first row with a cell that is no number at all is a header and is skipped
  (``nan``, ``inf``, ``1e400`` are numbers, not finite ones: refused in any
  row, the first too); blank lines are ignored.
* ``jsonl`` -- one point per non-empty line: a JSON array of numbers, or a JSON
  object whose numeric (non-boolean) fields, in sorted key order, are the
  coordinates (every line must have the same numeric keys).
* ``npy``  -- a NumPy ``.npy`` array of shape ``(n,)`` or ``(n, d)`` (loaded
  with ``allow_pickle=False``).

Pipeline (:func:`build_pcs`), all in the canonical core's exact arithmetic:

1. ``N_j = signals.box_counts(points, scales)`` -- the points normalised per
   dimension to the unit cube, ``N_j`` the number of distinct non-empty cells
   at grid resolution ``scale`` (SPEC.md section 7);
2. ``D_hat = round9(signals.d_hat(scales, N_j))``;
3. ``coh_star, v_star = signals.coherence_detail(points, seed)`` (seeded), coh
   rounded with ``round9``, v_star rounded component-wise;
4. ``r = round9(signals.compressibility(raw))``;
5. ``merkle_root = merkle.stream_root(raw)``, ``pcs_id = pcs.pcs_id(root, epoch, shard)``;
6. ``budget`` from the *rounded* D-hat, coh-star and r (what a verifier reads
   back), published through ``round9``; ``regime`` from the same rounded D-hat
   and coh-star -- exactly what ``flk.impl.verifier.pipeline`` recomputes (SPEC 2: from
   the published values), so a threshold-straddling D-hat cannot make agent
   and verifier disagree;
7. the signature over the canonical bytes of the signed subset (HMAC-SHA256 or
   Ed25519, :class:`Signer`).

No I/O, no clock, no global RNG: the seed is an input, and the CLI
(``flk agent build``) does the file reading and the environment lookup.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core import merkle, signals, textdata
from ..core.canonical import round9
from ..core.errors import InvalidInput
from ..core.pcs import check_epoch, check_shard_id, pcs_id
from ..core.signing import sign_ed25519, sign_hmac

FORMATS = ("csv", "jsonl", "npy")
SCHEMA = "fractal-lba-kakeya"
VERSION = "1"
SIGN_ALGS = ("hmac", "ed25519")
MAX_SEED = (1 << 64) - 1


# --------------------------------------------------------------------------- parsing


def detect_format(filename: str) -> str:
    """The stream format implied by a file name's extension."""
    lower = filename.lower()
    for ext, fmt in ((".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".npy", "npy")):
        if lower.endswith(ext):
            return fmt
    raise InvalidInput("format", f"cannot tell the format of {filename!r}; pass --format csv|jsonl|npy")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _is_header(cells: list[str]) -> bool:
    """A first CSV row with a cell that is no number at all: a header. ``nan``, ``inf`` or
    ``1e400`` are numbers (not finite ones): such a row is data, refused as any later row is."""
    for cell in cells:
        try:
            float(cell)
        except ValueError:
            return True
    return False


def _parse_csv(raw: bytes) -> np.ndarray:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("events", f"CSV is not UTF-8 (byte {exc.start})") from None
    rows: list[list[float]] = []
    width = None
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not cells or all(c == "" for c in cells):
            continue
        if not rows and width is None and _is_header(cells):
            width = len(cells)  # header row: fixes the width, carries no point
            continue
        if not all(_is_number(c) for c in cells):
            bad = next(c for c in cells if not _is_number(c))
            raise InvalidInput("events", f"CSV line {lineno}: {bad[:40]!r} is not a finite number")
        if width is None:
            width = len(cells)
        if len(cells) != width:
            raise InvalidInput("events", f"CSV line {lineno}: {len(cells)} columns, expected {width}")
        rows.append([float(c) for c in cells])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)


def _parse_jsonl(raw: bytes) -> np.ndarray:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("events", f"JSONL is not UTF-8 (byte {exc.start})") from None
    rows: list[list[float]] = []
    keys: list[str] | None = None
    width = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = textdata.json_loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput("events", f"JSONL line {lineno}: not JSON ({exc.msg})") from None
        if isinstance(obj, dict):
            these = sorted(
                k for k, v in obj.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            )
            if keys is None:
                keys = these
            if these != keys:
                raise InvalidInput("events", f"JSONL line {lineno}: numeric fields {these} differ from {keys}")
            values = [obj[k] for k in these]
        elif isinstance(obj, list):
            if keys is not None:
                raise InvalidInput("events", f"JSONL line {lineno}: mixes arrays and objects")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj):
                raise InvalidInput("events", f"JSONL line {lineno}: array holds a non-number")
            values = obj
        else:
            raise InvalidInput("events", f"JSONL line {lineno}: must be an array of numbers or an object")
        if width is None:
            width = len(values)
        if len(values) != width:
            raise InvalidInput("events", f"JSONL line {lineno}: {len(values)} coordinates, expected {width}")
        try:
            point = [float(v) for v in values]
        except OverflowError:
            raise InvalidInput("events", f"JSONL line {lineno}: number too large") from None
        if not all(math.isfinite(v) for v in point):
            raise InvalidInput("events", f"JSONL line {lineno}: NaN/Infinity not allowed")
        rows.append(point)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)


NPY_MAGIC = b"\x93NUMPY"


def _parse_npy(raw: bytes) -> np.ndarray:
    if not bytes(raw[:len(NPY_MAGIC)]) == NPY_MAGIC:  # np.load would guess a pickle
        raise InvalidInput("events", "not a .npy array file (no .npy header)")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInput("events", f"not a readable .npy array file: {_first_sentence(str(exc))}") from None
    except Exception:  # noqa: BLE001 -- numpy parses the header with tokenize/ast: anything may fail there
        raise InvalidInput("events", "not a readable .npy array file: bad header") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise InvalidInput("events", "the .npy array must be numeric")
    return arr.astype(np.float64)


def _first_sentence(text: str, limit: int = 160) -> str:
    """A library's message up to its first full stop, whole words, at most ``limit`` characters."""
    text = " ".join(text.split()).split(". ")[0].rstrip(".") or "unreadable"
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def parse_events(raw: bytes, fmt: str) -> np.ndarray:
    """The points of an event stream as an ``(n, d)`` float64 array."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise InvalidInput("events", f"must be bytes, got {type(raw).__name__}")
    if fmt not in FORMATS:
        raise InvalidInput("format", f"unknown format {fmt!r}; expected one of {FORMATS}")
    raw = bytes(raw)
    arr = {"csv": _parse_csv, "jsonl": _parse_jsonl, "npy": _parse_npy}[fmt](raw)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInput("events", "the stream holds no points (need at least one point with >= 1 coordinate)")
    if arr.shape[1] > signals.MAX_DIM:
        raise InvalidInput("events", f"points have {arr.shape[1]} coordinates; at most {signals.MAX_DIM}")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput("events", "NaN and Infinity are not allowed")
    return arr


# --------------------------------------------------------------------------- signing


@dataclass(frozen=True)
class Signer:
    """A tenant's signing key. ``key`` is the HMAC key bytes or the 32-byte Ed25519 seed.

    ``repr`` never shows the key.
    """

    alg: str
    key: bytes = field(repr=False)
    tenant: str = "default"

    def __post_init__(self) -> None:
        if self.alg not in SIGN_ALGS:
            raise InvalidInput("sig_alg", f"unknown signature algorithm {self.alg!r}; expected hmac or ed25519")
        if not isinstance(self.key, bytes) or not self.key:
            raise InvalidInput("key", "signing key must be non-empty bytes")
        if self.alg == "ed25519" and len(self.key) != 32:
            raise InvalidInput("key", f"Ed25519 private key must be a 32-byte seed, got {len(self.key)} bytes")

    def sign(self, subset: Mapping) -> str:
        if self.alg == "hmac":
            return sign_hmac(subset, self.key)
        return sign_ed25519(subset, self.key)


def hmac_key_hint(var: str = "PCS_HMAC_KEY") -> str:
    """Where a default server's key is, for a message about a missing ``var`` (never its value)."""
    return f'a flk serve started without PCS_HMAC_KEY signs with the key it made: {var}="$(cat DATA_DIR/hmac.key)"'


def signer_from_env(env: Mapping[str, str], tenant: str | None = None) -> Signer:
    """The signer described by the environment.

    ``PCS_SIGN_ALG`` (``hmac``, the default, or ``ed25519``); ``PCS_HMAC_KEY``
    (the key is the UTF-8 bytes of the value, as the seed agents used it) or
    ``PCS_ED25519_PRIV_B64`` (strict base64 of the 32-byte private seed);
    ``TENANT_ID`` names the tenant unless ``tenant`` is given (default
    ``default``). Error messages name the variable, never its value.
    """
    alg = env.get("PCS_SIGN_ALG", "hmac").strip().lower() or "hmac"
    if alg not in SIGN_ALGS:
        raise InvalidInput("PCS_SIGN_ALG", f"must be hmac or ed25519, got {alg[:20]!r}")
    tenant = tenant or env.get("TENANT_ID") or "default"
    if alg == "hmac":
        key = env.get("PCS_HMAC_KEY", "")
        if not key:
            raise InvalidInput("PCS_HMAC_KEY", f"is not set (PCS_SIGN_ALG=hmac needs it; {hmac_key_hint()})")
        return Signer("hmac", key.encode("utf-8"), tenant)
    text = env.get("PCS_ED25519_PRIV_B64", "").strip()
    if not text:
        raise InvalidInput("PCS_ED25519_PRIV_B64", "is not set (PCS_SIGN_ALG=ed25519 needs it)")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("PCS_ED25519_PRIV_B64", "is not valid base64") from None
    if len(raw) != 32:
        raise InvalidInput("PCS_ED25519_PRIV_B64", f"must decode to a 32-byte seed, got {len(raw)} bytes")
    return Signer("ed25519", raw, tenant)


# --------------------------------------------------------------------------- building


def _check_points(points: object) -> np.ndarray:
    arr = signals.as_points(points)
    if arr.shape[0] == 0:
        raise InvalidInput("points", "need at least one point")
    return arr


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInput("seed", "must be an integer in [0, 2^64-1]")
    return seed


def build_pcs(
    points: object,
    raw: bytes,
    shard_id: str,
    epoch: int,
    signer: Signer | None,
    seed: int = 0,
    scales: Sequence[int] = signals.DEFAULT_SCALES,
    budget_params: signals.BudgetParams = signals.DEFAULT_BUDGET,
    regime_thresholds: signals.RegimeThresholds = signals.DEFAULT_REGIME,
    meta: Mapping[str, str] | None = None,
) -> dict:
    """A v1 PCS (wire format of ARCHITECTURE.md) for ``points``/``raw``.

    With ``signer=None`` the PCS is returned unsigned (``sig`` absent); this is
    for callers that sign elsewhere.
    """
    check_shard_id(shard_id)
    check_epoch(epoch)
    seed = _seed(seed)
    scales = [int(s) for s in signals.check_scales_counts(list(scales), [1] * len(scales))[0]]
    pts = _check_points(points)
    n_j = signals.box_counts(pts, scales)
    d = round9(signals.d_hat(scales, n_j), "D_hat")
    coh_raw, v_star = signals.coherence_detail(pts, seed)
    coh = round9(coh_raw, "coh_star")
    r = round9(signals.compressibility(raw), "r")
    root = merkle.stream_root(raw)
    pid = pcs_id(root, epoch, shard_id)
    pcs: dict = {
        "pcs_id": pid,
        "schema": SCHEMA,
        "version": VERSION,
        "shard_id": shard_id,
        "epoch": epoch,
        "scales": scales,
        "N_j": {str(s): n for s, n in zip(scales, n_j, strict=True)},
        "coh_star": coh,
        "v_star": [round9(v, "v_star") for v in v_star],
        "D_hat": d,
        "r": r,
        "regime": signals.regime(d, coh, regime_thresholds),
        "budget": round9(signals.budget(d, coh, r, budget_params), "budget"),
        "merkle_root": root,
        "seed": seed,
    }
    if meta:
        for k, v in meta.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidInput("meta", "keys and values must be strings")
        pcs["meta"] = dict(meta)
    if signer is not None:
        pcs["sig_alg"] = signer.alg
        pcs["sig"] = signer.sign(pcs)
    return pcs


def build_pcs_from_stream(
    raw: bytes,
    fmt: str,
    shard_id: str,
    epoch: int,
    signer: Signer | None,
    seed: int = 0,
    scales: Sequence[int] = signals.DEFAULT_SCALES,
) -> dict:
    """Parse ``raw`` as ``fmt`` and build its PCS (the points and the bytes come from the same stream)."""
    return build_pcs(parse_events(raw, fmt), raw, shard_id, epoch, signer, seed=seed, scales=scales)
