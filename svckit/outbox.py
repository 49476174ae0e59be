"""Atomic save-and-publish: the outbox lives inside the aggregate document.

A handler appends outbox entries to the document in the same single-document
write that changes the state (works on a standalone MongoDB and on FerretDB,
no transactions needed). The relay then publishes the entries in order and
removes them. A crash between the two leaves the entries in the document; the
sweep finds them and publishes them again, so nothing is lost and the worst
case is a duplicate that consumers ignore.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from aiokafka import errors as kafka_errors
from google.protobuf import message as pb_message
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from svckit import doclocks, guards, metrics, tracing
from svckit.backoff import Backoff
from svckit.envelope import encode
from svckit.errors import DomainError
from svckit.kafka import EventProducer

log = logging.getLogger(__name__)
SWEEP_MAX_SECONDS = 30.0
"""The longest pause between two sweeps, however long the last one took."""
OUTAGE_BACKOFF_BASE = 0.25
OUTAGE_BACKOFF_CAP = 2.0
"""While the database or broker is away, the relay and the remover retry after 0.125 s at
first, growing to 1-2 s (jittered): a few attempts a second per service, not a stream, and
back within 2 s of the dependency's return."""

OUTBOX = "_outbox"
PENDING = "_outbox_pending"
"""Set (to True) by every write that queues an entry, unset by the sweep once it finds the
outbox empty: the sweep finds pending documents by equality on it, a lookup FerretDB hands to
PostgreSQL and an index answers. (It pushes no other operator down:
``{"_outbox.id": {"$exists": true}}`` read and decoded every document of the collection on each
sweep.) A marked document with an empty outbox costs the next sweep one small read; clearing
the mark there instead of after each publish saves a write per event."""
PARKED = "_outbox_parked"
"""Entries the broker refused for good (too large, malformed), set aside in their document
with the reason and time, so one cannot hold back the entries queued after it: kept for a
person to look at (`storefront status`, the console, the StorefrontOutboxParked alert)."""
PARKED_MARK = "_outbox_parked_mark"
"""Set (to True) with the first entry set aside: scans find such documents by equality, the one
lookup FerretDB pushes down (see PENDING)."""
Document = dict[str, Any]

MAX_EVENT_BYTES = 256 * 1024
"""An event's encoded value is refused past this when it is created (the write fails, nothing
is stored), far under the producer's 1 MiB request limit and the broker's message.max.bytes: a
value over those would be refused at every publish."""

# Refusals of the record itself, whichever broker or client: sending it again cannot help.
# Everything else (an outage, a timeout, a missing ACL or topic) holds the entry and is retried:
# those stop every entry alike, and clear when the cause is fixed.
_RECORD_REFUSALS = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTimestampError,
    kafka_errors.UnsupportedForMessageFormatError,
)


class EventTooLarge(DomainError):
    """The change would make an event over MAX_EVENT_BYTES: refused, nothing stored (the
    request budgets of svckit.text and the domains' limits keep real requests far below)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "EVENT_TOO_LARGE"


def refused_for_good(exc: BaseException) -> bool:
    """Would the broker refuse this entry however often it is sent?"""
    return isinstance(exc, _RECORD_REFUSALS)


def outbox_entry(
    topic: str,
    key: str,
    message: pb_message.Message,
    *,
    source: str,
    seq: int,
    now: datetime | None = None,
    traceparent: str | None = None,
) -> Document:
    """An event ready to send, encoded at commit time so a re-publish is byte-identical.

    `traceparent` defaults to the active span (the RPC or event being handled), so the
    consumers' spans join the trace that caused the event without handlers passing it.
    """
    event_id = uuid.uuid4().hex
    created = now or datetime.now(UTC)
    if traceparent is None:
        traceparent = tracing.current_traceparent()
    value, headers = encode(
        message, source=source, key=key, event_id=event_id, time=created, traceparent=traceparent
    )
    if len(value) > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"{message.DESCRIPTOR.full_name} for {key[:64]!r} is {len(value)} bytes "
            f"(at most {MAX_EVENT_BYTES})"
        )
    return {
        "id": event_id,
        "seq": seq,
        "topic": topic,
        "key": key,
        "value": value,
        # A sub-document, not pairs: FerretDB v1 refuses nested arrays.
        "headers": {name: raw.decode() for name, raw in headers},
        "created": created,
    }


class Notifier(Protocol):
    """What a use case tells the relay after a write that queued events: publish this one now
    (`OutboxRelay`; the sweep would find it anyway)."""

    def notify(self, aggregate_id: Any) -> None: ...


def pending_filter() -> Document:
    return {PENDING: True}


@dataclass(frozen=True)
class BacklogScan:
    """What waits in a collection's outboxes: committed, not yet acknowledged by Kafka."""

    documents: int
    events: int
    oldest: datetime | None
    parked: int = 0
    """Entries set aside (PARKED): refused by the broker for good, waiting for a person."""

    def age_seconds(self, now: datetime) -> float | None:
        return (now - self.oldest).total_seconds() if self.oldest else None


async def scan_backlog(collection: AsyncCollection[Document]) -> BacklogScan:
    """The relay's gauges and `storefront status` read the backlog this one way."""
    documents = events = 0
    oldest: datetime | None = None
    async for doc in collection.find(pending_filter(), {f"{OUTBOX}.created": 1}):
        entries = doc.get(OUTBOX) or []
        if not entries:
            continue  # drained; the relay's next sweep clears the mark
        documents += 1
        for entry in entries:
            events += 1
            created = entry.get("created")
            if isinstance(created, datetime):
                created = created if created.tzinfo else created.replace(tzinfo=UTC)
                oldest = created if oldest is None else min(oldest, created)
    parked = 0
    async for doc in collection.find({PARKED_MARK: True}, {f"{PARKED}.id": 1}):
        parked += len(doc.get(PARKED) or [])
    return BacklogScan(documents, events, oldest, parked)


def queue(events: list[Document]) -> Document:
    """The update that appends ``events`` to a document's outbox and marks it pending."""
    return {"$push": {OUTBOX: {"$each": events}}, "$set": {PENDING: True}}


class OutboxRelay:
    """Publishes a collection's outbox entries, in order per aggregate.

    Handlers call `notify(aggregate_id)` after their write commits, which makes
    publishing prompt; a periodic sweep catches whatever a crash left behind.
    """

    def __init__(
        self,
        collection: AsyncCollection[Document],
        producer: EventProducer,
        *,
        service: str,
        sweep_interval: float = 2.0,
        batch_limit: int = 100,
    ) -> None:
        self._collection = collection
        self._producer = producer
        self._service = service
        self._sweep_interval = sweep_interval
        self._batch_limit = batch_limit
        self._swept_full = False
        self._due: set[Any] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # Sent and acknowledged, not yet pulled off their document: entry id -> (doc id, entry).
        self._published: dict[str, tuple[Any, Document]] = {}
        # Pulled lately: a load that raced the pull may still carry them.
        self._removed: collections.deque[str] = collections.deque(maxlen=50_000)
        self._removed_ids: set[str] = set()
        self._removals_due = asyncio.Event()
        self._remover: asyncio.Task[None] | None = None

    def notify(self, aggregate_id: Any) -> None:
        self._due.add(aggregate_id)
        self._wake.set()

    async def ensure_index(self) -> None:
        """The sweep's index. Called before the service takes traffic: FerretDB's
        createIndexes can stall for minutes behind a stream of writes."""
        existing = [dict(ix["key"]) async for ix in await self._collection.list_indexes()]
        if not any(PENDING in key for key in existing):
            await self._collection.create_index(PENDING)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._collection.name}")
        self._remover = asyncio.create_task(
            self._remove_loop(), name=f"outbox-remover-{self._collection.name}"
        )

    async def stop(self) -> None:
        """Publish what is due, then stop; anything left waits for the next start's sweep."""
        self._stopping = True
        self._wake.set()
        if self._task:
            await self._task
        self._removals_due.set()
        if self._remover:
            await self._remover

    async def _run(self) -> None:
        sweep_at = 0.0  # sweep at once on start: a crash may have left entries behind
        outage = Backoff(OUTAGE_BACKOFF_BASE, OUTAGE_BACKOFF_CAP)
        while True:
            timeout = max(0.0, sweep_at - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            due, self._due = self._due, set()
            sweeping = time.monotonic() >= sweep_at
            began = time.monotonic()
            try:
                docs = await self._load(due, sweeping)
                await self._publish(docs)
                if sweeping:
                    await self._report_backlog()
                    # Where the database cannot use the index (FerretDB v1 scans and decodes
                    # the whole collection for both queries: seconds at a few thousand
                    # documents) the sweep would take the database's time from the RPCs;
                    # keep it under a tenth. On MongoDB this stays sweep_interval.
                    # A full batch may have left more behind: sweep again soon. And never
                    # wait longer than SWEEP_MAX_SECONDS: what a killed process committed and
                    # never published waits for a sweep (seen in the fault suite on a loaded
                    # machine: sweeps minutes apart, copies still stale after the check's 180 s).
                    spent = time.monotonic() - began
                    pause = min(SWEEP_MAX_SECONDS, max(self._sweep_interval, 10 * spent))
                    if self._swept_full:
                        pause = self._sweep_interval
                    sweep_at = time.monotonic() + pause
                outage.reset()
            except Exception:  # noqa: BLE001 - broker or database down: retry on a sweep
                log.exception("outbox relay for %s failed; retrying", self._collection.name)
                if self._stopping:
                    return  # the entries stay in MongoDB for the next start's sweep
                self._due |= due
                sweep_at = time.monotonic() + outage.next_delay()
                # A broker outage is exactly when the backlog grows: keep the gauges live.
                with contextlib.suppress(Exception):
                    await self._report_backlog()
            if self._stopping and not self._due:
                return

    async def _load(self, due: set[Any], sweeping: bool) -> list[Document]:
        projection = {OUTBOX: 1}
        docs: dict[Any, Document] = {}
        if due:
            # One find by _id each, not one $in: FerretDB v1 pushes down only {"_id": value}
            # and scans the whole collection for anything else (see svckit/guards.py).
            found = await asyncio.gather(
                *(self._collection.find_one({"_id": i}, projection) for i in due)
            )
            docs.update((doc["_id"], doc) for doc in found if doc)
        if sweeping:
            cursor = self._collection.find(pending_filter(), projection).limit(self._batch_limit)
            drained = []
            seen = 0
            async for doc in cursor:
                seen += 1
                if doc.get(OUTBOX):
                    docs.setdefault(doc["_id"], doc)
                else:
                    drained.append(doc["_id"])
            self._swept_full = seen >= self._batch_limit
            await self._unmark(drained)
        return [d for d in docs.values() if d.get(OUTBOX)]

    async def _unmark(self, doc_ids: list[Any]) -> None:
        """Clear the mark of documents the sweep found with an empty outbox; one that queued
        an entry since keeps it (the ``$size`` guard fails)."""
        if not doc_ids:
            return
        unmark = [
            UpdateOne({"_id": doc_id, OUTBOX: {"$size": 0}}, {"$unset": {PENDING: ""}})
            for doc_id in doc_ids
        ]
        async with doclocks.for_collection(self._collection).hold(*doc_ids):
            await guards.bulk_write(self._collection, unmark)

    async def _publish(self, docs: list[Document]) -> None:
        """Send every entry; one the broker refuses for good is set aside, not retried, so it
        never holds back the others. A transient failure (an outage) is raised after the rest
        were sent: the relay retries those entries on its next sweep."""
        if not docs:
            return
        sends = []
        refused: list[tuple[Any, Document, BaseException]] = []
        for doc in docs:
            for entry in sorted(doc[OUTBOX], key=lambda e: e["seq"]):
                if entry["id"] in self._published or entry["id"] in self._removed_ids:
                    continue  # sent already; its removal is queued or raced this load
                headers = [(name, value.encode()) for name, value in entry["headers"].items()]
                try:
                    future = await self._producer.send(
                        entry["topic"], entry["key"], bytes(entry["value"]), headers
                    )
                except Exception as exc:
                    if not refused_for_good(exc):
                        raise
                    refused.append((doc["_id"], entry, exc))
                    continue
                sends.append((doc["_id"], entry, future))
        results = await asyncio.gather(*(f for _, _, f in sends), return_exceptions=True)
        transient: BaseException | None = None
        for (doc_id, entry, _), result in zip(sends, results, strict=True):
            if isinstance(result, BaseException):
                if refused_for_good(result):
                    refused.append((doc_id, entry, result))
                else:
                    transient = transient or result
                continue
            metrics.EVENTS_PUBLISHED.labels(
                self._service, entry["topic"], entry["headers"].get("ce_type", "")
            ).inc()
            self._published[entry["id"]] = (doc_id, entry)
        # Clearing the entries is a database write per document: done by _remove_loop,
        # behind the publishing, so it never delays the next events.
        self._removals_due.set()
        await self._set_aside(refused)
        if transient is not None:
            raise transient

    async def _set_aside(self, refused: list[tuple[Any, Document, BaseException]]) -> None:
        """Move each refused entry from the outbox to PARKED, with why and when."""
        if not refused:
            return
        now = datetime.now(UTC)
        moves = []
        for doc_id, entry, exc in refused:
            reason = f"{type(exc).__name__}: {exc}"[:500]
            log.error(
                "outbox entry %s (%s, %d bytes) of %s refused for good, set aside: %s",
                entry["id"],
                entry["topic"],
                len(entry["value"]),
                self._collection.name,
                reason,
            )
            parked = {**entry, "reason": reason, "parked": now}
            moves.append(
                UpdateOne(
                    {"_id": doc_id},
                    {
                        "$pull": {OUTBOX: entry},
                        "$push": {PARKED: parked},
                        "$set": {PARKED_MARK: True},
                    },
                )
            )
        doc_ids = list({doc_id: None for doc_id, _, _ in refused})
        async with doclocks.for_collection(self._collection).hold(*doc_ids):
            await guards.bulk_write(self._collection, moves)

    async def _remove_loop(self) -> None:
        """Pull published entries off their documents, a few documents per command."""
        locks = doclocks.for_collection(self._collection)
        outage = Backoff(OUTAGE_BACKOFF_BASE, OUTAGE_BACKOFF_CAP)
        while True:
            await self._removals_due.wait()
            self._removals_due.clear()
            while self._published:
                batch = list(self._published.items())[: guards.MAX_WRITES_PER_COMMAND]
                # Pull each entry by its whole stored value: FerretDB v1 matches $pull
                # conditions only as exact elements (it ignores {"id": ...} and $in).
                removals = [
                    UpdateOne({"_id": doc_id}, {"$pull": {OUTBOX: entry}})
                    for _, (doc_id, entry) in batch
                ]
                doc_ids = list({doc_id: None for _, (doc_id, _) in batch})
                try:
                    async with locks.hold(*doc_ids):
                        await guards.bulk_write(self._collection, removals)
                except Exception:  # noqa: BLE001 - the entries stay; worst case a re-publish
                    log.exception("outbox removal for %s failed", self._collection.name)
                    if self._stopping:
                        return
                    await asyncio.sleep(outage.next_delay())
                    continue
                outage.reset()
                for entry_id, _ in batch:
                    self._published.pop(entry_id, None)
                    if len(self._removed) == self._removed.maxlen:
                        self._removed_ids.discard(self._removed[0])
                    self._removed.append(entry_id)
                    self._removed_ids.add(entry_id)
            if self._stopping:
                return

    async def _report_backlog(self) -> None:
        found = await scan_backlog(self._collection)
        metrics.OUTBOX_PENDING.labels(self._service, self._collection.name).set(found.events)
        age = found.age_seconds(datetime.now(UTC)) or 0.0
        metrics.OUTBOX_OLDEST_AGE.labels(self._service, self._collection.name).set(age)
        metrics.OUTBOX_PARKED.labels(self._service, self._collection.name).set(found.parked)
