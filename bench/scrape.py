"""The services' own /metrics, read as the benchmark needs them (propagation histogram, sums)."""

from __future__ import annotations

import urllib.request

import topology


def propagation_buckets(url: str) -> dict[float, float]:
    """Cumulative bucket counts of CustomerChanged propagation on orders (all label sets)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "storefront_event_propagation_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_bucket")
                and labels.get("topic") == topology.CUSTOMER_CHANGES
                and labels.get("type", "").endswith("CustomerChanged")
            ):
                le = float(labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    return out


def metric_sum(url: str, name: str, **labels: str) -> float:
    """Sum of a counter's samples whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=5).read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
