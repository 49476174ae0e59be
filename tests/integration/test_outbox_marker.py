"""The outbox's pending marker: set by every write that queues an event, cleared only once the
relay has published and removed every entry, so the sweep's equality lookup misses nothing."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from pymongo.asynchronous.database import AsyncDatabase

import topology
from stack.embedded import EmbeddedStack
from storefront.accounts.v1 import events_pb2
from svckit.errors import Unavailable
from svckit.kafka import EventProducer
from svckit.outbox import OUTBOX, PENDING, OutboxRelay, outbox_entry, pending_filter
from svckit.store import MAX_PENDING_EVENTS, AggregateStore
from tests.support import eventually

pytestmark = pytest.mark.integration

TOPIC = topology.CUSTOMER_CHANGES


def event(version: int) -> dict[str, object]:
    message = events_pb2.CustomerChanged(customer_id="m-1", version=version)
    return outbox_entry(TOPIC, "m-1", message, source="//test", seq=version)


async def test_marker_follows_the_outbox(
    stack: EmbeddedStack, mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    collection = mongo_db["marker.aggregates"]
    store = AggregateStore(collection, events_pb2.CustomerChanged, "customer_id")
    agg = events_pb2.CustomerChanged(customer_id="m-1", version=1)
    await store.insert(agg, [event(1)])
    quiet = events_pb2.CustomerChanged(customer_id="m-2", version=1)
    await store.insert(quiet, [])

    assert [d["_id"] async for d in collection.find(pending_filter())] == ["m-1"]

    producer = EventProducer(stack.kafka, "marker-test")
    await producer.start()
    relay = OutboxRelay(collection, producer, service="marker-test", sweep_interval=0.2)
    await relay.start()
    try:

        async def drained() -> bool | None:
            doc = await collection.find_one({"_id": "m-1"})
            return True if doc and not doc.get(OUTBOX) and PENDING not in doc else None

        await eventually(drained, timeout=30, what="outbox drained and unmarked")
        agg.version = 2
        assert await store.update(agg, 1, [event(2)])
        doc = await collection.find_one({"_id": "m-1"})
        assert doc is not None and (doc.get(PENDING) is True or not doc.get(OUTBOX))
        relay.notify("m-1")
        await eventually(drained, timeout=30, what="second event drained and unmarked")
    finally:
        await relay.stop()
        await producer.stop()
    assert await collection.count_documents(pending_filter()) == 0


async def test_a_full_outbox_refuses_more_with_unavailable_and_changes_nothing(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    """Issue 12 finding 4: with nothing publishing, the outbox is capped; the write past the
    cap fails fast (UNAVAILABLE, a clear message) and leaves the document as it was."""
    collection = mongo_db["capped.aggregates"]
    store = AggregateStore(collection, events_pb2.CustomerChanged, "customer_id")
    agg = events_pb2.CustomerChanged(customer_id="m-1", version=1)
    await store.insert(agg, [event(1)])
    for version in range(2, MAX_PENDING_EVENTS + 1):
        agg.version = version
        assert await store.update(agg, version - 1, [event(version)])
    before = await collection.find_one({"_id": "m-1"})
    assert before is not None and len(before[OUTBOX]) == MAX_PENDING_EVENTS

    agg.version = MAX_PENDING_EVENTS + 1
    with pytest.raises(Unavailable, match="events waiting to be published") as err:
        await store.update(agg, MAX_PENDING_EVENTS, [event(MAX_PENDING_EVENTS + 1)])
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert await collection.find_one({"_id": "m-1"}) == before
    # A write that queues nothing (a stale version, here) is still told apart from a full one.
    assert not await store.update(agg, 1, [])
