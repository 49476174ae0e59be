"""The topology as data (issue 21, findings 1 and 2): a second consumer of a topic is a
consumer of its own, with its own DLQ; a consume-only service is a service like any other.

Before the declaration, `svckit.names.CONSUMER_OF` mapped each topic to one service, so a
second consumer of orders.order.fulfill replaced fulfillment there and shared its
`orders.order.fulfill.dlq`, and a service publishing nothing raised KeyError in
stack/kafka_security.py and the console's graph.
"""

from __future__ import annotations

import pytest

import topology
from stack import kafka_security
from stack.kafka_security import Acl, Op, Pattern, Resource
from storefront_cli.console import graph
from topology import SYSTEM, Service

AUDIT = Service(
    "audit",
    grpc_port=50090,
    metrics_port=9490,
    admin_port=50091,
    consumes=(topology.ORDER_FULFILLMENT,),
)
"""A consume-only service: a second consumer of orders.order.fulfill, publishing nothing."""
GROWN = SYSTEM.adding(AUDIT)


def test_a_second_consumer_of_a_topic_keeps_the_first() -> None:
    consumers = [s.name for s in GROWN.consumers_of(topology.ORDER_FULFILLMENT)]
    assert consumers == [topology.FULFILLMENT, "audit"]


def test_each_consumer_of_a_topic_has_its_own_dlq() -> None:
    fulfillment = GROWN.service(topology.FULFILLMENT)
    queues = {
        d.consumer: d.name for d in GROWN.dead_letters if d.topic == topology.ORDER_FULFILLMENT
    }
    assert queues == {
        "fulfillment": "orders.order.fulfill.fulfillment-svc.dlq",
        "audit": "orders.order.fulfill.audit-svc.dlq",
    }
    assert fulfillment.dlq(topology.ORDER_FULFILLMENT) == queues["fulfillment"]
    assert set(queues.values()) <= set(GROWN.all_topics)


def test_a_consumer_may_touch_only_its_own_dlq() -> None:
    acls = set(kafka_security.all_acls(GROWN))

    def writes(user: str, topic: str) -> bool:
        return Acl(user, Resource.TOPIC, topic, Pattern.LITERAL, Op.WRITE) in acls

    mine, theirs = (
        GROWN.service(s).dlq(topology.ORDER_FULFILLMENT) for s in ("audit", "fulfillment")
    )
    assert writes("audit", mine) and not writes("audit", theirs)
    assert writes("fulfillment", theirs) and not writes("fulfillment", mine)
    assert Acl("audit", Resource.GROUP, "audit-svc", Pattern.LITERAL, Op.READ) in acls


def test_a_consume_only_service_is_drawn_with_no_database_or_topic() -> None:
    nodes, edges = graph.skeleton(GROWN)
    ids = {n.id for n in nodes}
    assert "audit" in ids and "db:audit" not in ids
    assert f"topic:{topology.ORDER_FULFILLMENT}>audit" in {e.id for e in edges}
    assert not [e for e in edges if e.source == "audit"]


def test_the_declaration_refuses_what_cannot_run() -> None:
    with pytest.raises(ValueError, match="published by no service"):
        SYSTEM.adding(
            Service("x", grpc_port=1, metrics_port=2, admin_port=3, consumes=("no.such.topic",))
        )
    with pytest.raises(ValueError, match="declared twice"):
        SYSTEM.adding(Service(topology.ORDERS, grpc_port=1, metrics_port=2, admin_port=3))
    with pytest.raises(ValueError, match="share a port"):
        SYSTEM.adding(Service("x", grpc_port=50051, metrics_port=2, admin_port=3))
    with pytest.raises(ValueError, match="share a port"):
        SYSTEM.adding(Service("x", grpc_port=1, metrics_port=2, admin_port=50061))
    with pytest.raises(KeyError, match="does not consume"):
        SYSTEM.service(topology.ACCOUNTS).dlq(topology.ORDER_STATUS)


def test_the_declared_events_are_the_ones_the_services_publish() -> None:
    """`watch` decodes every event message of the services' events.proto: the declaration
    names exactly those, each on one topic."""
    from storefront_cli.tail import EVENT_TYPES

    declared = [e for s in SYSTEM for t in s.publishes for e in t.events]
    assert sorted(declared) == sorted(EVENT_TYPES)
