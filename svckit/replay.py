"""Reading topics from their first retained offset to their end, and re-applying them
through a service's own event handlers.

`TopicReader` reads without joining a consumer group, so it never disturbs the live
consumers: `replay_topic`, the DLQ use cases (svckit.dlq) and the operator tools read
topics with it. Re-applying a whole topic rebuilds a read model and proves idempotency:
handlers apply only what is newer than the state they hold, so re-applying a topic over an
intact read model changes nothing. Poison records are counted and skipped; the live
consumer has already parked them in the DLQ.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType

from aiokafka import ConsumerRecord, TopicPartition

from svckit.consumer import EventHandler
from svckit.envelope import PoisonEvent, decode
from svckit.kafka import KafkaConnection

Log = Callable[[str], None]
BATCH = 1000


async def partitions_of(kafka: KafkaConnection, topic: str) -> list[TopicPartition]:
    admin = kafka.admin()
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code"):
        raise ValueError(f"topic {topic!r} does not exist")
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def missing_history(kafka: KafkaConnection, topic: str) -> dict[int, int]:
    """Partitions of `topic` whose first records are gone (retention or DeleteRecords), with
    the earliest offset each still holds: a read model rebuilt from such a topic would lose
    every aggregate whose history started in the deleted part."""
    partitions = await partitions_of(kafka, topic)
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in sorted(starts.items()) if offset > 0}


class TopicReader:
    """Every record of some topics, up to the end each partition had when reading began.

    ``async with TopicReader(kafka, topics) as reader:`` then ``reader.total`` is the
    number of records to come and ``async for record in reader.records()`` yields them,
    partition by partition, oldest first.
    """

    def __init__(self, kafka: KafkaConnection, topics: Sequence[str]) -> None:
        self.kafka = kafka
        self.topics = list(topics)
        self.partitions: list[TopicPartition] = []
        self.ends: dict[TopicPartition, int] = {}
        self.total = 0
        self._consumer = kafka.consumer(
            group_id=None,
            enable_auto_commit=False,
            client_id=f"storefront-reader-{uuid.uuid4().hex[:6]}",
            max_poll_records=BATCH,
        )

    async def __aenter__(self) -> TopicReader:
        self.partitions = [tp for t in self.topics for tp in await partitions_of(self.kafka, t)]
        await self._consumer.start()
        try:
            self._consumer.assign(self.partitions)
            await self._consumer.seek_to_beginning(*self.partitions)
            self.ends = await self._consumer.end_offsets(self.partitions)
            starts = await self._consumer.beginning_offsets(self.partitions)
        except BaseException:
            await self._consumer.stop()
            raise
        self.total = sum(self.ends.values()) - sum(starts.values())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._consumer.stop()

    async def records(self) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
        consumer = self._consumer
        for tp in self.partitions:
            while await consumer.position(tp) < self.ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=BATCH)
                for record in batch.get(tp, []):
                    if record.offset >= self.ends[tp]:
                        break
                    yield record


async def replay_topic(
    kafka: KafkaConnection,
    topic: str,
    handlers: Mapping[str, EventHandler],
    *,
    log: Log = print,
    progress_every: int = 2000,
) -> tuple[int, collections.Counter[str]]:
    """Apply every record up to the topic's current end; returns (records, outcome counts)."""
    counts: collections.Counter[str] = collections.Counter()
    done = 0
    async with TopicReader(kafka, [topic]) as reader:
        log(f"[replay] {topic}: {reader.total} records in {len(reader.partitions)} partitions")
        async for record in reader.records():
            try:
                envelope = decode(
                    record.value, record.headers, key=record.key, accepted_types=handlers
                )
                outcome = await handlers[envelope.type](envelope)
                counts[outcome.value] += 1
            except PoisonEvent:
                counts["poison"] += 1
            done += 1
            if done % progress_every == 0:
                log(f"[replay] {topic}: {done}/{reader.total}")
    log(f"[replay] {topic}: done, {dict(counts)}")
    return done, counts
