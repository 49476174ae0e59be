"""Whether a topic still holds its whole history, against the real broker: what a rebuild
checks before it forgets a read model (svckit.replay.missing_history)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete

from stack.embedded import EmbeddedStack, ensure_topics
from stack.kafka_security import BROKER
from svckit.replay import missing_history

pytestmark = pytest.mark.integration


async def test_records_deleted_from_a_partition_are_noticed(stack: EmbeddedStack) -> None:
    topic = f"history-{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.kafka, [topic], partitions=2)
    producer = stack.kafka.producer(acks="all")
    await producer.start()
    try:
        for _ in range(3):
            await producer.send_and_wait(topic, b"v", key=b"k", partition=0)
        await producer.send_and_wait(topic, b"v", key=b"k", partition=1)
    finally:
        await producer.stop()
    assert await missing_history(stack.kafka, topic) == {}
    if stack.external_kafka:
        pytest.skip("deleting records needs the embedded broker's super user")
    admin = stack.kafka_as(BROKER).admin()
    await admin.start()
    try:  # what retention does to old segments, at once
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(2)})
    finally:
        await admin.close()
    assert await missing_history(stack.kafka, topic) == {0: 2}
