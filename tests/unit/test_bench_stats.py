"""The bench's arithmetic: quantiles from Prometheus buckets, nearest-rank percentiles."""

from __future__ import annotations

import math

from bench.stats import fraction_within, histogram_quantile, percentile


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 99) == 0.0


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.01, 50.0), (0.1, 100.0), (math.inf, 100.0)]
    assert math.isclose(histogram_quantile(0.5, buckets), 0.01)
    assert math.isclose(histogram_quantile(0.75, buckets), 0.055)
    assert fraction_within(0.1, buckets) == 1.0
    assert histogram_quantile(0.99, []) == 0.0
