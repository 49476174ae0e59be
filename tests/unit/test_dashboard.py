"""The one Grafana dashboard (docs/grafana, also deployed by istio/) charts every metric the
services export, so a metric added to svckit.metrics without a panel is caught here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from svckit import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "storefront-dashboard.json"


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_exported_metric_has_a_panel() -> None:
    text = " ".join(exprs(load()))
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        for family in obj.describe():
            suffix = {"counter": "_total", "histogram": "_bucket"}.get(family.type, "")
            assert family.name + suffix in text, f"{family.name}{suffix} is on no panel"


def test_every_query_is_scoped_to_the_chosen_namespace_and_services() -> None:
    for expr in exprs(load()):
        assert 'namespace="$namespace"' in expr and 'app=~"$service"' in expr, expr


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in load()["panels"]]
    assert len(ids) == len(set(ids))
