"""The console's graph from Prometheus answers, and its loopback Host guard (no server)."""

from __future__ import annotations

from typing import Any

import pytest

import topology
from storefront_cli.console import graph
from storefront_cli.console.server import _loopback_host


def series(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [0, str(value)]}


def edges(results: dict[str, list[dict[str, Any]]]) -> dict[str, graph.Edge]:
    return {e.id: e for e in graph.build(results)[1]}


def test_with_no_data_every_node_and_edge_is_there_and_idle() -> None:
    nodes, all_edges = graph.build({})
    assert {n.id for n in nodes} >= {"clients", "envoy", "accounts", "db:orders"}
    assert {f"topic:{t}" for t in topology.SYSTEM.topics} <= {n.id for n in nodes}
    assert all(e.health in ("idle", "unknown") for e in all_edges)
    assert {n.health for n in nodes if n.kind == "service"} == {"unknown"}


def test_grpc_error_ratio_counts_every_code_but_ok_and_colours_by_it() -> None:
    e = edges(
        {
            "grpc": [
                series(9.0, app="accounts", grpc_code="OK"),
                series(1.0, app="accounts", grpc_code="NOT_FOUND"),
                series(5.0, app="orders", grpc_code="OK"),
                series(0.004, app="orders", grpc_code="INVALID_ARGUMENT"),
            ],
            "grpc_p99": [series(0.02, app="accounts"), series(float("nan"), app="orders")],
        }
    )
    accounts, orders = e["clients>accounts"], e["clients>orders"]
    assert accounts.rate == 10.0 and accounts.error_ratio == 0.1
    assert accounts.health == "degraded" and accounts.p99_s == 0.02
    assert orders.health == "ok" and orders.p99_s is None  # below 0.1 %; NaN is no p99
    assert (
        e["clients>fulfillment"].health == "idle" and e["clients>fulfillment"].error_ratio is None
    )


def test_events_envoy_and_outbox_edges() -> None:
    e = edges(
        {
            "published": [series(2.0, app="accounts", topic="accounts.customer.change")],
            "consumed": [
                series(1.0, app="orders", topic="accounts.customer.change", outcome="applied"),
                series(
                    1.0, app="orders", topic="accounts.customer.change", outcome="dead_lettered"
                ),
            ],
            "envoy_in": [
                series(3.0, envoy_response_code_class="2"),
                series(1.0, envoy_response_code_class="4"),
            ],
            "envoy_in_p99": [series(250.0, app="envoy")],
            "outbox_pending": [series(4.0, app="accounts"), series(0.0, app="orders")],
            "outbox_oldest": [series(200.0, app="accounts")],
        }
    )
    assert e["accounts>topic:accounts.customer.change"].rate == 2.0
    consumed = e["topic:accounts.customer.change>orders"]
    assert consumed.error_ratio == 0.5 and consumed.health == "failing"
    assert e["clients>envoy"].error_ratio == 0.25 and e["clients>envoy"].p99_s == 0.25
    assert e["accounts>db:accounts"].health == "failing"  # older than the alert's 120 s
    assert e["orders>db:orders"].health == "ok"
    assert e["fulfillment>db:fulfillment"].health == "unknown"


def test_queries_select_the_namespace_and_window() -> None:
    for q in graph.queries("shop", "1m30s").values():
        assert 'namespace="shop"' in q
        assert "rate(" not in q or ("[1m30s]" in q and "offset 1m30s" in q and "/ 90" in q)
    assert graph.seconds("2h") == 7200 and graph.seconds("500ms") == 0.5
    for bad in ("", "1x", "m", "1m 2s"):
        with pytest.raises(ValueError):
            graph.seconds(bad)


def test_only_loopback_hosts_on_the_served_port_pass() -> None:
    for host in ("127.0.0.1:8090", "localhost:8090", "[::1]:8090", "127.0.0.2:8090"):
        assert _loopback_host(host, 8090), host
    for host in ("evil.test:8090", "127.0.0.1:8091", "127.0.0.1", "10.0.0.1:8090", ""):
        assert not _loopback_host(host, 8090), host


def test_the_layout_places_every_node_apart_and_each_database_under_its_service() -> None:
    nodes, edges = graph.skeleton()
    at = graph.layout(nodes, edges)
    points = [(at.x[n.id], at.y[n.id]) for n in nodes]
    assert len(set(points)) == len(points)
    for s in topology.SYSTEM.publishers:
        assert at.x[f"db:{s.name}"] == at.x[s.name] and at.y[f"db:{s.name}"] > at.y[s.name]
    topics = sorted(at.y[f"topic:{t}"] for t in topology.SYSTEM.topics)
    assert all(b - a >= graph.TOPIC_GAP for a, b in zip(topics, topics[1:], strict=False))
    assert all(0 < y < at.height for y in at.y.values())


def test_the_layout_grows_with_the_topology() -> None:
    extra = topology.Service(
        "counter",
        grpc_port=50099,
        metrics_port=9499,
        admin_port=50199,
        consumes=(topology.ORDER_STATUS,),
    )
    nodes, edges = graph.skeleton(topology.SYSTEM.adding(extra))
    at = graph.layout(nodes, edges)
    assert at.y["counter"] > max(at.y[s] for s in topology.SYSTEM.names)
    assert at.height > graph.layout(*graph.skeleton()).height


def test_a_service_with_a_replica_down_shows_it_and_is_degraded() -> None:
    nodes = {
        n.id: n
        for n in graph.build(
            {
                "up": [series(1.0, app="accounts"), series(1.0, app="orders")],
                "replicas": [series(3.0, app="accounts"), series(3.0, app="orders")],
                "replicas_up": [series(2.0, app="accounts"), series(3.0, app="orders")],
            }
        )[0]
    }
    assert "2/3 replicas up" in nodes["accounts"].detail
    assert nodes["accounts"].health == "degraded"
    assert "3/3 replicas up" in nodes["orders"].detail and nodes["orders"].health == "ok"
