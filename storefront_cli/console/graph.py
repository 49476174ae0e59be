"""The console's traffic graph: nodes and edges with rates, error ratios and p99, from
Prometheus' HTTP API, in the spirit of Kiali's graph.

The nodes and edges come from the topology (`topology.SYSTEM`, as `storefront status` takes
it), and so does where each sits (`layout`: computed, no coordinates by hand); every figure
comes from the metrics the dashboard (docs/grafana) reads, so pointing `--prometheus` at the mesh's
Prometheus draws the same graph there. One refresh is `len(queries(...))` instant queries,
sent concurrently.

Errors: a gRPC call counts as failed for any grpc_code other than OK (as the dashboard's
"Error ratio by method" and Kiali count it: NOT_FOUND and INVALID_ARGUMENT too), an HTTP
request through Envoy for a 4xx or 5xx answer, a consumed event when it was dead-lettered.
Colours use Kiali's default thresholds: amber from 0.1 %, red from 20 %.

Rates: `rate()` takes a counter's first sample as its baseline, so a series born in one burst
(a method's first NOT_FOUND, a flow's events published in one relay sweep, all of
`storefront run`'s demo) would show no rate at all. A series that did not exist one window ago
counts from 0 instead (its value over the window); the cost is one window of too-high rates
after Prometheus itself starts scraping long-running processes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

import topology

EDGE_PREFIX = "storefront_edge"
"""Envoy's HTTP connection manager stat prefix (envoy/envoy.yaml.tmpl)."""
DEGRADED = 0.001
FAILING = 0.20
OUTBOX_SLOW_S = 10.0
"""Oldest unpublished event older than a few relay sweeps (2 s each): amber."""
OUTBOX_STUCK_S = 120.0
"""The StorefrontOutboxBacklog alert's threshold (istio/storefront/alerts.yaml): red."""
HEALTH_SERVICE = "grpc.health.v1.Health"

Series = list[dict[str, Any]]


UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(window: str) -> float:
    """A PromQL duration ("1m", "1m30s") in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", window)
    if not parts or "".join(n + u for n, u in parts) != window:
        raise ValueError(f"not a PromQL duration: {window!r}")
    return sum(int(n) * UNITS[u] for n, u in parts)


def queries(namespace: str, window: str) -> dict[str, str]:
    """Every PromQL instant query of one refresh, by name."""
    ns = f'namespace="{namespace}"'
    grpc = f'{ns}, grpc_service!="{HEALTH_SERVICE}"'
    envoy = f'{ns}, app="envoy"'
    edge = f'{envoy}, envoy_http_conn_manager_prefix="{EDGE_PREFIX}"'

    def rate(metric: str, selector: str) -> str:
        """Per-second increase over the window, counting series born within it from 0."""
        x = f"{metric}{{{selector}}}"
        return (
            f"(rate({x}[{window}]) and {x} offset {window})"
            f" or ({x} unless {x} offset {window}) / {seconds(window):g}"
        )

    def total(by: str, metric: str, selector: str) -> str:
        return f"sum by ({by}) ({rate(metric, selector)})"

    def p99(by: str, metric: str, selector: str) -> str:
        return f"histogram_quantile(0.99, sum by ({by}, le) ({rate(metric, selector)}))"

    return {
        "up": f"max by (app) (up{{{ns}}})",
        "replicas_up": f"sum by (app) (up{{{ns}}})",
        "replicas": f"count by (app) (up{{{ns}}})",
        "grpc": total("app, grpc_code", "grpc_server_handled_total", grpc),
        "grpc_p99": p99("app", "grpc_server_handling_seconds_bucket", grpc),
        "published": total("app, topic", "storefront_events_published_total", ns),
        "consumed": total("app, topic, outcome", "storefront_events_consumed_total", ns),
        "propagation_p99": p99("app, topic", "storefront_event_propagation_seconds_bucket", ns),
        "outbox_pending": f"sum by (app) (storefront_outbox_pending{{{ns}}})",
        "outbox_oldest": f"max by (app) (storefront_outbox_oldest_age_seconds{{{ns}}})",
        "envoy_in": total("envoy_response_code_class", "envoy_http_downstream_rq_xx", edge),
        "envoy_in_p99": p99("app", "envoy_http_downstream_rq_time_bucket", edge),
        "envoy_out": total(
            "envoy_cluster_name, envoy_response_code_class", "envoy_cluster_upstream_rq_xx", envoy
        ),
        "envoy_out_p99": p99("envoy_cluster_name", "envoy_cluster_upstream_rq_time_bucket", envoy),
    }


class PrometheusError(Exception):
    pass


async def instant(session: aiohttp.ClientSession, url: str, query: str) -> Series:
    """One instant query's result vector."""
    async with session.get(f"{url}/api/v1/query", params={"query": query}) as reply:
        body = await reply.json(content_type=None)
    if body.get("status") != "success":
        raise PrometheusError(body.get("error") or f"HTTP {reply.status}")
    return list(body["data"]["result"])


def _value(series: Mapping[str, Any]) -> float | None:
    value = float(series["value"][1])
    return None if value != value else value  # NaN: a quantile of no observations


@dataclass
class Node:
    id: str
    kind: str
    """client, proxy, service, topic or database."""
    label: str
    health: str = "idle"
    """ok, degraded, failing, down, idle (no traffic), unknown (no data)."""
    detail: str = ""


@dataclass
class Edge:
    source: str
    target: str
    kind: str
    """http, grpc, publish, consume or outbox."""
    rate: float | None = None
    """Requests or events per second; None where the edge has no rate (outbox)."""
    error_ratio: float | None = None
    p99_s: float | None = None
    health: str = "idle"
    detail: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.source}>{self.target}"


def ratio_health(rate: float | None, errors: float) -> tuple[float | None, str]:
    if not rate:
        return None, "idle"
    ratio = errors / rate
    return ratio, "failing" if ratio >= FAILING else "degraded" if ratio >= DEGRADED else "ok"


def _flow(edge: Edge, rate: float, errors: float, p99: float | None) -> Edge:
    edge.rate = rate
    edge.error_ratio, edge.health = ratio_health(rate, errors)
    edge.p99_s = p99
    return edge


def skeleton(system: topology.System = topology.SYSTEM) -> tuple[list[Node], list[Edge]]:
    """Every node and edge the system has, before any figure is filled in."""
    nodes = [Node("clients", "client", "clients"), Node("envoy", "proxy", "envoy")]
    edges = [Edge("clients", "envoy", "http")]
    for s in system:
        nodes.append(Node(s.name, "service", s.package))
        edges.append(Edge("clients", s.name, "grpc"))
        if s.public:
            edges.append(Edge("envoy", s.name, "grpc"))
        if s.aggregate:
            db = f"db:{s.name}"
            nodes.append(Node(db, "database", f"{s.name} db", detail=s.aggregate))
            edges.append(Edge(s.name, db, "outbox"))
        edges += [Edge(s.name, f"topic:{t}", "publish") for t in s.topics]
    nodes += [Node(f"topic:{t}", "topic", t) for t in system.topics]
    for s in system.consumers:
        edges += [Edge(f"topic:{t}", s.name, "consume") for t in s.consumes]
    return nodes, edges


COLUMNS = {"client": 70, "proxy": 250, "service": 480, "database": 480, "topic": 840}
"""x of each kind of node: callers, the edge proxy, services (each database under its
service), topics to the right of everyone who publishes or consumes them."""
ROW = 170
"""Vertical room per service: itself, and its database below it."""
DATABASE_DROP = 72
TOPIC_GAP = 64
"""Least vertical distance between two topics (their boxes are 32 high)."""
MARGIN = 60
WIDTH = 1000


@dataclass(frozen=True)
class Layout:
    x: dict[str, float]
    y: dict[str, float]
    width: float
    height: float


def layout(nodes: list[Node], edges: list[Edge]) -> Layout:
    """Where each node sits, computed from the graph: services in a column in declaration
    order, each database under its service, each topic level with the mean of its publisher
    and consumers and then pushed apart so no two overlap, callers level with the services'
    middle."""
    x: dict[str, float] = {}
    y: dict[str, float] = {}
    services = [n.id for n in nodes if n.kind == "service"]
    for i, s in enumerate(services):
        x[s], y[s] = COLUMNS["service"], MARGIN + i * ROW
    for n in nodes:
        x.setdefault(n.id, COLUMNS[n.kind])
        if n.kind == "database":
            owner = next(e.source for e in edges if e.target == n.id)
            y[n.id] = y[owner] + DATABASE_DROP
    middle = (min(y.values(), default=MARGIN) + max(y.values(), default=MARGIN)) / 2
    y["clients"], y["envoy"] = middle, middle - ROW / 2 if len(services) > 1 else middle
    topics = [n.id for n in nodes if n.kind == "topic"]
    wanted = {}
    for t in topics:
        ends = [y[e.source] for e in edges if e.target == t] + [
            y[e.target] for e in edges if e.source == t
        ]
        wanted[t] = sum(ends) / len(ends) if ends else middle
    floor: float = MARGIN - TOPIC_GAP
    for t in sorted(topics, key=lambda t: (wanted[t], topics.index(t))):
        floor = y[t] = max(wanted[t], floor + TOPIC_GAP)
    height = max(y.values(), default=MARGIN) + MARGIN
    return Layout(x, y, WIDTH, height)


def build(
    results: Mapping[str, Series], system: topology.System = topology.SYSTEM
) -> tuple[list[Node], list[Edge]]:
    nodes, edges = skeleton(system)
    node = {n.id: n for n in nodes}
    edge = {e.id: e for e in edges}

    def by(name: str, *labels: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for series in results.get(name, []):
            value = _value(series)
            if value is not None:
                key = tuple(series["metric"].get(label, "") for label in labels)
                out[key] = out.get(key, 0.0) + value
        return out

    up = by("up", "app")
    count, running = by("replicas", "app"), by("replicas_up", "app")
    grpc = by("grpc", "app", "grpc_code")
    grpc_p99 = by("grpc_p99", "app")
    for s in system.names:
        total = sum(v for (app, _), v in grpc.items() if app == s)
        failed = sum(v for (app, code), v in grpc.items() if app == s and code != "OK")
        _flow(edge[f"clients>{s}"], total, failed, grpc_p99.get((s,)))
        edge[f"clients>{s}"].detail = "gRPC handled by the service (every caller, Envoy too)"
        n = node[s]
        state = up.get((s,))
        n.health = "unknown" if state is None else "down" if state < 1 else "ok"
        if n.health == "ok" and edge[f"clients>{s}"].health in ("degraded", "failing"):
            n.health = edge[f"clients>{s}"].health  # as Kiali: a node shows its inbound errors
        n.detail = f"{total:.2f} rps in"
        replicas, replicas_up = count.get((s,)), running.get((s,))
        if replicas is not None and replicas > 1:
            n.detail += f", {replicas_up or 0:.0f}/{replicas:.0f} replicas up"
            if n.health == "ok" and (replicas_up or 0) < replicas:
                n.health = "degraded"  # serving, with fewer replicas than it should have

    envoy_in = by("envoy_in", "envoy_response_code_class")
    total = sum(envoy_in.values())
    failed = sum(v for (cls,), v in envoy_in.items() if cls in ("4", "5"))
    _flow(edge["clients>envoy"], total, failed, by("envoy_in_p99", "app").get(("envoy",)))
    edge["clients>envoy"].p99_s = _ms(edge["clients>envoy"].p99_s)
    envoy_up = up.get(("envoy",))
    node["envoy"].health = "unknown" if envoy_up is None else "down" if envoy_up < 1 else "ok"
    envoy_out = by("envoy_out", "envoy_cluster_name", "envoy_response_code_class")
    envoy_out_p99 = by("envoy_out_p99", "envoy_cluster_name")
    for s in (p.name for p in system.public):
        sent = sum(v for (c, _), v in envoy_out.items() if c == s)
        failed = sum(v for (c, cls), v in envoy_out.items() if c == s and cls in ("4", "5"))
        _flow(edge[f"envoy>{s}"], sent, failed, _ms(envoy_out_p99.get((s,))))
    node["clients"].health = (
        "ok" if any(edge[f"clients>{t}"].rate for t in ("envoy", *system.names)) else "idle"
    )

    published = by("published", "app", "topic")
    for s, topic in ((p.name, t) for p in system.publishers for t in p.topics):
        rate = published.get((s, topic), 0.0)
        _flow(edge[f"{s}>topic:{topic}"], rate, 0.0, None)
        node[f"topic:{topic}"].health = "ok" if rate else "idle"
        node[f"topic:{topic}"].detail = f"{rate:.2f} events/s in"
    consumed = by("consumed", "app", "topic", "outcome")
    propagation = by("propagation_p99", "app", "topic")
    for s, topics in ((c.name, c.consumes) for c in system.consumers):
        for topic in topics:
            outcomes = {o: v for (a, t, o), v in consumed.items() if a == s and t == topic}
            e = _flow(
                edge[f"topic:{topic}>{s}"],
                sum(outcomes.values()),
                outcomes.get("dead_lettered", 0.0),
                propagation.get((s, topic)),
            )
            e.extra = outcomes
            e.detail = "error: dead-lettered; p99: event time to applied"

    pending = by("outbox_pending", "app")
    oldest = by("outbox_oldest", "app")
    for s in (p.name for p in system if p.aggregate):
        e = edge[f"{s}>db:{s}"]
        waiting, age = pending.get((s,)), oldest.get((s,))
        e.extra = {k: v for k, v in (("pending", waiting), ("oldest_s", age)) if v is not None}
        if waiting is None:
            e.health = "unknown"
        else:
            slow = (age or 0.0) >= OUTBOX_SLOW_S
            e.health = "failing" if (age or 0.0) >= OUTBOX_STUCK_S else "degraded" if slow else "ok"
        e.detail = "outbox: events committed with their change, not yet published"
        node[f"db:{s}"].health = e.health if e.health != "unknown" else node[s].health
    return nodes, edges


def _ms(value: float | None) -> float | None:
    """Envoy's histograms are in milliseconds."""
    return None if value is None else value / 1000.0


async def graph(
    session: aiohttp.ClientSession,
    prometheus: str,
    *,
    namespace: str,
    window: str,
    system: topology.System = topology.SYSTEM,
) -> dict[str, Any]:
    """The graph as JSON, with what it cost: queries sent and how long they took."""
    started = time.perf_counter()
    wanted = queries(namespace, window)
    answers = await asyncio.gather(
        *(instant(session, prometheus, q) for q in wanted.values()), return_exceptions=True
    )
    results: dict[str, Series] = {}
    errors = []
    for name, answer in zip(wanted, answers, strict=True):
        if isinstance(answer, BaseException):
            errors.append(f"{name}: {type(answer).__name__}: {answer}"[:200])
        else:
            results[name] = answer
    nodes, edges = build(results, system)
    at = layout(nodes, edges)
    return {
        "nodes": [{**asdict(n), "x": at.x[n.id], "y": at.y[n.id]} for n in nodes],
        "width": at.width,
        "height": at.height,
        "edges": [{**asdict(e), "id": e.id} for e in edges],
        "prometheus": prometheus,
        "window": window,
        "queries": len(wanted),
        "query_ms": round((time.perf_counter() - started) * 1000, 1),
        "errors": errors,
    }
