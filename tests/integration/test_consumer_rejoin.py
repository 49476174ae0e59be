"""A consumer whose Kafka client stops heartbeating without a word is rebuilt (svckit.consumer).

The fault suite once saw aiokafka 0.14 do this after the broker was SIGKILLed while the group's
coordinator moved: the coordinator dropped the member on heartbeat expiry, the group stayed
empty, and 14 events waited five minutes with no error logged anywhere. Here the client's
heartbeat and its coordinator lookup are made to hang (the state it was left in), and the
events sent after that must still be applied, by a rebuilt Kafka consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from stack.embedded import EmbeddedStack, ensure_topics
from storefront.accounts.v1 import events_pb2
from svckit import consumer as consumer_module
from svckit.consumer import EventConsumer, Outcome
from svckit.envelope import Envelope, encode
from svckit.kafka import EventProducer, group_clients
from svckit.names import consumer_group, dlq_topic
from tests.support import eventually, holds, unique

pytestmark = pytest.mark.integration

CHANGED = "storefront.accounts.v1.CustomerChanged"
SERVICE = "test-rejoin"


@pytest.fixture
async def producer(stack: EmbeddedStack) -> AsyncIterator[EventProducer]:
    p = EventProducer(stack.kafka, "test-consumer-rejoin")
    await p.start()
    yield p
    await p.stop()


async def _send(producer: EventProducer, topic: str, versions: range) -> None:
    for version in versions:
        key = f"r{version % 7}"
        value, headers = encode(
            events_pb2.CustomerChanged(customer_id=key, version=version), source="//test", key=key
        )
        await producer.send_and_wait(topic, key, value, headers)


async def _hang(*_: object, **__: object) -> bool:
    await asyncio.Event().wait()
    return False


async def test_a_member_its_coordinator_dropped_silently_is_rebuilt_and_applies_the_rest(
    stack: EmbeddedStack, producer: EventProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique("test.rejoin")
    await ensure_topics(
        stack.kafka, [topic, dlq_topic(topic, consumer_group(SERVICE))], partitions=3
    )
    monkeypatch.setattr(consumer_module, "MEMBERSHIP_CHECK_SECONDS", 1.0)
    applied: set[int] = set()

    async def handler(envelope: Envelope) -> Outcome:
        applied.add(envelope.payload(events_pb2.CustomerChanged).version)
        return Outcome.APPLIED

    group = unique("test-rejoin")
    member = EventConsumer(
        kafka=stack.kafka,
        group_id=group,
        topics=[topic],
        handlers={CHANGED: handler},
        producer=producer,
        service=SERVICE,
        membership_grace=2.0,
    )
    admin = stack.kafka.admin()
    await admin.start()
    await member.start()
    try:

        async def listed() -> bool | None:
            return True if await group_clients(admin, group) else None

        await eventually(listed, timeout=60, what="the member in its group")
        await _send(producer, topic, range(1, 21))
        await eventually(
            lambda: holds(applied >= set(range(1, 21))), timeout=60, what="the first events"
        )
        assert member.rejoins == 0

        # The state the fault suite's broker restart left the client in: no heartbeat is
        # sent and no coordinator is looked up again, and nothing says so.
        stuck = member._consumer._coordinator  # noqa: SLF001 - the failure is inside aiokafka
        monkeypatch.setattr(stuck, "_do_heartbeat", _hang)
        monkeypatch.setattr(stuck, "ensure_coordinator_known", _hang)
        stuck.coordinator_dead()

        async def dropped() -> bool | None:
            return True if not await group_clients(admin, group) else None

        await eventually(dropped, timeout=60, what="the coordinator dropping the member")
        # Its fetches still work and its loop does not wait for commits, so it may apply
        # these before it is rebuilt; the rebuilt member starts at the group's commit.
        await _send(producer, topic, range(21, 41))
        await eventually(lambda: holds(member.rejoins == 1), timeout=90, what="the rebuild")
        await _send(producer, topic, range(41, 61))
        await eventually(
            lambda: holds(applied >= set(range(1, 61))),
            timeout=90,
            what="every event, those sent after the rebuild too",
        )
        assert member.rejoins == 1
        assert await group_clients(admin, group)  # the rebuilt member is listed
    finally:
        await member.stop()
        await admin.close()
