"""Every Prometheus metric the services export, defined once.

gRPC server metrics use the names and labels of go-grpc-prometheus, so
existing dashboards and alerts work unchanged. Every metric also carries a
`service` label: the registry is process-global, and tests (or a future
combined process) may host several services in one process, so the scrape
target alone cannot tell their series apart. docs/observability.md lists them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

GRPC_LABELS = ("service", "grpc_type", "grpc_service", "grpc_method")

GRPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", GRPC_LABELS)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, regardless of success or failure.",
    (*GRPC_LABELS, "grpc_code"),
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Response latency of RPCs handled by the server.",
    GRPC_LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RpcMetrics:
    """One method's gRPC server series, bound once when its handler is wrapped: ``labels()``
    hashes the labels under a lock, three times a call otherwise."""

    __slots__ = ("_labels", "_handled", "started", "seconds")

    def __init__(self, service: str, grpc_type: str, grpc_service: str, method: str) -> None:
        self._labels = (service, grpc_type, grpc_service, method)
        self._handled: dict[str, Any] = {}
        self.started = GRPC_STARTED.labels(*self._labels)
        self.seconds = GRPC_HANDLING_SECONDS.labels(*self._labels)

    def handled(self, code: str) -> Any:
        """The completed-RPCs counter for status `code` (its name, e.g. ``OK``)."""
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = GRPC_HANDLED.labels(*self._labels, code)
        return child


EVENTS_PUBLISHED = Counter(
    "storefront_events_published_total",
    "Events the outbox relay handed to Kafka and the broker acknowledged.",
    ("service", "topic", "type"),
)
EVENTS_CONSUMED = Counter(
    "storefront_events_consumed_total",
    "Events consumed, by outcome: applied, duplicate, stale, ignored, dead_lettered.",
    ("service", "topic", "type", "outcome"),
)
CONSUMER_LAG = Gauge(
    "storefront_consumer_lag",
    "Records between the consumer's position and the partition's end.",
    ("service", "topic", "partition"),
)
CONSUMER_STALLED = Gauge(
    "storefront_consumer_stalled_seconds",
    "How long the consumer has been holding its position waiting for a dependency (0: flowing).",
    ["service", "group"],
)
CONSUMER_REJOINS = Counter(
    "storefront_consumer_rejoins_total",
    "Kafka consumers rebuilt because the group coordinator had stopped listing them as members.",
    ["service", "group"],
)
OUTBOX_PENDING = Gauge(
    "storefront_outbox_pending", "Outbox entries not yet published.", ("service", "collection")
)
OUTBOX_OLDEST_AGE = Gauge(
    "storefront_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox entry.",
    ("service", "collection"),
)
OUTBOX_PARKED = Gauge(
    "storefront_outbox_parked",
    "Outbox entries the broker refused for good, set aside in their documents for a person.",
    ("service", "collection"),
)
OUTBOX_DUPLICATE_PUBLISHES = Counter(
    "storefront_outbox_duplicate_publishes_total",
    "Events this relay published whose outbox entry another relay had already removed.",
    ("service", "collection"),
)
OUTBOX_RECOVERED = Counter(
    "storefront_outbox_recovered_total",
    "Events published by the recovery sweep (left by a relay that died, or held up), not by the "
    "prompt path of the process that committed them.",
    ("service", "collection"),
)
PROPAGATION_SECONDS = Histogram(
    "storefront_event_propagation_seconds",
    "Time from an event's ce_time (the producer's commit) to its application here.",
    ("service", "topic", "type"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on its own HTTP port (0 disables it).

    A port apart from gRPC so Prometheus (or Istio's merged scrape) needs no gRPC.
    """
    if port:
        start_http_server(port, addr=addr.strip("[]"))  # gRPC writes IPv6 as [::]
