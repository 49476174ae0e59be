"""Consumers of one group across replicas (issue 23 build 3, issue 24 build 2).

Three EventConsumers share a group on a topic of six partitions while events flow; members
join and one leaves mid-load (eager rebalances: aiokafka has no cooperative protocol). Every
event is applied once, per key in order, none skipped, and a member hands its partitions over
only after the poll in hand is applied and committed, so none is delivered twice.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import pytest

from stack.embedded import EmbeddedStack, ensure_topics
from storefront.accounts.v1 import events_pb2
from svckit.consumer import EventConsumer, Outcome
from svckit.envelope import Envelope, encode
from svckit.kafka import EventProducer
from svckit.names import consumer_group, dlq_topic
from tests.support import eventually, holds, unique

pytestmark = pytest.mark.integration

CHANGED = "storefront.accounts.v1.CustomerChanged"
SERVICE = "test-group"
KEYS = 40
VERSIONS = 15


class Copies:
    """A read model shared by the members (as their database is): applies a version only if
    it is newer than the one held, as the services' handlers do."""

    def __init__(self) -> None:
        self.version: dict[str, int] = {}
        self.applied: dict[str, list[int]] = collections.defaultdict(list)
        self.deliveries = 0

    async def __call__(self, envelope: Envelope) -> Outcome:
        self.deliveries += 1
        await asyncio.sleep(0.002)  # a database write's time, so polls are in hand a while
        version = envelope.payload(events_pb2.CustomerChanged).version
        if version <= self.version.get(envelope.key, 0):
            return Outcome.DUPLICATE
        self.version[envelope.key] = version
        self.applied[envelope.key].append(version)
        return Outcome.APPLIED


@pytest.fixture
async def topic(stack: EmbeddedStack) -> str:
    name = unique("test.group")
    await ensure_topics(stack.kafka, [name, dlq_topic(name, consumer_group(SERVICE))], partitions=6)
    return name


@pytest.fixture
async def producer(stack: EmbeddedStack) -> AsyncIterator[EventProducer]:
    p = EventProducer(stack.kafka, "test-consumer-group")
    await p.start()
    yield p
    await p.stop()


async def publish(producer: EventProducer, topic: str) -> None:
    """Every key's versions in order, spread over time so rebalances fall mid-load."""
    for version in range(1, VERSIONS + 1):
        for n in range(KEYS):
            key = f"g{n:02d}"
            value, headers = encode(
                events_pb2.CustomerChanged(customer_id=key, version=version),
                source="//test",
                key=key,
            )
            await producer.send(topic, key, value, headers)
        await asyncio.sleep(0.1)


async def test_members_joining_and_leaving_mid_load_apply_everything_once_in_order(
    stack: EmbeddedStack, topic: str, producer: EventProducer
) -> None:
    copies = Copies()
    group = unique("test-group")

    def member() -> EventConsumer:
        return EventConsumer(
            kafka=stack.kafka,
            group_id=group,
            topics=[topic],
            handlers={CHANGED: copies},
            producer=producer,
            service=SERVICE,
            max_batch=100,
        )

    total = KEYS * VERSIONS

    def applied() -> int:
        return sum(map(len, copies.applied.values()))

    first, second, third = member(), member(), member()
    await first.start()
    load = asyncio.create_task(publish(producer, topic))
    try:
        await eventually(lambda: holds(applied() >= total // 5), timeout=60, what="a fifth")
        await second.start()
        await third.start()
        await eventually(
            lambda: holds(all(len(m.assignment) == 2 for m in (first, second, third))),
            timeout=60,
            what="six partitions spread over three members",
        )
        await eventually(lambda: holds(applied() >= total // 2), timeout=60, what="a half")
        await first.stop()  # leaves the group mid-load: its partitions move
        await load
        await eventually(lambda: holds(applied() == total), timeout=90, what="every event")
    finally:
        load.cancel()
        for m in (second, third):
            await m.stop()
    assert first.rebalances >= 2 and second.rebalances >= 2
    for n in range(KEYS):
        assert copies.applied[f"g{n:02d}"] == list(range(1, VERSIONS + 1))  # in order, none lost
    assert copies.deliveries == total  # handed over after commit: nothing delivered twice
