"""The consumer loop every service uses: at-least-once, idempotent handlers,
poison events to the service's own DLQ of the topic (`<topic>.<service>-svc.dlq`,
svckit.names.dlq_topic), outages waited out.

Offsets are committed only after the batch's database writes, so a crash
re-delivers rather than loses: a poll's offsets are committed once every partition of
it was applied (partitions concurrently, each in its order). The commit is a round trip
to the group's coordinator, so the loop never waits for it: one commit is in flight at a
time, and the next, at most COMMIT_INTERVAL_SECONDS later, carries everything applied
meanwhile (a failure leaves the offsets to the next, and is handled as the poll's own; a
revocation and a stop wait for it). Handlers decide whether an event is newer than the
state they hold and report the outcome.

Several replicas share a group (aiokafka's default range assignment; it has no
cooperative protocol, so a rebalance is eager; its sticky assignor left a group of
three fulfillment replicas unassigned for good, so their start never returned). A
member whose partitions are revoked first finishes and commits the poll in hand, so
the next owner starts where it stopped: a rebalance skips
nothing, and what a member that died had applied but not committed is applied
again, which handlers ignore (versions, event ids).

The loop never moves past a record it neither applied nor dead-lettered: on any
failure it seeks each partition of the poll back to its first unprocessed record
(aiokafka's position is already past the whole poll). A failure that says a
dependency is away (svckit.failures) is retried without limit with capped
backoff, holding the partition, and shows as a stall in health and metrics; only
a failure of the event itself goes to the DLQ, after bounded retries.

A member the group's coordinator has stopped listing is rebuilt: aiokafka 0.14 was seen (in
the fault suite, a broker SIGKILLed while the group's coordinator moved) to stop heartbeating
and never rejoin, without an error, while its process went on; so a watch asks the coordinator
for the group's members every MEMBERSHIP_CHECK_SECONDS and, once this member has been missing
for MEMBERSHIP_GRACE_SECONDS while the broker answers, replaces its Kafka consumer with a new
one (which joins, and starts at the group's committed offsets).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from svckit import logs, metrics, tracing
from svckit.backoff import Backoff
from svckit.envelope import Envelope, PoisonEvent, decode, format_time
from svckit.failures import is_transient
from svckit.kafka import EventProducer, KafkaConnection, group_clients, start_with_retry
from svckit.names import consumer_group, dlq_topic

log = logging.getLogger(__name__)

MEMBERSHIP_CHECK_SECONDS = 10.0
MEMBERSHIP_GRACE_SECONDS = 60.0
"""Longer than a rebalance takes here (a revocation waits at most REVOKE_WAIT_SECONDS), so a
member that is joining is never taken for a lost one."""
STOP_SECONDS = 10.0
"""How long a stop waits for the poll in hand, and then for the Kafka consumer to leave the
group, before it abandons them: a client stuck in its coordination never returns."""
COMMIT_INTERVAL_SECONDS = 0.1
"""At most one offset commit per this long while polls keep coming: what a crash applies
again is at most this much more, and handlers ignore it; a stop and a revocation commit at
once."""
REVOKE_WAIT_SECONDS = 30.0
"""How long a revocation waits for the poll in hand to be applied and committed: far below
the group's max poll interval; past it the next owner re-applies the rest (idempotently)."""


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    IGNORED = "ignored"
    DEAD_LETTERED = "dead_lettered"


EventHandler = Callable[[Envelope], Awaitable[Outcome]]
# Applies consecutive events of one partition at once (e.g. one bulk write) and returns one
# outcome per event, in order, exactly as applying them one by one would have.
BatchHandler = Callable[[list[Envelope]], Awaitable[list[Outcome]]]


class Stalled(Exception):
    """A record could not be applied because a dependency is away: hold the position."""

    def __init__(self, record: ConsumerRecord[bytes, bytes], cause: BaseException) -> None:
        super().__init__(
            f"{record.topic}[{record.partition}]@{record.offset}: {logs.describe_chain(cause)}"
        )
        self.cause = cause


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
        kafka: KafkaConnection,
        group_id: str,
        topics: list[str],
        handlers: Mapping[str, EventHandler],
        producer: EventProducer,
        service: str,
        max_batch: int = 500,
        max_attempts: int = 5,
        backoff_base: float = 0.1,
        backoff_max: float = 2.0,
        stall_backoff_max: float = 15.0,
        batch_handlers: Mapping[str, BatchHandler] | None = None,
        membership_grace: float = MEMBERSHIP_GRACE_SECONDS,
    ) -> None:
        self._topics = topics
        self._handlers = dict(handlers)
        self._batch_handlers = dict(batch_handlers or {})
        self._producer = producer
        self._service = service
        self._group = group_id
        self._max_batch = max_batch
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._stall_backoff_max = stall_backoff_max
        self._kafka = kafka
        self._membership_grace = membership_grace
        self._consumer = self._new_consumer()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.rejoins = 0
        self._positions: dict[TopicPartition, int] = {}
        # Offsets applied and not yet committed, and the one commit in flight.
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._lag_reported: set[TopicPartition] = set()
        # Next offset to process of each partition of the poll in hand (records before it
        # are applied or dead-lettered): where a failed poll rewinds to.
        self._done: dict[TopicPartition, int] = {}
        # Clear while a poll is being applied and committed: a revocation waits for it.
        self._idle = asyncio.Event()
        self._idle.set()
        self.rebalances = 0
        self.stalled_since: float | None = None
        """Monotonic time since which a dependency has been away (None while flowing)."""
        self.stall_reason = ""

    def dlq_of(self, topic: str) -> str:
        """This service's own DLQ of `topic` (one per consumer group and topic)."""
        return dlq_topic(topic, consumer_group(self._service))

    def _new_consumer(self) -> AIOKafkaConsumer:
        """A Kafka consumer of the group, with a client id of its own: the coordinator lists
        the members by it (see `_watch_membership`)."""
        self._client_id = f"{self._group}.{uuid.uuid4().hex[:12]}"
        consumer = self._kafka.consumer(
            group_id=self._group,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._max_batch,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
        )
        consumer.subscribe(self._topics, listener=_FinishBeforeRevoke(self))
        return consumer

    async def start(self, *, timeout: float | None = 60.0) -> None:
        await start_with_retry(self._consumer.start, f"consumer {self._group}", timeout)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._group}")
        self._watch_task = asyncio.create_task(
            self._watch_membership(), name=f"consumer-watch-{self._group}"
        )

    async def stop(self) -> None:
        """Finish the batch in hand, commit its offsets, leave the group."""
        self._stopping.set()
        await _cancel(self._watch_task)
        if self._task and not self._task.cancelled():  # cancelled: a rebuild was cut short
            done, _ = await asyncio.wait({self._task}, timeout=STOP_SECONDS)
            if not done:  # stuck in its Kafka consumer (a commit that never returns)
                log.warning("consumer %s: poll not finished in %.0fs", self._group, STOP_SECONDS)
                await _cancel(self._task)
        with contextlib.suppress(Exception):  # left in flight by a poll cut short
            await _cancel(self._committing)
        await self._stop_client(self._consumer)

    async def _stop_client(self, consumer: AIOKafkaConsumer) -> None:
        """Leave the group, or abandon a client stuck in its coordination after STOP_SECONDS."""
        try:
            await asyncio.wait_for(consumer.stop(), STOP_SECONDS)
        except Exception as exc:  # noqa: BLE001 - a stuck client is abandoned, not waited for
            log.warning("consumer %s: Kafka consumer not stopped: %r", self._group, exc)

    async def _watch_membership(self) -> None:
        """Rebuild the Kafka consumer once the coordinator has not listed it as a member for
        the grace period while answering (an outage of the broker counts as nothing)."""
        admin = self._kafka.admin(client_id=f"{self._group}.watch", request_timeout_ms=5000)
        started = False
        missing_since: float | None = None
        try:
            while True:
                await asyncio.sleep(MEMBERSHIP_CHECK_SECONDS)
                try:
                    if not started:
                        await asyncio.wait_for(admin.start(), MEMBERSHIP_CHECK_SECONDS)
                        started = True
                    members = await asyncio.wait_for(
                        group_clients(admin, self._group), MEMBERSHIP_CHECK_SECONDS
                    )
                except Exception:  # noqa: BLE001 - the broker is away: nothing to tell
                    missing_since = None
                    continue
                if self._client_id in members:
                    missing_since = None
                    continue
                now = time.monotonic()
                missing_since = missing_since or now
                if now - missing_since >= self._membership_grace:
                    await self._rejoin(now - missing_since)
                    missing_since = None
        finally:
            if started:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(admin.close(), 5.0)

    async def _rejoin(self, missing: float) -> None:
        """Replace the Kafka consumer: what was applied and not committed is applied again
        (handlers ignore it), nothing is skipped."""
        log.warning(
            "consumer %s not a member of its group for %.0fs; rebuilding its Kafka consumer",
            self._group,
            missing,
        )
        await _cancel(self._task)
        with contextlib.suppress(Exception):
            await _cancel(self._committing)
        self._committing = None
        self._uncommitted.clear()  # the new consumer starts at the group's commit
        self._idle.set()
        old, self._consumer = self._consumer, self._new_consumer()
        await self._stop_client(old)
        self._positions.clear()
        await start_with_retry(self._consumer.start, f"consumer {self._group}", None)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._group}")
        self.rejoins += 1
        metrics.CONSUMER_REJOINS.labels(self._service, self._group).inc()

    async def _run(self) -> None:
        cap = self._stall_backoff_max  # a cap below a first step makes every step the cap
        stalled = Backoff(min(0.25, cap), cap)
        failed = Backoff(min(1.0, cap), cap)
        while not self._stopping.is_set():
            batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_batch)
                self._idle.clear()
                self._done = {tp: records[0].offset for tp, records in batches.items()}
                applied = await asyncio.gather(
                    *(self._process_records(records) for records in batches.values()),
                    return_exceptions=True,
                )
                failure = next((r for r in applied if isinstance(r, BaseException)), None)
                if failure is not None:
                    raise failure
                if batches:
                    self._uncommitted.update(
                        {tp: records[-1].offset + 1 for tp, records in batches.items()}
                    )
                self._commit_soon()
                self._idle.set()
                self._flowing()
                stalled.reset()
                failed.reset()
                await self._report_lag()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - rewind, wait, poll the same records again
                await self._rewind(batches)
                self._idle.set()
                if isinstance(exc, Stalled):
                    self._stalled(exc)
                    delay = stalled.next_delay()
                    log.warning("consumer %s waiting %.1fs: %s", self._group, delay, str(exc))
                else:
                    delay = failed.next_delay()
                    log.exception("consumer %s batch failed; re-reading it", self._group)
                await asyncio.sleep(delay)
        await self._flush_commits()

    def _commit_soon(self) -> None:
        """Have what was applied committed without waiting for it: by the commit in flight
        once it returns, or by a new one. A finished commit's failure is raised here."""
        task = self._committing
        if task is not None and task.done():
            self._committing = None
            task.result()
        if self._uncommitted and self._committing is None:
            self._committing = asyncio.create_task(self._commit_applied(COMMIT_INTERVAL_SECONDS))

    async def _commit_applied(self, interval: float = 0.0) -> None:
        """Commit every offset applied so far, one request at a time, until none is left:
        the ones applied while a request was out go in the next, sent `interval` after it
        (so a steady flow of small polls is not a commit each)."""
        while upto := dict(self._uncommitted):
            sent = time.monotonic()
            await self._consumer.commit(upto)
            self._positions.update(upto)
            for tp, offset in upto.items():
                if self._uncommitted.get(tp) == offset:
                    del self._uncommitted[tp]
            await asyncio.sleep(interval - (time.monotonic() - sent))

    async def _settle_commit(self) -> None:
        """Wait for the commit in flight; raises what it failed with."""
        task, self._committing = self._committing, None
        if task is not None:
            await task

    async def _flush_commits(self) -> None:
        """Wait for the commit in flight, then commit what it left (a stop, a revocation, a
        failed poll); what stays uncommitted is only applied again by the next owner."""
        for attempt in (self._settle_commit, self._commit_applied):
            try:
                await attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - re-applied, never lost
                log.warning("consumer %s: offsets not committed: %r", self._group, exc)

    async def _rewind(
        self, batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Put each partition of a failed poll back at its first unprocessed record, keeping
        (committing, in one request) what was done; a revoked partition is left to its new
        owner."""
        progress: dict[TopicPartition, int] = {}
        for tp in batches:
            done = self._done.get(tp)
            if done is None:
                continue
            try:
                self._consumer.seek(tp, done)
            except Exception:  # noqa: BLE001 - revoked meanwhile: the new owner starts at the commit
                continue
            if done > batches[tp][0].offset:
                progress[tp] = done
        self._uncommitted.update(progress)
        await self._flush_commits()

    def _stalled(self, exc: Stalled) -> None:
        if self.stalled_since is None:
            self.stalled_since = time.monotonic()
        self.stall_reason = f"{type(exc.cause).__name__}"
        metrics.CONSUMER_STALLED.labels(self._service, self._group).set(
            time.monotonic() - self.stalled_since
        )

    def _flowing(self) -> None:
        if self.stalled_since is not None:
            log.info(
                "consumer %s flowing again after %.1fs",
                self._group,
                time.monotonic() - self.stalled_since,
            )
        self.stalled_since = None
        self.stall_reason = ""
        metrics.CONSUMER_STALLED.labels(self._service, self._group).set(0)

    async def _process_records(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply one partition's poll batch in order: runs of consecutive events whose types
        share a batch handler go to it in one call; everything else goes one by one."""
        if not self._batch_handlers:
            for record in records:
                await self._process(record)
                self._mark_done(record)
            return
        run: list[tuple[ConsumerRecord[bytes, bytes], Envelope]] = []
        run_handler: BatchHandler | None = None
        for record in records:
            handler = None
            try:
                envelope = decode(
                    record.value, record.headers, key=record.key, accepted_types=self._handlers
                )
                handler = self._batch_handlers.get(envelope.type)
            except PoisonEvent:
                pass  # _process dead-letters it, in its place in the order
            if run and handler != run_handler:
                await self._apply_run(run_handler, run)  # type: ignore[arg-type]
                self._mark_done(run[-1][0])
                run = []
            if handler is None:
                await self._process(record)
                self._mark_done(record)
            else:
                run.append((record, envelope))
                run_handler = handler
        if run:
            await self._apply_run(run_handler, run)  # type: ignore[arg-type]
            self._mark_done(run[-1][0])

    def _mark_done(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self._done[TopicPartition(record.topic, record.partition)] = record.offset + 1

    async def _apply_run(
        self, handler: BatchHandler, run: list[tuple[ConsumerRecord[bytes, bytes], Envelope]]
    ) -> None:
        """One batch-handler call; if it fails, the one-by-one path (retries, DLQ) takes over,
        which is safe because handlers are idempotent."""
        topic = run[0][0].topic
        started_ns = time.time_ns()
        with tracing.tracer().start_as_current_span(
            f"process {topic}",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": topic,
                "messaging.batch.message_count": len(run),
                "messaging.consumer.group.name": self._group,
                tracing.SERVICE_ATTRIBUTE: self._service,
            },
            record_exception=False,  # its message can quote the document or the event
        ) as batch_span:
            try:
                outcomes = await handler([envelope for _, envelope in run])
                if len(outcomes) != len(run):
                    raise RuntimeError(f"{len(outcomes)} outcomes for {len(run)} events")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one by one below
                if is_transient(exc):
                    raise Stalled(run[0][0], exc) from exc
                log.warning(
                    "batch of %d events failed (%s); applying one by one",
                    len(run),
                    logs.describe_chain(exc),
                )
                for record, _ in run:
                    await self._process(record)
                return
        now = datetime.now(UTC)
        ended_ns = time.time_ns()
        for (record, envelope), outcome in zip(run, outcomes, strict=True):
            metrics.EVENTS_CONSUMED.labels(
                self._service, record.topic, envelope.type, outcome.value
            ).inc()
            tracing.event_span(
                f"process {record.topic}",
                envelope.traceparent,
                {**self._span_attributes(record, envelope), "storefront.outcome": outcome.value},
                start_ns=started_ns,
                end_ns=ended_ns,
                batch=batch_span.get_span_context(),
            )
            if outcome is Outcome.APPLIED:
                metrics.PROPAGATION_SECONDS.labels(
                    self._service, record.topic, envelope.type
                ).observe(max(0.0, (now - envelope.time).total_seconds()))

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Decode and apply one record with its event id in every log line it causes."""
        ce_id = next((v for k, v in record.headers or () if k == "ce_id"), b"")
        token = logs.current_event.set(ce_id.decode(errors="replace") if ce_id else "")
        try:
            await self._decode_and_apply(record)
        finally:
            logs.current_event.reset(token)

    async def _decode_and_apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            envelope = decode(
                record.value, record.headers, key=record.key, accepted_types=self._handlers
            )
        except PoisonEvent as exc:
            await self._dead_letter(record, str(exc), attempts=1, type_name="")
            return
        # A child of the span that committed the event, so RPC -> event -> apply is one trace.
        with tracing.tracer().start_as_current_span(
            f"process {record.topic}",
            context=tracing.parent_context(envelope.traceparent),
            kind=SpanKind.CONSUMER,
            attributes=self._span_attributes(record, envelope),
            record_exception=False,  # its message can quote the document or the event
        ):
            await self._apply(record, envelope)

    def _span_attributes(
        self, record: ConsumerRecord[bytes, bytes], envelope: Envelope
    ) -> dict[str, str | int]:
        """OpenTelemetry messaging attributes of one event's CONSUMER span."""
        return {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.kafka.message.key": envelope.key,
            "messaging.message.id": envelope.id,
            "messaging.consumer.group.name": self._group,
            "cloudevents.event_type": envelope.type,
            tracing.SERVICE_ATTRIBUTE: self._service,
        }

    async def _apply(self, record: ConsumerRecord[bytes, bytes], envelope: Envelope) -> None:
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
                if is_transient(exc):
                    raise Stalled(record, exc) from exc  # an outage: hold, never park
                if attempt >= self._max_attempts or self._stopping.is_set():
                    if self._stopping.is_set():
                        raise  # leave it uncommitted; the next owner retries it
                    await self._dead_letter(
                        record,
                        logs.describe_chain(exc),  # never the message: it can quote the event
                        attempts=attempt,
                        type_name=envelope.type,
                    )
                    return
                delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
                log.warning(
                    "applying %s failed (attempt %d): %s",
                    envelope.id,
                    attempt,
                    logs.describe_chain(exc),
                )
                await asyncio.sleep(delay)
        metrics.EVENTS_CONSUMED.labels(
            self._service, record.topic, envelope.type, outcome.value
        ).inc()
        trace.get_current_span().set_attribute("storefront.outcome", outcome.value)
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
        outage = Backoff(0.25, 2.0)
        while True:
            try:
                await self._producer.send_and_wait(
                    self.dlq_of(record.topic),
                    key,
                    record.value or b"",
                    headers,
                )
                break
            except Exception as exc:  # noqa: BLE001
                log.warning("DLQ write failed, retrying: %s", logs.describe(exc))
                await asyncio.sleep(outage.next_delay())
        metrics.EVENTS_CONSUMED.labels(
            self._service, record.topic, type_name or "unknown", Outcome.DEAD_LETTERED.value
        ).inc()
        trace.get_current_span().set_attribute("storefront.outcome", Outcome.DEAD_LETTERED.value)

    async def _report_lag(self) -> None:
        """Lag of every partition this member owns, idle ones included; forget revoked ones
        so another member's partitions are not reported twice with a stale value."""
        assigned = self._consumer.assignment()
        for tp in self._lag_reported - assigned:
            metrics.CONSUMER_LAG.remove(self._service, tp.topic, str(tp.partition))
        self._lag_reported &= assigned
        for tp in assigned:
            highwater = self._consumer.highwater(tp)
            try:
                # Known without I/O once fetching started: the next record to apply (the
                # offset the next commit carries).
                position = await asyncio.wait_for(self._consumer.position(tp), 1.0)
            except Exception:  # noqa: BLE001 - revoked meanwhile or not fetched yet
                position = self._positions.get(tp)
            if highwater is not None and position is not None:
                metrics.CONSUMER_LAG.labels(self._service, tp.topic, str(tp.partition)).set(
                    max(0, highwater - position)
                )
                self._lag_reported.add(tp)

    @property
    def assignment(self) -> set[TopicPartition]:
        return self._consumer.assignment()

    async def finish_poll(self, revoked: set[TopicPartition]) -> None:
        """Before `revoked` go to another member: let the poll in hand be applied and
        committed (the next owner starts at the commit)."""
        self.rebalances += 1
        if not revoked:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), REVOKE_WAIT_SECONDS)
            await asyncio.wait_for(self._flush_commits(), REVOKE_WAIT_SECONDS)
        except TimeoutError:
            log.warning(
                "consumer %s: partitions revoked while a poll was still being applied; "
                "the next owner applies its rest again",
                self._group,
            )
        for tp in revoked:
            self._positions.pop(tp, None)
            self._uncommitted.pop(tp, None)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel `task` and wait until it has unwound."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _FinishBeforeRevoke(ConsumerRebalanceListener):
    def __init__(self, consumer: EventConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.finish_poll(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("consumer assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
