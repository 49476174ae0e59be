"""The event envelope through the real broker: a protobuf value with CloudEvents
binary-mode headers goes in, and comes back out decoded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import topology
from stack.embedded import EmbeddedStack
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import events_pb2
from svckit import names
from svckit.envelope import encode, header_map
from tests.support import read_raw, read_topic, unique

pytestmark = pytest.mark.integration
TOPIC = topology.ORDER_STATUS


async def test_protobuf_event_with_cloudevents_headers_round_trips(stack: EmbeddedStack) -> None:
    order_id = unique("envelope")
    event = events_pb2.OrderStatusChanged(
        order_id=order_id, version=3, status=common_pb2.ORDER_STATUS_SHIPPED, note="UPS"
    )
    event.change_time.FromDatetime(datetime(2026, 11, 1, 12, 0, tzinfo=UTC))
    value, headers = encode(
        event, source=names.source(topology.FULFILLMENT), key=order_id, event_id=order_id
    )
    producer = stack.kafka.producer(acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, value, key=order_id.encode(), headers=headers)
    finally:
        await producer.stop()

    [raw] = [r for r in await read_raw(stack.kafka, TOPIC) if r.key == order_id.encode()]
    h = header_map(raw.headers)
    assert h["ce_specversion"] == "1.0"
    assert h["ce_type"] == "storefront.fulfillment.v1.OrderStatusChanged"
    assert h["ce_source"] == names.source(topology.FULFILLMENT)
    assert h["ce_id"] == order_id
    assert h["content-type"] == "application/protobuf"
    assert (
        events_pb2.OrderStatusChanged.FromString(raw.value) == event
    )  # the value is plain protobuf

    [decoded] = await read_topic(
        stack.kafka, TOPIC, [events_pb2.OrderStatusChanged.DESCRIPTOR.full_name], key=order_id
    )
    assert decoded.message == event
    assert decoded.key == order_id and decoded.id == order_id
