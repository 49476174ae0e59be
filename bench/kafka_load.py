"""Kafka for the benchmark: backlogs of CustomerChanged events, producing them, and following a
consumer group's progress."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import topology
from bench import data
from svckit import names
from svckit.kafka import KafkaConnection


def backlog_events(n: int) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    """n CustomerChanged records: n/4 new customers, versions 1..4 in rounds, so a poll batch
    rarely holds two versions of one customer (no free wins from collapsing)."""
    from svckit.envelope import encode

    stamp = uuid_hex()
    per_round = max(1, n // 4)
    out = []
    for k in range(n):
        round_, i = divmod(k, per_round)
        key = f"bench-backlog-{stamp}-{i:06d}"
        event = data.customer_changed(key, round_ + 1, i)
        value, headers = encode(event, source=names.source(topology.ACCOUNTS), key=key)
        out.append((key, value, headers))
    return out


def uuid_hex() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


async def ensure_topic(kafka: KafkaConnection, topic: str) -> None:
    from stack.embedded import ensure_topics

    await ensure_topics(kafka, [topic])


async def produce(
    kafka: KafkaConnection, topic: str, events: list[tuple[str, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = kafka.producer(acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key.encode(), headers=headers)
            for key, value, headers in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_total(kafka: KafkaConnection, group: str, topic: str) -> int:
    admin = kafka.admin()
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(max(0, o.offset) for tp, o in offsets.items() if tp.topic == topic)
    finally:
        await admin.close()


async def watch_group(
    kafka: KafkaConnection,
    group: str,
    topic: str,
    t_spawn: float,
    baseline: int,
    timeout: float = 600,
) -> dict[str, Any]:
    """Poll the group's committed offsets on `topic` until they reach the end of the topic."""
    from aiokafka import TopicPartition

    reader = kafka.consumer(group_id=None)
    admin = kafka.admin()
    await reader.start()
    await admin.start()
    try:
        ids: set[int] = set()
        for _ in range(50):  # a topic created a moment ago may not be described yet
            described = await admin.describe_topics([topic])
            ids = {p["partition"] for d in described for p in d.get("partitions") or []}
            if ids:
                break
            await asyncio.sleep(0.2)
        parts = [TopicPartition(topic, p) for p in sorted(ids)]
        if not parts:
            raise RuntimeError(f"no partitions for {topic}")
        end = sum((await reader.end_offsets(parts)).values())
        first_t: float | None = None
        first_committed = baseline
        deadline = time.monotonic() + timeout
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            committed = sum(max(0, o.offset) for tp, o in offsets.items() if tp.topic == topic)
            now = time.monotonic()
            if first_t is None and committed > baseline:
                first_t, first_committed = now, committed
            if committed >= end and first_t is not None:
                break
            if now > deadline:
                raise TimeoutError(f"{group} at {committed}/{end} after {timeout:.0f}s")
            await asyncio.sleep(0.02)
        assert first_t is not None
        seconds = now - first_t
        events = end - first_committed
        return {
            "events_per_s": events / seconds if seconds > 0 else 0.0,
            "seconds": seconds,
            "from_spawn_seconds": now - t_spawn,
            "timed_events": events,
        }
    finally:
        await reader.stop()
        await admin.close()
