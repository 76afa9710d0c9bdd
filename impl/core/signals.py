"""The PCS signals: box counts, D-hat, coh-star, r, regime and budget (SPEC.md section 7).

All of these are pure functions with exactly specified arithmetic so that two
implementations with the same inputs (and, for coh-star, the same seed) agree
after :func:`flk.impl.core.canonical.fmt9`:

* **Box counting** -- points are normalised per dimension to the unit cube
  (``(x-min)/(max-min)``, a zero-width dimension maps to 0); ``N_j`` at
  resolution ``s`` is the number of distinct cells ``min(floor(u*s), s-1)``.
* **D-hat** -- Theil-Sen slope of ``log2(N_j)`` against ``log2(scale)``: the
  *true* median of all pairwise slopes (mean of the two middle values for an
  even count), as ``scipy.stats.theilslopes`` computes it. ``legacy-0.1``
  takes the upper median ``slopes[len//2]``.
* **coh-star** -- directions drawn from SplitMix64 seeded with ``seed``; see
  :func:`coherence`.
* **r** -- ``len(zlib.compress(raw, 6)) / len(raw)`` clamped to [0, 1];
  empty input gives 1.0.
* **regime** -- sticky if ``coh >= 0.70 and D <= 1.5``; non_sticky if
  ``D >= 2.6``; otherwise mixed.
* **budget** -- ``base + alpha*(1-r) + beta*max(0, D-D0) + gamma*coh``,
  evaluated left to right, clamped to [0, 1].
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import accel
from .canonical import check_profile, finite_number
from .errors import InvalidInput

MASK64 = (1 << 64) - 1
DEFAULT_SCALES = (2, 4, 8, 16, 32)
COH_DIRECTIONS = 100
COH_BINS = 20
MAX_SCALES = 64
MAX_DIM = 8  # rejection sampling in the unit ball gets slow beyond this


@dataclass(frozen=True)
class BudgetParams:
    """Budget weights (policy-tunable; defaults per SPEC section 7.6)."""

    base: float = 0.10
    alpha: float = 0.30
    beta: float = 0.50
    gamma: float = 0.20
    d0: float = 2.2


@dataclass(frozen=True)
class RegimeThresholds:
    sticky_coh: float = 0.70
    sticky_d_max: float = 1.5
    non_sticky_d_min: float = 2.6


DEFAULT_BUDGET = BudgetParams()
DEFAULT_REGIME = RegimeThresholds()
# the compiled Theil-Sen slope (through flk.impl.core.accel); None on the pure path
_compiled_theil_sen = accel.bind("theil_sen", globals(), "_compiled_theil_sen")


def _int_list(values: object, field: str, minimum: int) -> list[int]:
    if type(values) in (list, tuple) and all(type(v) is int for v in values):  # fast path: plain ints
        if not values or min(values) >= minimum:
            return list(values)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidInput(field, "must be a list of integers")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidInput(f"{field}[{i}]", f"must be an integer, got {type(v).__name__}")
        if v < minimum:
            raise InvalidInput(f"{field}[{i}]", f"must be >= {minimum}, got {v}")
        out.append(int(v))
    return out


def check_scales_counts(scales: object, n_j: object) -> tuple[list[int], list[int]]:
    """Validate the D-hat inputs: scales strictly increasing integers >= 2, N_j integers >= 1."""
    s = _int_list(scales, "scales", 2)
    n = _int_list(n_j, "N_j", 1)
    if not 2 <= len(s) <= MAX_SCALES:
        raise InvalidInput("scales", f"needs between 2 and {MAX_SCALES} scales, got {len(s)}")
    if len(n) != len(s):
        raise InvalidInput("N_j", f"has {len(n)} counts for {len(s)} scales")
    for i in range(1, len(s)):
        if s[i] <= s[i - 1]:
            raise InvalidInput(f"scales[{i}]", "scales must be strictly increasing")
    return s, n


def pairwise_slopes(scales: Sequence[int], n_j: Sequence[int]) -> list[float]:
    """Every slope ``(log2 N_j - log2 N_i) / (log2 s_j - log2 s_i)`` for i < j, sorted."""
    log2 = math.log2
    xs = [log2(v) for v in scales]
    ys = [log2(v) for v in n_j]
    count = len(xs)
    return sorted([(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(count) for j in range(i + 1, count)])


def d_hat(scales: Sequence[int], n_j: Sequence[int], profile: str = "v1") -> float:
    """Theil-Sen slope of log2(N_j) on log2(scale) (unrounded; publish with fmt9)."""
    check_profile(profile)
    checked_scales, checked_counts = check_scales_counts(scales, n_j)
    return theil_sen_slope(checked_scales, checked_counts, profile)


def theil_sen_slope(scales: Sequence[int], n_j: Sequence[int], profile: str = "v1") -> float:
    """The arithmetic of :func:`d_hat` alone, for inputs already checked -- by
    :func:`check_scales_counts` or by a stricter check such as the verifier's
    wire validation (which runs before it on every request): the true median
    of the pairwise slopes; ``legacy-0.1`` takes the upper median.

    The compiled core answers lists of plain ints (up to 16 scales) with the
    same arithmetic; anything else, and every error, is the pure code's."""
    if _compiled_theil_sen is not None and type(scales) is list and type(n_j) is list:
        slope = _compiled_theil_sen(scales, n_j, profile == "legacy-0.1")
        if slope is not None:
            return slope
    return pure_theil_sen_slope(scales, n_j, profile)


def pure_theil_sen_slope(scales: Sequence[int], n_j: Sequence[int], profile: str = "v1") -> float:
    """:func:`theil_sen_slope` in pure Python (the reference)."""
    slopes = pairwise_slopes(scales, n_j)
    middle = len(slopes) // 2
    if profile == "legacy-0.1" or len(slopes) % 2:
        return slopes[middle]
    return (slopes[middle - 1] + slopes[middle]) / 2.0


def as_points(points: object) -> np.ndarray:
    """``points`` as a finite float64 array of shape (n, d), 1 <= d <= MAX_DIM (1-D input is one column)."""
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("points", "must be a numeric array of shape (n, d)") from None
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] < 1 or arr.shape[1] > MAX_DIM:
        raise InvalidInput("points", f"must have shape (n, d) with 1 <= d <= {MAX_DIM}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise InvalidInput("points", "NaN and Infinity are not allowed")
    return arr


def normalise(points: object) -> np.ndarray:
    """Per-dimension min-max normalisation to [0, 1]; zero-width dimensions map to 0."""
    arr = as_points(points)
    if arr.shape[0] == 0:
        return arr
    lo = arr.min(axis=0)
    with np.errstate(over="ignore"):
        width = arr.max(axis=0) - lo
    if not np.all(np.isfinite(width)):
        raise InvalidInput("points", "coordinate range overflows binary64")
    out = np.zeros_like(arr)
    for k in range(arr.shape[1]):
        if width[k] > 0:
            out[:, k] = (arr[:, k] - lo[k]) / width[k]
    return out


def box_counts(points: object, scales: Sequence[int] = DEFAULT_SCALES) -> list[int]:
    """N_j: distinct non-empty cells of the normalised points at each resolution."""
    s = _int_list(scales, "scales", 2)
    u = normalise(points)
    counts = []
    for scale in s:
        if u.shape[0] == 0:
            counts.append(0)
            continue
        cells = np.minimum(np.floor(u * scale), scale - 1).astype(np.int64)
        counts.append(int(np.unique(cells, axis=0).shape[0]))
    return counts


class SplitMix64:
    """The direction generator of coh-star (Steele, Lea & Flood 2014)."""

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MASK64:
            raise InvalidInput("seed", "must be an integer in [0, 2^64-1]")
        self.state = seed

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A double in [0, 1): the top 53 bits times 2^-53."""
        return (self.next_u64() >> 11) * (2.0**-53)


def directions(seed: int, dim: int, count: int = COH_DIRECTIONS) -> np.ndarray:
    """``count`` unit vectors: components ``2u-1`` per draw, rejected unless
    ``0 < sum(c^2) <= 1``, then divided by ``sqrt(sum(c^2))``."""
    rng = SplitMix64(seed)
    out = np.empty((count, dim), dtype=np.float64)
    for i in range(count):
        while True:
            c = [2.0 * rng.uniform() - 1.0 for _ in range(dim)]
            s = 0.0
            for v in c:
                s += v * v
            if 0.0 < s <= 1.0:
                break
        norm = math.sqrt(s)
        out[i] = [v / norm for v in c]
    return out


def coherence_detail(
    points: object, seed: int, n_directions: int = COH_DIRECTIONS, bins: int = COH_BINS
) -> tuple[float, list[float]]:
    """(coh-star, v-star): the largest share of points in one histogram bin of
    their projection onto a sampled direction, and the first direction reaching it.

    Projection ``p = ((u0*v0 + u1*v1) + u2*v2) ...`` of the normalised points,
    left to right, never fused. Bin ``min(floor(((p-lo)/(hi-lo))*bins), bins-1)``;
    if ``hi == lo`` all points share one bin (share 1.0). No points: (0.0, zeros).
    """
    for name, value in (("n_directions", n_directions), ("bins", bins)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
            raise InvalidInput(name, "must be an integer in [1, 10000]")
    u = normalise(points)
    n, dim = u.shape
    dirs = directions(seed, dim, n_directions)
    if n == 0:
        return 0.0, [0.0] * dim
    best, best_dir = -1.0, dirs[0]
    for v in dirs:
        p = u[:, 0] * v[0]
        for k in range(1, dim):
            p = p + u[:, k] * v[k]
        lo, hi = p.min(), p.max()
        if hi == lo:
            share = 1.0
        else:
            idx = np.minimum(np.floor(((p - lo) / (hi - lo)) * bins), bins - 1).astype(np.int64)
            share = int(np.bincount(idx, minlength=bins).max()) / n
        if share > best:
            best, best_dir = share, v
    return best, [float(x) for x in best_dir]


def coherence(points: object, seed: int, n_directions: int = COH_DIRECTIONS, bins: int = COH_BINS) -> float:
    return coherence_detail(points, seed, n_directions, bins)[0]


def compressibility(raw: bytes) -> float:
    """r = len(zlib.compress(raw, 6)) / len(raw), clamped to [0, 1]; empty input gives 1.0."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise InvalidInput("raw", f"must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if not raw:
        return 1.0
    return min(1.0, max(0.0, len(zlib.compress(raw, 6)) / len(raw)))


def _finite(x: object, field: str) -> float:
    """:func:`flk.impl.core.canonical.finite_number`, with a fast path for a finite float."""
    if type(x) is float and x - x == 0.0:  # NaN - NaN and inf - inf are NaN
        return x
    return finite_number(x, field)


def _unit(x: object, field: str) -> float:
    if type(x) is float and 0.0 <= x <= 1.0:  # fast path (NaN and infinities fail the range)
        return x
    v = _finite(x, field)
    if not 0.0 <= v <= 1.0:
        raise InvalidInput(field, f"must be in [0, 1], got {v!r}")
    return v


def regime(D_hat: float, coh_star: float, t: RegimeThresholds = DEFAULT_REGIME) -> str:
    """sticky / non_sticky / mixed; the three conditions are tested in that order (``t``: thresholds)."""
    dimension, coherence_share = D_hat, coh_star
    if not (type(D_hat) is float and D_hat - D_hat == 0.0 and type(coh_star) is float and 0.0 <= coh_star <= 1.0):
        dimension, coherence_share = _finite(D_hat, "D_hat"), _unit(coh_star, "coh_star")  # checks, converts
    if coherence_share >= t.sticky_coh and dimension <= t.sticky_d_max:
        return "sticky"
    if dimension >= t.non_sticky_d_min:
        return "non_sticky"
    return "mixed"


def budget(D_hat: float, coh_star: float, r: float, p: BudgetParams = DEFAULT_BUDGET) -> float:
    """``((base + alpha*(1-r)) + beta*max(0, D-D0)) + gamma*coh`` clamped to [0, 1].

    Each operation is one IEEE-754 binary64 operation rounded to nearest, in
    exactly this order; no fused multiply-add. ``p``: the weights.
    """
    dimension, coherence_share, compressibility_ratio = D_hat, coh_star, r
    if not (type(D_hat) is float and D_hat - D_hat == 0.0 and type(coh_star) is float and 0.0 <= coh_star <= 1.0
            and type(r) is float and 0.0 <= r <= 1.0):  # the fast path takes finite floats in range as they are
        dimension = _finite(D_hat, "D_hat")
        coherence_share, compressibility_ratio = _unit(coh_star, "coh_star"), _unit(r, "r")
    value = (p.base + p.alpha * (1.0 - compressibility_ratio) + p.beta * max(0.0, dimension - p.d0)
             + p.gamma * coherence_share)
    return min(1.0, max(0.0, value))


def budget_params(mapping: Mapping | None) -> BudgetParams:
    """BudgetParams from a mapping of any of base/alpha/beta/gamma/d0 (validated)."""
    if mapping is None:
        return DEFAULT_BUDGET
    if not isinstance(mapping, Mapping):
        raise InvalidInput("params", "must be an object of budget parameters")
    fields = {}
    for k, v in mapping.items():
        if k not in BudgetParams.__dataclass_fields__:
            raise InvalidInput(f"params.{k}", "unknown budget parameter")
        fields[k] = finite_number(v, f"params.{k}")
        if k in ("alpha", "beta", "gamma") and fields[k] < 0:
            raise InvalidInput(f"params.{k}", "must be >= 0 (budget is monotone in its signals)")
    return BudgetParams(**fields)
