"""Dead-letter queues: reading what is parked, and replaying it in place.

The consumer (svckit.consumer) parks a record it cannot apply in its own DLQ of the topic
(`<topic>.<group>.dlq`: one per consumer group and topic) with its
key, value and headers, plus `dlq_*` headers saying where it came from and why. Replaying
is a use case of the service that consumes the topic: it applies the parked events through
its own handlers, so they are never appended to the original topic behind newer events
for the same key, and only that service writes its documents. How far "replay
everything" got is the committed offsets of the service's DLQ-replay group
(`names.dlq_replay_group`); a record replayed by id does not move it. Any replica may serve
a replay: two at once apply some records twice, which the handlers ignore (versions, event
ids), and the progress only moves forward.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from svckit.consumer import EventHandler
from svckit.envelope import PoisonEvent, decode, header_map
from svckit.errors import DomainError
from svckit.kafka import KafkaConnection
from svckit.replay import TopicReader

log = logging.getLogger(__name__)

FAILED = "failed"
MIGRATED_FROM = "dlq_migrated_from"
"""Header of a record moved from a DLQ's old name: the id it had there."""


@dataclass(frozen=True)
class Parked:
    dlq_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def id(self) -> str:
        return f"{self.dlq_topic}:{self.partition}:{self.offset}"

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.dlq_topic, self.partition)

    @property
    def meta(self) -> dict[str, str]:
        return header_map(self.headers)

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not k.startswith("dlq_")]


async def parked(kafka: KafkaConnection, dlq_topics: Sequence[str]) -> list[Parked]:
    """Every record in the given DLQ topics, oldest first per partition."""
    async with TopicReader(kafka, dlq_topics) as reader:
        return [
            Parked(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
            async for r in reader.records()
        ]


def _consumer(kafka: KafkaConnection, group: str) -> AIOKafkaConsumer:
    return kafka.consumer(group_id=group, enable_auto_commit=False)


async def replayed_upto(
    kafka: KafkaConnection, group: str, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """Per DLQ partition: records below this offset were replayed by "replay everything"."""
    consumer = _consumer(kafka, group)
    await consumer.start()
    try:
        return {tp: (await consumer.committed(tp)) or 0 for tp in set(partitions)}
    finally:
        await consumer.stop()


async def _commit(kafka: KafkaConnection, group: str, upto: Mapping[TopicPartition, int]) -> None:
    """Move "replay everything"'s progress forward, never back: another replica of the service
    may have replayed further meanwhile (replays of the same record are idempotent)."""
    consumer = _consumer(kafka, group)
    await consumer.start()
    try:
        consumer.assign(list(upto))
        ahead = {tp: (await consumer.committed(tp)) or 0 for tp in upto}
        forward = {tp: offset for tp, offset in upto.items() if offset > ahead[tp]}
        if forward:
            await consumer.commit(forward)
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Replayed:
    id: str
    outcome: str
    error: str = ""


def _failure(exc: BaseException) -> str:
    """The error's class and code: a database error's text can hold the whole document."""
    code = getattr(exc, "code", None)
    if isinstance(exc, DomainError):
        return f"{type(exc).__name__}: {exc.message}"
    return type(exc).__name__ + (f" (code {code})" if isinstance(code, int) else "")


async def replay_parked(
    kafka: KafkaConnection,
    dlq: str,
    ids: Sequence[str],
    handlers: Mapping[str, EventHandler],
    *,
    group: str,
) -> list[Replayed]:
    """Apply parked records of the DLQ `dlq` through `handlers`: the named ones, or every
    one not replayed before. Raises LookupError for an id that is not parked there."""
    records = await parked(kafka, [dlq])
    if ids:
        by_id = {r.id: r for r in records}
        unknown = sorted(set(ids) - set(by_id))
        if unknown:
            raise LookupError(f"not parked in {dlq}: {', '.join(unknown)}")
        chosen = [by_id[i] for i in dict.fromkeys(ids)]
    else:
        done = await replayed_upto(kafka, group, [r.tp for r in records])
        chosen = [r for r in records if r.offset >= done.get(r.tp, 0)]
    results = []
    upto: dict[TopicPartition, int] = {}
    blocked: set[TopicPartition] = set()
    for record in chosen:
        try:
            envelope = decode(
                record.value, record.original_headers, key=record.key, accepted_types=handlers
            )
            outcome = (await handlers[envelope.type](envelope)).value
            results.append(Replayed(record.id, outcome))
        except PoisonEvent as exc:
            results.append(Replayed(record.id, FAILED, f"still poison: {exc}"))
        except Exception as exc:  # noqa: BLE001 - reported per record, the rest go on
            results.append(Replayed(record.id, FAILED, _failure(exc)))
        if results[-1].outcome == FAILED:
            blocked.add(record.tp)  # progress stops below the first failure
            log.warning("dlq replay of %s failed: %s", record.id, results[-1].error)
        elif record.tp not in blocked:
            upto[record.tp] = record.offset + 1
    if not ids and upto:
        await _commit(kafka, group, upto)
    return results


@dataclass(frozen=True)
class Moved:
    """What moving one consumer's records out of an old-named DLQ did."""

    moved: int
    already: int
    """Records a previous move had copied (their mark is in the new DLQ)."""
    others: int
    """Records another consumer parked: left for it."""


async def move_parked(
    kafka: KafkaConnection, old: str, new: str, mine: Callable[[str], bool]
) -> Moved:
    """Copy the records of the DLQ `old` that `mine` claims (by their `dlq_group` header)
    into `new`, key, value and headers kept, each marked with its old id (MIGRATED_FROM).
    Idempotent: a record whose mark is already in `new` is not copied again, so a move that
    stopped half-way is finished by running it again. `old` is left as it is (its other
    consumers' records, and who may delete a topic, are not this consumer's business)."""
    try:
        records = await parked(kafka, [old])
    except ValueError:  # no such topic: nothing was ever parked under the old name
        return Moved(0, 0, 0)
    in_place = {r.meta.get(MIGRATED_FROM) for r in await parked(kafka, [new])}
    claimed = [r for r in records if mine(r.meta.get("dlq_group", ""))]
    to_move = [r for r in claimed if r.id not in in_place]
    if to_move:
        producer = kafka.producer(acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for r in to_move:
                headers = [*r.headers, (MIGRATED_FROM, r.id.encode())]
                await producer.send_and_wait(new, r.value, key=r.key, headers=headers)
        finally:
            await producer.stop()
        log.info("moved %d parked records from %s to %s", len(to_move), old, new)
    return Moved(len(to_move), len(claimed) - len(to_move), len(records) - len(claimed))
