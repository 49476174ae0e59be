"""Re-apply a topic from offset 0 through a service's own event handlers.

Used to rebuild a read model and to prove idempotency: handlers apply only
what is newer than the state they hold, so re-applying a whole topic over an
intact read model changes nothing. Poison records are counted and skipped;
the live consumer has already parked them in the DLQ.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Mapping

from aiokafka import TopicPartition

from svckit.consumer import EventHandler
from svckit.envelope import PoisonEvent, decode
from svckit.kafka import KafkaConnection

Log = Callable[[str], None]


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


async def replay_topic(
    kafka: KafkaConnection,
    topic: str,
    handlers: Mapping[str, EventHandler],
    *,
    log: Log = print,
    progress_every: int = 2000,
) -> collections.Counter[str]:
    """Apply every record up to the topic's current end; returns outcome counts."""
    partitions = await partitions_of(kafka, topic)
    consumer = kafka.consumer(
        group_id=None,
        enable_auto_commit=False,
        client_id=f"storefront-replay-{uuid.uuid4().hex[:6]}",
        max_poll_records=1000,
    )
    await consumer.start()
    counts: collections.Counter[str] = collections.Counter()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        total = sum(ends.values()) - sum((await consumer.beginning_offsets(partitions)).values())
        log(f"[replay] {topic}: {total} records in {len(partitions)} partitions")
        done = 0
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
                for record in batch.get(tp, []):
                    if record.offset >= ends[tp]:
                        break
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
                        log(f"[replay] {topic}: {done}/{total}")
    finally:
        await consumer.stop()
    log(f"[replay] {topic}: done, {dict(counts)}")
    return counts
