"""A throwaway consumer, declared the way a user adds one (docs/extending.md): it counts the
shipping status changes fulfillment publishes. It lives under tests/ and is declared here,
not in `topology.SYSTEM`: tests/integration/test_extension.py adds it to the system and checks
that everything the topology drives (Kafka ACLs, its DLQ, its lag in `storefront status`, its
node in the console graph, its Prometheus target) follows with no other edit.
"""

from __future__ import annotations

from collections import Counter

import topology
from storefront.fulfillment.v1 import events_pb2
from svckit.consumer import EventHandler, Outcome
from svckit.envelope import Envelope

COUNTER = topology.Service(
    "counter",
    grpc_port=50190,
    metrics_port=9590,
    admin_port=50290,
    consumes=(topology.ORDER_STATUS,),
)
"""Its topology entry: the one line a user writes (here a test adds it to the system)."""


class StatusCounter:
    """How many status changes each order had: the whole read model, in memory."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()

    def event_handlers(self) -> dict[str, EventHandler]:
        return {events_pb2.OrderStatusChanged.DESCRIPTOR.full_name: self.count}

    async def count(self, envelope: Envelope) -> Outcome:
        self.statuses[envelope.payload(events_pb2.OrderStatusChanged).order_id] += 1
        return Outcome.APPLIED
