"""The consumer loop every service uses: at-least-once, idempotent handlers,
bounded retries with backoff, poison events to `<topic>.dlq`.

Offsets are committed only after the batch's database writes, so a crash
re-delivers rather than loses. Handlers decide whether an event is newer than
the state they hold and report the outcome.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from svckit import metrics
from svckit.envelope import Envelope, PoisonEvent, decode, format_time
from svckit.kafka import EventProducer

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    IGNORED = "ignored"
    DEAD_LETTERED = "dead_lettered"


EventHandler = Callable[[Envelope], Awaitable[Outcome]]


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


def dlq_headers(
    record: ConsumerRecord[bytes, bytes], *, error: str, attempts: int, group: str
) -> list[tuple[str, bytes]]:
    """The original headers plus where the record came from and why it failed."""
    origin = [
        ("dlq_error", error[:1000]),
        ("dlq_topic", record.topic),
        ("dlq_partition", str(record.partition)),
        ("dlq_offset", str(record.offset)),
        ("dlq_attempts", str(attempts)),
        ("dlq_group", group),
        ("dlq_time", format_time(datetime.now(UTC))),
    ]
    kept = [(k, v) for k, v in (record.headers or ()) if not k.startswith("dlq_")]
    return kept + [(k, v.encode()) for k, v in origin]


class EventConsumer:
    """Consumes topics with a handler per event type (ce_type)."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        topics: list[str],
        handlers: Mapping[str, EventHandler],
        producer: EventProducer,
        service: str,
        max_batch: int = 500,
        max_attempts: int = 5,
        backoff_base: float = 0.1,
        backoff_max: float = 2.0,
    ) -> None:
        self._topics = topics
        self._handlers = dict(handlers)
        self._producer = producer
        self._service = service
        self._group = group_id
        self._max_batch = max_batch
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_batch,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}

    async def start(self, *, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self._consumer.start()
                break
            except Exception as exc:  # noqa: BLE001 - broker may still be starting
                if loop.time() > deadline:
                    raise
                log.warning("consumer %s cannot reach kafka yet: %s", self._group, exc)
                await asyncio.sleep(1.0)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._group}")

    async def stop(self) -> None:
        """Finish the batch in hand, commit its offsets, leave the group."""
        self._stopping.set()
        if self._task:
            await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_batch)
                for tp, records in batches.items():
                    for record in records:
                        await self._process(record)
                    await self._consumer.commit({tp: records[-1].offset + 1})
                    self._positions[tp] = records[-1].offset + 1
                self._report_lag()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep consuming; uncommitted records come again
                log.exception("consumer %s batch failed; will re-read", self._group)
                await asyncio.sleep(1.0)

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            envelope = decode(
                record.value, record.headers, key=record.key, accepted_types=self._handlers
            )
        except PoisonEvent as exc:
            await self._dead_letter(record, str(exc), attempts=1, type_name="")
            return
        handler = self._handlers[envelope.type]
        attempt = 0
        while True:
            attempt += 1
            try:
                outcome = await handler(envelope)
                break
            except PoisonEvent as exc:
                await self._dead_letter(record, str(exc), attempts=attempt, type_name=envelope.type)
                return
            except Exception as exc:  # noqa: BLE001 - retried, then dead-lettered
                if attempt >= self._max_attempts or self._stopping.is_set():
                    if self._stopping.is_set():
                        raise  # leave it uncommitted; the next owner retries it
                    await self._dead_letter(
                        record,
                        f"{type(exc).__name__}: {exc}",
                        attempts=attempt,
                        type_name=envelope.type,
                    )
                    return
                delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
                log.warning("applying %s failed (attempt %d): %s", envelope.id, attempt, exc)
                await asyncio.sleep(delay)
        metrics.EVENTS_CONSUMED.labels(
            self._service, record.topic, envelope.type, outcome.value
        ).inc()
        if outcome is Outcome.APPLIED:
            delay_s = (datetime.now(UTC) - envelope.time).total_seconds()
            metrics.PROPAGATION_SECONDS.labels(self._service, record.topic, envelope.type).observe(
                max(0.0, delay_s)
            )

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: str, *, attempts: int, type_name: str
    ) -> None:
        """Park the record; retried until the DLQ has it, because skipping would lose it."""
        log.error(
            "dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, error
        )
        headers = dlq_headers(record, error=error, attempts=attempts, group=self._group)
        key = (record.key or b"").decode(errors="replace")
        while True:
            try:
                await self._producer.send_and_wait(
                    dlq_topic(record.topic), key, record.value or b"", headers
                )
                break
            except Exception as exc:  # noqa: BLE001
                log.warning("DLQ write failed, retrying: %s", exc)
                await asyncio.sleep(1.0)
        metrics.EVENTS_CONSUMED.labels(
            self._service, record.topic, type_name or "unknown", Outcome.DEAD_LETTERED.value
        ).inc()

    def _report_lag(self) -> None:
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            position = self._positions.get(tp)
            if highwater is not None and position is not None:
                metrics.CONSUMER_LAG.labels(self._service, tp.topic, str(tp.partition)).set(
                    max(0, highwater - position)
                )

    @property
    def assignment(self) -> set[TopicPartition]:
        return self._consumer.assignment()
