"""Access forecasts per tenant: exponential smoothing and additive Holt-Winters.

Why this module exists: predictive tiering pre-warms keys before the access
it predicts; the seeds name exponential smoothing, ARIMA and LSTM. Here:

* :func:`ewma` -- simple exponential smoothing: ``level += alpha * (x - level)``;
  the forecast is the level (no trend, no season);
* :func:`holt_winters` -- additive Holt-Winters (level, trend, a season of
  ``m`` bins), initialised from the first two seasons, forecasts ``h`` bins
  ahead; with fewer than two seasons of history it falls back to :func:`ewma`.

Hand-written over plain floats (statsmodels is not a dependency; the
recurrences are the textbook ones, Hyndman & Athanasopoulos, "Forecasting:
Principles and Practice", section 8.3). Forecasts are clipped at 0 (a count).
Pure and deterministic; no fitting by search, so the same history gives the
same forecast on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence


def ewma(series: Sequence[float], alpha: float) -> float:
    if not series:
        return 0.0
    level = float(series[0])
    for x in series[1:]:
        level += alpha * (float(x) - level)
    return max(0.0, level)


def holt_winters(series: Sequence[float], m: int, alpha: float, beta: float, gamma: float, h: int = 1) -> float:
    """The forecast ``h`` bins after the last value of ``series`` (additive seasonality)."""
    n = len(series)
    if m < 2 or n < 2 * m:
        return ewma(series, alpha)
    x = [float(v) for v in series]
    first, second = sum(x[:m]) / m, sum(x[m:2 * m]) / m
    level, trend = first, (second - first) / m
    season = [x[i] - first for i in range(m)]
    for t in range(m, n):
        s = season[t % m]
        prev_level = level
        level = alpha * (x[t] - s) + (1 - alpha) * (level + trend)
        trend = beta * (level - prev_level) + (1 - beta) * trend
        season[t % m] = gamma * (x[t] - level) + (1 - gamma) * s
    return max(0.0, level + h * trend + season[(n - 1 + h) % m])


def forecast(kind: str, series: Sequence[float], spec: dict) -> float:
    """The next bin's expected count under the policy's forecaster (``none``: 0)."""
    if kind == "ewma":
        return ewma(series, float(spec["alpha"]))
    if kind == "holt-winters":
        return holt_winters(series, int(spec["season_bins"]), float(spec["alpha"]), float(spec["beta"]),
                            float(spec["gamma"]))
    return 0.0
