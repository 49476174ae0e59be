"""Kafka offsets read without joining any group: consumer lag per group and partition, and
how much of each dead-letter queue its consumer has not replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition

from svckit.kafka import KafkaConnection


@dataclass(frozen=True)
class Lag:
    group: str
    topic: str
    partition: int
    committed: int | None
    """None: the group never committed here, so it (re)starts from the earliest offset."""
    end: int
    lag: int


@dataclass(frozen=True)
class DeadLetters:
    topic: str
    records: int
    not_replayed: int


class KafkaOffsets:
    """Partitions, log start/end offsets and group commits, read without joining any group."""

    def __init__(self, kafka: KafkaConnection, timeout: float) -> None:
        ms = int(timeout * 1000)
        self._admin = kafka.admin(request_timeout_ms=ms)
        self._consumer = kafka.consumer(
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=ms,
            client_id=f"storefront-status-{uuid.uuid4().hex[:6]}",
        )

    async def __aenter__(self) -> KafkaOffsets:
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        described = await self._admin.describe_topics(list(topics))
        return sorted(
            TopicPartition(d["topic"], p["partition"])
            for d in described
            if not d["error_code"]
            for p in d["partitions"]
        )

    async def bounds(
        self, partitions: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(log start, log end) offset of each partition."""
        if not partitions:
            return {}, {}
        starts = await self._consumer.beginning_offsets(partitions)
        ends = await self._consumer.end_offsets(partitions)
        return starts, ends

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        offsets = await self._admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def consumer_lag(kafka: KafkaOffsets, groups: Mapping[str, Sequence[str]]) -> list[Lag]:
    """Lag = end offset - committed offset, per group and partition of its topics."""
    rows: list[Lag] = []
    for group, topics in groups.items():
        partitions = await kafka.partitions(topics)
        starts, ends = await kafka.bounds(partitions)
        committed = await kafka.committed(group)
        for tp in partitions:
            done = committed.get(tp)
            position = done if done is not None else starts[tp]
            rows.append(
                Lag(group, tp.topic, tp.partition, done, ends[tp], max(0, ends[tp] - position))
            )
    return rows


async def dead_letters(kafka: KafkaOffsets, replay_groups: Mapping[str, str]) -> list[DeadLetters]:
    """Records retained in each DLQ (topic -> the group recording its replays), and how many
    `storefront dlq replay` has not applied yet."""
    topics = list(replay_groups)
    partitions = await kafka.partitions(topics)
    starts, ends = await kafka.bounds(partitions)
    replayed: dict[TopicPartition, int] = {}
    for group in set(replay_groups.values()):
        replayed.update(await kafka.committed(group))
    rows = []
    for topic in topics:
        mine = [tp for tp in partitions if tp.topic == topic]
        records = sum(ends[tp] - starts[tp] for tp in mine)
        waiting = sum(ends[tp] - max(starts[tp], replayed.get(tp, 0)) for tp in mine)
        rows.append(DeadLetters(topic, records, waiting))
    return rows
