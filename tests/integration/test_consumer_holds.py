"""The consumer never skips a record and never parks an outage (issue 12, findings 1 and 2).

Each test runs an EventConsumer on a topic of its own against the real broker, with a handler
that records what it applied, and counts what was applied, parked and lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition
from pymongo.errors import AutoReconnect, OperationFailure

from bench.kafka_load import committed_total
from stack.embedded import EmbeddedStack, ensure_topics
from storefront.accounts.v1 import events_pb2
from svckit.consumer import EventConsumer, Outcome
from svckit.envelope import Envelope, encode
from svckit.kafka import EventProducer
from svckit.names import consumer_group, dlq_topic
from tests.support import eventually, holds, read_raw, unique

pytestmark = pytest.mark.integration

CHANGED = "storefront.accounts.v1.CustomerChanged"


class Recorder:
    """A handler that applies by remembering, and fails like a database that is away while
    ``outage`` is set."""

    def __init__(self, outage: BaseException | None = None) -> None:
        self.applied: list[str] = []
        self.outage = outage
        self.failed_calls = 0

    async def __call__(self, envelope: Envelope) -> Outcome:
        if self.outage is not None:
            self.failed_calls += 1
            raise self.outage
        self.applied.append(envelope.key)
        return Outcome.APPLIED


SERVICE = "test-holds"
GROUP = consumer_group(SERVICE)
"""Whose DLQ the test consumer parks in (its per-run group_id is unique per test)."""


@pytest.fixture
async def topic(stack: EmbeddedStack) -> str:
    name = unique("test.consumer")
    await ensure_topics(stack.kafka, [name, dlq_topic(name, GROUP)], partitions=3)
    return name


@pytest.fixture
async def producer(stack: EmbeddedStack) -> AsyncIterator[EventProducer]:
    p = EventProducer(stack.kafka, "test-consumer-holds")
    await p.start()
    yield p
    await p.stop()


async def publish(stack: EmbeddedStack, topic: str, keys: list[str], *, naive: set[str]) -> None:
    raw = stack.kafka.producer(acks="all")
    await raw.start()
    try:
        for key in keys:
            value, headers = encode(
                events_pb2.CustomerChanged(customer_id=key, version=1), source="//t", key=key
            )
            if key in naive:  # a time with no UTC offset: decodes, names no instant
                headers = [(k, b"2026-12-01T10:00:00" if k == "ce_time" else v) for k, v in headers]
            await raw.send_and_wait(topic, value, key=key.encode(), headers=headers)
    finally:
        await raw.stop()


def consumer_for(
    stack: EmbeddedStack, topic: str, handler: Recorder, producer: EventProducer
) -> EventConsumer:
    return EventConsumer(
        kafka=stack.kafka,
        group_id=unique("test-holds"),
        topics=[topic],
        handlers={CHANGED: handler},
        producer=producer,
        service=SERVICE,
        max_attempts=2,
        backoff_base=0.01,
        stall_backoff_max=0.5,
    )


async def parked(stack: EmbeddedStack, topic: str) -> list[str]:
    return [(r.key or b"").decode() for r in await read_raw(stack.kafka, dlq_topic(topic, GROUP))]


async def test_a_time_without_offset_is_poison_and_nothing_after_it_is_skipped(
    stack: EmbeddedStack, topic: str, producer: EventProducer
) -> None:
    keys = [f"k{i:03d}" for i in range(60)]
    await publish(stack, topic, keys, naive={"k007", "k031"})
    handler = Recorder()
    consumer = consumer_for(stack, topic, handler, producer)
    await consumer.start()
    try:
        good = set(keys) - {"k007", "k031"}
        await eventually(
            lambda: holds(good <= set(handler.applied)), timeout=30, what="every good event"
        )
        assert sorted(await parked(stack, topic)) == ["k007", "k031"]
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    "outage",
    [
        AutoReconnect("connection refused"),
        OperationFailure("[pool] failed to connect to `user=storefront database=ferretdb`", 1),
    ],
    ids=["mongodb-away", "ferretdb-postgres-away"],
)
async def test_an_outage_holds_every_partition_and_parks_nothing(
    stack: EmbeddedStack, topic: str, producer: EventProducer, outage: BaseException
) -> None:
    keys = [f"o{i:03d}" for i in range(90)]  # over 3 partitions: one poll holds several
    await publish(stack, topic, keys, naive=set())
    handler = Recorder(outage)
    consumer = consumer_for(stack, topic, handler, producer)
    await consumer.start()
    try:
        await eventually(lambda: holds(handler.failed_calls >= 10), timeout=30, what="retries")
        assert consumer.stalled_since is not None
        held_for = time.monotonic()
        await asyncio.sleep(3.0)  # well past max_attempts x backoff: would have parked
        assert handler.applied == []
        handler.outage = None  # the database is back
        await eventually(
            lambda: holds(set(keys) <= set(handler.applied)), timeout=30, what="all applied"
        )
        await eventually(
            lambda: holds(consumer.stalled_since is None), timeout=10, what="flowing again"
        )
        assert time.monotonic() - held_for >= 3.0
        assert await parked(stack, topic) == []
        assert len(handler.applied) == len(keys)  # nothing applied twice either
    finally:
        await consumer.stop()


async def test_a_poll_is_applied_while_the_last_ones_commit_is_in_flight(
    stack: EmbeddedStack, topic: str, producer: EventProducer
) -> None:
    """A commit is a round trip to the coordinator: the loop does not wait for it before
    applying the next poll; a stop still commits everything applied."""
    handler = Recorder()
    consumer = consumer_for(stack, topic, handler, producer)
    kafka_consumer = consumer._consumer  # noqa: SLF001 - the real client, its commits held back
    real_commit = kafka_consumer.commit
    release = asyncio.Event()
    commits: list[dict[TopicPartition, int]] = []

    async def held_commit(offsets: dict[TopicPartition, int]) -> None:
        commits.append(dict(offsets))
        await release.wait()
        await real_commit(offsets)

    kafka_consumer.commit = held_commit
    await consumer.start()
    try:
        await publish(stack, topic, ["first"], naive=set())
        await eventually(lambda: holds(len(commits) == 1), timeout=30, what="a commit sent")
        await publish(stack, topic, ["second"], naive=set())
        await eventually(
            lambda: holds("second" in handler.applied), timeout=30, what="applied meanwhile"
        )
        assert len(commits) == 1  # still in flight
    finally:
        release.set()
        await consumer.stop()
    committed = await committed_total(stack.kafka, consumer._group, topic)  # noqa: SLF001
    assert committed == 2  # both records, though only one commit was sent first

