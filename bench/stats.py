"""Small statistics helpers (no numpy in the project)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: `buckets` are cumulative (upper bound, count) pairs,
    sorted, ending with +Inf; linear interpolation inside the bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return 0.0
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def fraction_within(limit: float, buckets: list[tuple[float, float]]) -> float:
    """Exact share of observations <= `limit` when `limit` is a bucket bound."""
    if not buckets or buckets[-1][1] <= 0:
        return 0.0
    total = buckets[-1][1]
    for upper, count in buckets:
        if abs(upper - limit) < 1e-12:
            return count / total
    raise ValueError(f"{limit} is not a bucket bound")
