"""The local Prometheus (`make run` starts it) scrapes every part of the running system,
and its series carry the labels the one dashboard (docs/grafana) queries by."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

import topology
from stack.embedded import free_ports
from stack.prometheus import ALERTS, start_prometheus
from storefront.accounts.v1 import accounts_pb2
from storefront_cli.clients import Clients
from storefront_cli.demo import PEOPLE, customer_draft
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e
T = TypeVar("T")
NAME = "prometheus-e2e"
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "storefront-dashboard.json"
SCRAPED = {*topology.SYSTEM.names, "envoy"}


@pytest.fixture(scope="module")
def prometheus(running_system: System) -> Iterator[str]:
    [port] = free_ports(1)
    url = start_prometheus(
        running_system.stack, running_system.ports, port=port, name=NAME, scrape_interval="1s"
    )
    yield url
    running_system.stack.supervisor.stop(NAME)


def api(url: str, path: str, **query: str) -> Any:
    full = f"{url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(full, timeout=5) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


def poll(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def test_every_target_is_up(prometheus: str) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        targets = api(prometheus, "targets")["activeTargets"]
        apps = {t["labels"].get("app") for t in targets}
        if SCRAPED <= apps and all(t["health"] == "up" for t in targets):
            return list(targets)
        return None

    targets = poll(all_up, 60, "every Prometheus target up")
    jobs = {t["labels"]["app"]: t["scrapePool"] for t in targets if "app" in t["labels"]}
    assert jobs == {**dict.fromkeys(topology.SYSTEM.names, "storefront"), "envoy": "envoy"}
    assert {t["labels"].get("namespace") for t in targets if "app" in t["labels"]} == {"storefront"}


def test_service_series_are_labelled_for_the_dashboard(prometheus: str) -> None:
    def per_app() -> dict[str, str] | None:
        # Health checks are unary RPCs too, so every service has handled some by now.
        result = api(prometheus, "query", query="sum by (app, service) (grpc_server_handled_total)")
        found = {r["metric"]["app"]: r["metric"].get("service", "") for r in result["result"]}
        return found if len(found) == len(topology.SYSTEM.names) else None

    assert poll(per_app, 60, "gRPC series from every service") == {s: s for s in topology.SYSTEM.names}
    envoy = api(prometheus, "query", query='envoy_server_live{app="envoy"}')["result"]
    assert envoy and envoy[0]["value"][1] == "1"


def test_every_dashboard_query_runs_and_the_backlog_panels_have_data(prometheus: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {"$namespace": "storefront", "$service": ".*", "$__rate_interval": "1m"}
    results: dict[str, list[Any]] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            results[panel["title"]] = api(prometheus, "query", query=expr)["result"]

    def lag_and_outbox() -> bool | None:
        for title in ("Consumer lag", "Outbox pending"):
            results[title] = api(
                prometheus, "query", query=panel_expr(dashboard, title, variables)
            )["result"]
        return True if results["Consumer lag"] and results["Outbox pending"] else None

    poll(lag_and_outbox, 60, "lag and outbox series")
    apps = {r["metric"]["app"] for r in results["Outbox pending"]}
    assert apps == set(topology.SYSTEM.names)


def panel_expr(dashboard: dict[str, Any], title: str, variables: dict[str, str]) -> str:
    [panel] = [p for p in dashboard["panels"] if p["title"] == title]
    expr = str(panel["targets"][0]["expr"])
    for name, value in variables.items():
        expr = expr.replace(name, value)
    return expr


async def test_the_deployed_alert_rules_load_and_evaluate_over_real_series(
    prometheus: str, clients: Clients
) -> None:
    """The local Prometheus runs the groups of istio/storefront/alerts.yaml (the cluster's
    PrometheusRule): every rule parses and evaluates, and every metric a rule reads exists
    with the `app` label its alerts group by (a sign-up makes events flow)."""
    await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[0]))
    )
    deployed = yaml.safe_load(ALERTS.read_text())["spec"]["groups"]
    wanted = {r["alert"] for g in deployed for r in g["rules"]}
    assert len(wanted) >= 4

    def evaluated() -> dict[str, dict[str, Any]] | None:
        rules = {
            r["name"]: r for g in api(prometheus, "rules")["groups"] for r in g["rules"]
        }
        done = set(rules) == wanted and all(
            r.get("lastEvaluation", "").startswith("20") for r in rules.values()
        )
        return rules if done else None

    rules = poll(evaluated, 60, "every alert rule evaluated")
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
        for metric in set(re.findall(r"storefront_[a-z_]+", rule["query"])):

            def labelled(metric: str = metric) -> list[Any] | None:
                found = api(prometheus, "series", **{"match[]": metric})
                return found if found and all("app" in s for s in found) else None

            assert poll(labelled, 60, f"{name}: {metric} series")
