"""Issue 25 finding 1: an entry the broker refuses for good (here 2 MB, over the producer's
1 MiB request limit) must not hold back the entries queued after it. It is set aside, kept in
its document and counted, and the rest are published."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

import topology
from stack.embedded import EmbeddedStack
from storefront.accounts.v1 import events_pb2
from svckit import metrics
from svckit.kafka import EventProducer
from svckit.outbox import (
    LEASES,
    OUTBOX,
    PARKED,
    PARKED_MARK,
    PENDING,
    OutboxRelay,
    mark_parked_pending,
    outbox_entry,
    scan_backlog,
)
from svckit.store import AggregateStore
from tests.support import eventually, holds

pytestmark = pytest.mark.integration

TOPIC = topology.CUSTOMER_CHANGES


def event(customer_id: str, version: int) -> dict[str, Any]:
    message = events_pb2.CustomerChanged(customer_id=customer_id, version=version)
    return outbox_entry(TOPIC, customer_id, message, source="//test", seq=version)


def oversized(customer_id: str, version: int) -> dict[str, Any]:
    """What finding 1's request produced before events were capped: a 2 MB value."""
    entry = event(customer_id, version)
    entry["value"] = bytes(entry["value"]) + b"\x00" * (2 * 1024 * 1024)
    return entry


async def test_an_entry_the_broker_refuses_is_set_aside_and_the_rest_flow(
    stack: EmbeddedStack, mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    collection = mongo_db["set_aside.aggregates"]
    store = AggregateStore(collection, events_pb2.CustomerChanged, "customer_id")
    poisoned = events_pb2.CustomerChanged(customer_id="big", version=2)
    await store.insert(poisoned, [oversized("big", 1), event("big", 2)])
    others = [f"c-{i}" for i in range(20)]
    for customer_id in others:
        await store.insert(
            events_pb2.CustomerChanged(customer_id=customer_id, version=1),
            [event(customer_id, 1)],
        )

    producer = EventProducer(stack.kafka, "set-aside-test")
    await producer.start()
    relay = OutboxRelay(collection, producer, service="set-aside-test", sweep_interval=0.2)
    await relay.start()
    try:

        async def all_drained() -> bool | None:
            left = await collection.count_documents({f"{OUTBOX}.0": {"$exists": True}})
            return True if left == 0 else None

        await eventually(all_drained, timeout=30, what="every outbox drained")
        # counted by the sweep, through the pending documents alone (the set-aside one stays
        # pending; every other drained one leaves the pending set)
        parked = metrics.OUTBOX_PARKED.labels("set-aside-test", collection.name)

        async def only_big_pending() -> bool | None:
            pending = await collection.find({PENDING: True}, {"_id": 1}).to_list()
            return True if [d["_id"] for d in pending] == ["big"] else None

        await eventually(only_big_pending, timeout=30, what="drained documents unmarked")
        await eventually(lambda: holds(parked._value.get() == 1), timeout=30, what="parked gauge")
        # and stays so: a sweep from here on (as the next would) does not unmark it
        parked.set(0)
        await relay._sweep()  # noqa: SLF001 - one sweep, deterministically
        assert await only_big_pending() and parked._value.get() == 1
    finally:
        await relay.stop()
        await producer.stop()

    doc = await collection.find_one({"_id": "big"})
    assert doc is not None
    assert [e["seq"] for e in doc[PARKED]] == [1]  # kept, with why
    assert "MessageSizeTooLarge" in doc[PARKED][0]["reason"]
    found = await scan_backlog(collection)
    assert (found.events, found.parked) == (0, 1)
    # a database from before set-aside documents kept the pending mark: marked at start
    await collection.update_one({"_id": "big"}, {"$unset": {PENDING: ""}})
    assert (await scan_backlog(collection)).parked == 0
    await relay.ensure_index()
    assert (await scan_backlog(collection)).parked == 1
    # once per collection: later starts do not read the whole collection for it again
    await collection.update_one({"_id": "big"}, {"$unset": {PENDING: ""}})
    await relay.ensure_index()
    assert (await scan_backlog(collection)).parked == 0


async def test_replicas_starting_at_once_each_find_the_migration_done(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    """Relays of several replicas starting together each run the set-aside migration (none
    has recorded it yet): all start, and it is recorded once (the scale tests' replicas failed
    to start on the race between two records)."""
    collection = mongo_db["set_aside.racing"]
    await collection.insert_one({"_id": "a", PARKED: [{"id": "x"}], PARKED_MARK: True})
    await asyncio.gather(*(mark_parked_pending(collection) for _ in range(4)))
    assert (await scan_backlog(collection)).parked == 1
    assert await mongo_db[LEASES].count_documents({"_id": {"$regex": "^done:"}}) == 1
