"""Atomic save-and-publish: the outbox lives inside the aggregate document.

A handler appends outbox entries to the document in the same single-document
write that changes the state (works on a standalone MongoDB and on FerretDB,
no transactions needed). The relay then publishes the entries in order and
removes them. A crash between the two leaves the entries in the document; the
recovery sweep finds them and publishes them again, so nothing is lost and the worst
case is a duplicate that consumers ignore.

Several processes (replicas) may share the database. Each entry names the process that
committed it (``by``), and that process publishes it: the store hands the relay the entries
it has just written (`committed`), so nothing is read back. The recovery sweep is for what no
prompt path published: entries of a process that died (its membership lease in the leases
collection lapsed) or that has held one up past STUCK_SECONDS. The documents are spread over
PARTITIONS recovery partitions, leased in MongoDB among the live relays (a fair share each), so
a dead replica's partitions and entries are taken over within a lease's length.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import grpc
from aiokafka import errors as kafka_errors
from google.protobuf import message as pb_message
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from svckit import guards, metrics, tracing
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
"""Set (to True) by every write that queues an entry and by setting one aside (PARKED), unset
by the sweep once it finds the outbox empty and nothing set aside: the sweep and the gauges
find pending and parked documents by equality on it, a lookup FerretDB hands to PostgreSQL and
an index answers. (It pushes no other operator down:
``{"_outbox.id": {"$exists": true}}`` read and decoded every document of the collection on each
sweep.) A marked document with an empty outbox costs the next sweep one small read; clearing
the mark there instead of after each publish saves a write per event."""
PARKED = "_outbox_parked"
"""Entries the broker refused for good (too large, malformed), set aside in their document
with the reason and time, so one cannot hold back the entries queued after it: kept for a
person to look at (`storefront status`, the console, the StorefrontOutboxParked alert)."""
PARKED_MARK = "_outbox_parked_mark"
"""Set (to True) with the first entry set aside. Such a document keeps PENDING, so the scans
that count what is set aside read the pending documents only, through PENDING's index (a find
on this mark, which no index serves, read every document of the collection at each sweep)."""
BY = "by"
"""The entry's field naming the relay (process) that committed it and publishes it."""
PROCESS = uuid.uuid4().hex[:16]
"""This process's relay identity: stamped on every entry it creates (`outbox_entry`)."""
LEASES = "outbox.leases"
"""The collection (beside the relayed ones) holding the relays' membership and partition
leases, ``member:<collection>:<owner>`` and ``partition:<collection>:<n>``, and the one-off
migrations done, ``done:<what>:<collection>``."""
PARTITIONS = 8
"""Recovery partitions per collection (a document's is crc32 of its id, modulo this): shared
among the live relays, ceil(PARTITIONS / live) each."""
LEASE_SECONDS = 6.0
"""How long a membership or partition lease lasts unrenewed: a killed replica's entries and
partitions are taken over within about this plus one renewal."""
LEASE_RENEW_SECONDS = 1.5
OWN_GRACE_SECONDS = 1.0
"""A relay's sweep leaves its own entries this long to its prompt path (a write's reply and
its hand-over may still be on their way) before it publishes them itself."""
STUCK_SECONDS = 30.0
"""An entry older than this is published by whoever holds its partition, even if the process
that committed it is alive: it is held up (e.g. its broker connection is broken)."""
REMOVE_CONCURRENCY = 16
"""Removal writes in flight at once, each on one document: none waits behind another."""
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
    by: str = PROCESS,
) -> Document:
    """An event ready to send, encoded at commit time so a re-publish is byte-identical.

    `traceparent` defaults to the active span (the RPC or event being handled), so the
    consumers' spans join the trace that caused the event without handlers passing it.
    """
    event_id = uuid.uuid4().hex
    created = now or datetime.now(UTC)
    # Milliseconds, as stored: the entry handed to the relay then equals the stored one, which
    # the relay's removal matches exactly (FerretDB matches $pull only by whole elements).
    created = created.replace(microsecond=created.microsecond // 1000 * 1000)
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
        BY: by,
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
    """What `storefront status` shows: the backlog and what is set aside, one scan."""
    documents = events = parked = 0
    oldest: datetime | None = None
    projection = {f"{OUTBOX}.created": 1, f"{PARKED}.id": 1}
    async for doc in collection.find(pending_filter(), projection):
        entries = doc.get(OUTBOX) or []
        parked += len(doc.get(PARKED) or [])
        if not entries:
            continue  # drained, or only entries set aside
        documents += 1
        events += len(entries)
        oldest = _oldest(entries, oldest)
    return BacklogScan(documents, events, oldest, parked)


def _oldest(entries: list[Document], oldest: datetime | None) -> datetime | None:
    """The earliest ``created`` among `entries` and `oldest`."""
    for entry in entries:
        created = _aware(entry.get("created"))
        if created:
            oldest = created if oldest is None else min(oldest, created)
    return oldest


async def mark_parked_pending(collection: AsyncCollection[Document]) -> None:
    """Documents with entries set aside before they kept PENDING get it, once per collection:
    a find on PARKED_MARK reads the whole collection, so that it was done is recorded in the
    leases collection, and later starts skip it."""
    leases = collection.database[LEASES]
    done = f"done:parked-pending:{collection.name}"
    if await leases.find_one({"_id": done}, {"_id": 1}):
        return
    await collection.update_many(
        {PARKED_MARK: True, PENDING: {"$ne": True}}, {"$set": {PENDING: True}}
    )
    with contextlib.suppress(DuplicateKeyError):  # replicas starting at once: one records it
        await leases.insert_one({"_id": done, "at": datetime.now(UTC)})


def queue(events: list[Document]) -> Document:
    """The update that appends ``events`` to a document's outbox and marks it pending."""
    return {"$push": {OUTBOX: {"$each": events}}, "$set": {PENDING: True}}


_RELAYS: dict[str, list[OutboxRelay]] = {}


def committed(collection: AsyncCollection[Document], doc_id: Any, entries: list[Document]) -> None:
    """The store's hand-over: `entries` were just committed to document `doc_id`. The relay of
    this process that they name (``by``) publishes them without reading them back; with no
    such relay running, the recovery sweep will."""
    if not entries:
        return
    owner = entries[0].get(BY)
    for relay in _RELAYS.get(collection.full_name, ()):
        if relay.owner == owner:
            relay.hand(doc_id, entries)
            return


def _by_document(batch: list[tuple[Any, list[Document]]]) -> list[tuple[Any, list[Document]]]:
    """One item per document, each entry once: what was handed over and what was read back
    for the same document are sent together, in seq order (sent apart, the read-back's older
    entries came after the handed newer ones: a write served before its relay started is
    only named, and the next write's entries are handed)."""
    merged: dict[Any, dict[str, Document]] = {}
    for doc_id, entries in batch:
        merged.setdefault(doc_id, {}).update((e["id"], e) for e in entries)
    return [(doc_id, list(entries.values())) for doc_id, entries in merged.items()]


def partition_of(doc_id: Any) -> int:
    """A document's recovery partition: the same in every process."""
    return zlib.crc32(repr(doc_id).encode()) % PARTITIONS


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _age(entry: Document, now: datetime) -> float:
    created = _aware(entry.get("created"))
    return (now - created).total_seconds() if created else math.inf


class RecoveryLeases:
    """This relay's membership and its share of a collection's recovery partitions, kept as
    documents with an expiry and taken by compare-and-set writes (single-document writes are
    atomic on MongoDB and on the patched embedded FerretDB): no other infrastructure."""

    def __init__(
        self,
        leases: AsyncCollection[Document],
        name: str,
        owner: str,
        *,
        seconds: float = LEASE_SECONDS,
        partitions: int = PARTITIONS,
    ) -> None:
        self._leases = leases
        self._name = name
        self.owner = owner
        self._seconds = seconds
        self._partitions = partitions
        self.held: frozenset[int] = frozenset()
        self.live: frozenset[str] = frozenset({owner})
        self._valid_until = 0.0  # monotonic: past it, nothing counts as held

    def _member_id(self, owner: str) -> str:
        return f"member:{self._name}:{owner}"

    def _partition_id(self, n: int) -> str:
        return f"partition:{self._name}:{n}"

    def holds(self, doc_id: Any) -> bool:
        if time.monotonic() > self._valid_until:
            return False
        return partition_of(doc_id) in self.held

    async def renew(self) -> None:
        """Renew the membership and the partitions held, in one write; take free ones up to a
        fair share, give back any beyond it (a replica joined)."""
        began = time.monotonic()
        now = datetime.now(UTC)
        until = now + timedelta(seconds=self._seconds)
        live = {self.owner}
        member = False
        parts: dict[str, Document] = {}
        async for doc in self._leases.find({"relay": self._name}):
            expiry = _aware(doc.get("until"))
            if doc.get("kind") == "member":
                if doc["_id"] == self._member_id(self.owner):
                    member = True
                elif expiry and expiry > now:
                    live.add(doc["owner"])
                elif expiry and (now - expiry).total_seconds() > 60 * self._seconds:
                    await self._leases.delete_one({"_id": doc["_id"], "until": doc["until"]})
            else:
                parts[doc["_id"]] = doc
        mine = {
            n
            for n in range(self._partitions)
            if parts.get(self._partition_id(n), {}).get("owner") == self.owner
        }
        held = await self._renew_mine(mine, member, until)
        share = math.ceil(self._partitions / len(live))
        for n in range(self._partitions):
            if len(held) >= share:
                break
            if n in held:
                continue
            if await self._take(n, parts.get(self._partition_id(n)), now, until):
                held.add(n)
        for n in sorted(held, reverse=True)[: max(0, len(held) - share)]:
            await self._give_back(n)
            held.discard(n)
        self.live = frozenset(live)
        self.held = frozenset(held)
        self._valid_until = began + self._seconds

    async def _renew_mine(self, mine: set[int], member: bool, until: datetime) -> set[int]:
        """Extend this relay's membership and the partitions it held at the read (`mine`) to
        `until`, all in one write; the partitions still its own. One taken over since the read
        (its lease had lapsed) is not: only then are they read again, to know which (another
        relay's take changes the owner; nothing else does)."""
        if not member:
            await self._leases.update_one(
                {"_id": self._member_id(self.owner)},
                {"$set": {"kind": "member", "relay": self._name, "owner": self.owner}},
                upsert=True,
            )
        renewed = await self._leases.update_many(
            {"relay": self._name, "owner": self.owner}, {"$set": {"until": until}}
        )
        if renewed.matched_count == len(mine) + 1:
            return set(mine)
        ids = {self._partition_id(n): n for n in mine}
        still = self._leases.find({"relay": self._name, "owner": self.owner}, {"_id": 1})
        return {ids[doc["_id"]] async for doc in still if doc["_id"] in ids}

    async def _take(self, n: int, doc: Document | None, now: datetime, until: datetime) -> bool:
        lease = {"kind": "partition", "relay": self._name, "owner": self.owner, "until": until}
        if doc is None:
            try:
                await self._leases.insert_one({"_id": self._partition_id(n), **lease})
            except DuplicateKeyError:
                return False  # another relay took it first
            return True
        expiry = _aware(doc.get("until"))
        if expiry and expiry > now:
            return False
        # Compare-and-set on the expiry read: of relays racing for it, one matches.
        taken = await self._leases.update_one(
            {"_id": doc["_id"], "owner": doc.get("owner"), "until": doc.get("until")},
            {"$set": lease},
        )
        return taken.matched_count == 1

    async def _give_back(self, n: int) -> None:
        """Expire the lease and drop the ownership with it: a partition still named this
        relay's would be renewed with the rest (and given back again) at the next renewal."""
        await self._leases.update_one(
            {"_id": self._partition_id(n), "owner": self.owner},
            {"$set": {"until": datetime.fromtimestamp(0, UTC), "owner": None}},
        )

    async def leave(self) -> None:
        """A clean stop: the others take the partitions over at their next renewal."""
        self.held, self._valid_until = frozenset(), 0.0
        for n in range(self._partitions):
            await self._give_back(n)
        await self._leases.delete_one({"_id": self._member_id(self.owner)})


class OutboxRelay:
    """Publishes a collection's outbox entries, in order per aggregate.

    Three tasks that never wait for one another: the prompt path publishes what the store
    hands over (`hand`, via `committed`) or a handler names (`notify`); the remover pulls
    acknowledged entries off their documents; the recovery sweep (with the backlog gauges)
    publishes what no prompt path did. A fourth renews the recovery leases.
    """

    def __init__(
        self,
        collection: AsyncCollection[Document],
        producer: EventProducer,
        *,
        service: str,
        sweep_interval: float = 2.0,
        batch_limit: int = 100,
        owner: str = PROCESS,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._collection = collection
        self._producer = producer
        self._service = service
        self._sweep_interval = sweep_interval
        self._batch_limit = batch_limit
        self.owner = owner
        self._lease_seconds = lease_seconds
        self.leases = RecoveryLeases(
            collection.database[LEASES], collection.name, owner, seconds=lease_seconds
        )
        self._labels = (service, collection.name)
        # Committed here and handed over, not yet sent: doc id -> entries in commit order.
        self._handed: dict[Any, list[Document]] = {}
        # Documents handed over lately: a handler's notify() after its save reads nothing.
        self._handed_ids: collections.OrderedDict[Any, float] = collections.OrderedDict()
        self._due: set[Any] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._settling: set[asyncio.Task[None]] = set()
        self._outage = Backoff(OUTAGE_BACKOFF_BASE, OUTAGE_BACKOFF_CAP)
        # Being sent (either path): entry ids.
        self._inflight: set[str] = set()
        # Documents with entries sent and not yet settled: a document's next entries wait for
        # them, so an entry whose acknowledgement failed is sent again before any later one
        # of its document (a failed ack with later ones acknowledged would reorder them).
        self._busy: set[Any] = set()
        # Sent and acknowledged, not yet pulled off their document: entry id -> (doc id, entry).
        self._published: dict[str, tuple[Any, Document]] = {}
        # Pulled lately: a sweep that read the document before the pull may still carry them.
        self._removed: collections.deque[str] = collections.deque(maxlen=50_000)
        self._removed_ids: set[str] = set()
        self._removals_due = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = datetime.now(UTC)

    # ----- what the use cases call ------------------------------------------------------

    def hand(self, doc_id: Any, entries: list[Document]) -> None:
        """Entries just committed to `doc_id` by this process: publish them now."""
        self._handed.setdefault(doc_id, []).extend(entries)
        self._handed_ids[doc_id] = time.monotonic()
        self._handed_ids.move_to_end(doc_id)
        while len(self._handed_ids) > 10_000:
            self._handed_ids.popitem(last=False)
        self._wake.set()

    def notify(self, aggregate_id: Any) -> None:
        """A write queued events for `aggregate_id`: publish them (read back, unless the store
        handed them over already)."""
        handed = self._handed_ids.get(aggregate_id)
        if handed is not None and time.monotonic() - handed < 5.0:
            return
        self._due.add(aggregate_id)
        self._wake.set()

    async def ensure_index(self) -> None:
        """The sweep's index. Called before the service takes traffic: FerretDB's
        createIndexes can stall for minutes behind a stream of writes."""
        existing = [dict(ix["key"]) async for ix in await self._collection.list_indexes()]
        if not any(PENDING in key for key in existing):
            await self._collection.create_index(PENDING)
        await mark_parked_pending(self._collection)
        leases = self._collection.database[LEASES]
        existing = [dict(ix["key"]) async for ix in await leases.list_indexes()]
        if not any("relay" in key for key in existing):
            await leases.create_index("relay")

    async def start(self) -> None:
        self._started = datetime.now(UTC)
        _RELAYS.setdefault(self._collection.full_name, []).append(self)
        try:
            await self.leases.renew()
        except Exception:  # noqa: BLE001 - the lease task retries; the prompt path needs none
            log.exception("outbox leases of %s not renewed yet", self._collection.name)
        name = self._collection.name
        self._tasks = [
            asyncio.create_task(self._run(), name=f"outbox-relay-{name}"),
            asyncio.create_task(self._remove_loop(), name=f"outbox-remover-{name}"),
            asyncio.create_task(self._recover_loop(), name=f"outbox-recovery-{name}"),
            asyncio.create_task(self._lease_loop(), name=f"outbox-leases-{name}"),
        ]

    async def stop(self) -> None:
        """Publish what is due, then stop; anything left waits for a recovery sweep."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        with contextlib.suppress(ValueError):
            _RELAYS.get(self._collection.full_name, []).remove(self)
        if not self._tasks:
            return
        prompt, remover, recovery, lease = self._tasks
        await prompt
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await recovery
        self._removals_due.set()
        await remover
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.leases.leave(), 5.0)

    # ----- the prompt path --------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            handed, self._handed = self._handed, {}
            due, self._due = self._due, set()
            try:
                batch = list(handed.items())
                if due:
                    batch = _by_document(batch + await self._read_back(due))
                await self._send(batch, recovered=False)
            except Exception:  # noqa: BLE001 - broker or database down: retried after a pause
                log.exception("outbox relay for %s failed; retrying", self._collection.name)
                if self._stopping:
                    return  # the entries stay in MongoDB for a recovery sweep
                self._requeue(handed.items(), due)
                await self._pause()
            if self._stopping and not self._handed and not self._due:
                return

    def _requeue(self, batch: Iterable[tuple[Any, list[Document]]], due: set[Any] = set()) -> None:  # noqa: B006
        """Give entries that were not published back to the prompt path."""
        for doc_id, entries in batch:
            left = [e for e in entries if not self._known(e["id"])]
            if left:
                self._handed.setdefault(doc_id, [])[:0] = left
        self._due |= due

    async def _pause(self) -> None:
        """Wait out an outage (cut short by stop), then try again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), self._outage.next_delay())
        self._wake.set()

    async def _read_back(self, due: set[Any]) -> list[tuple[Any, list[Document]]]:
        """This process's entries of documents a handler named (nothing handed over)."""
        # One find by _id each, not one $in: FerretDB v1 pushes down only {"_id": value}
        # and scans the whole collection for anything else (see svckit/guards.py).
        found = await asyncio.gather(
            *(self._collection.find_one({"_id": i}, {OUTBOX: 1}) for i in due)
        )
        return [
            (doc["_id"], [e for e in doc.get(OUTBOX) or [] if e.get(BY) == self.owner])
            for doc in found
            if doc
        ]

    def _known(self, entry_id: str) -> bool:
        return (
            entry_id in self._inflight
            or entry_id in self._published
            or entry_id in self._removed_ids
        )

    async def _send(self, batch: list[tuple[Any, list[Document]]], *, recovered: bool) -> None:
        """Hand every entry to the producer (in seq order per document) and settle the acks
        in a task of their own, so the next hand-over is sent meanwhile. One the broker refuses
        for good is set aside, never retried, so it cannot hold back the others."""
        sends: list[tuple[Any, Document, asyncio.Future[Any]]] = []
        refused: list[tuple[Any, Document, BaseException]] = []
        busy: set[Any] = set()
        try:
            for doc_id, entries in batch:
                if doc_id in self._busy:
                    if not recovered:  # after the earlier ones settle; a sweep comes again
                        self._requeue([(doc_id, entries)])
                    continue
                for entry in sorted(entries, key=lambda e: e["seq"]):
                    if self._known(entry["id"]):
                        continue  # sent already, or its removal is queued or raced this read
                    headers = [(name, value.encode()) for name, value in entry["headers"].items()]
                    self._inflight.add(entry["id"])
                    # Busy from before the send, which may wait (for the topic's metadata):
                    # meanwhile the other path must not send this document's later entries.
                    busy.add(doc_id)
                    self._busy.add(doc_id)
                    try:
                        future = await self._producer.send(
                            entry["topic"], entry["key"], bytes(entry["value"]), headers
                        )
                    except Exception as exc:
                        self._inflight.discard(entry["id"])
                        if not refused_for_good(exc):
                            raise
                        refused.append((doc_id, entry, exc))
                        continue
                    sends.append((doc_id, entry, future))
        finally:
            settle = None
            if busy:
                settle = asyncio.create_task(
                    self._settle(sends, refused, busy, recovered=recovered)
                )
                self._settling.add(settle)
                settle.add_done_callback(self._settling.discard)
        if recovered and settle is not None:
            await settle

    async def _settle(
        self,
        sends: list[tuple[Any, Document, asyncio.Future[Any]]],
        refused: list[tuple[Any, Document, BaseException]],
        busy: set[Any],
        *,
        recovered: bool,
    ) -> None:
        """Wait for the acknowledgements of `sends`; then their documents (`busy`) take
        entries again, after what failed was handed back first."""
        try:
            await self._settle_sends(sends, refused, recovered=recovered)
        finally:
            self._busy -= busy
            if self._handed:  # what waited for these documents
                self._wake.set()

    async def _settle_sends(
        self,
        sends: list[tuple[Any, Document, asyncio.Future[Any]]],
        refused: list[tuple[Any, Document, BaseException]],
        *,
        recovered: bool,
    ) -> None:
        results = await asyncio.gather(*(f for _, _, f in sends), return_exceptions=True)
        failed: dict[Any, list[Document]] = {}
        for (doc_id, entry, _), result in zip(sends, results, strict=True):
            self._inflight.discard(entry["id"])
            if isinstance(result, BaseException):
                if refused_for_good(result):
                    refused.append((doc_id, entry, result))
                else:
                    failed.setdefault(doc_id, []).append(entry)
                continue
            metrics.EVENTS_PUBLISHED.labels(
                self._service, entry["topic"], entry["headers"].get("ce_type", "")
            ).inc()
            if recovered:
                metrics.OUTBOX_RECOVERED.labels(*self._labels).inc()
            self._published[entry["id"]] = (doc_id, entry)
        if len(failed) < len(sends):
            self._outage.reset()
        # Clearing the entries is a database write per document: done by _remove_loop,
        # behind the publishing, so it never delays the next events.
        self._removals_due.set()
        try:
            await self._set_aside(refused)
        except Exception:  # noqa: BLE001 - still in the outbox: the next attempt parks them
            log.exception("setting refused entries aside in %s failed", self._collection.name)
        if failed:
            log.warning(
                "outbox relay for %s: %d entries not acknowledged; retrying",
                self._collection.name,
                sum(map(len, failed.values())),
            )
            if recovered:
                return  # the next sweep finds them again
            await self._pause()
            self._requeue(failed.items())

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
                        "$set": {PARKED_MARK: True, PENDING: True},
                    },
                )
            )
        await guards.bulk_write(self._collection, moves)

    # ----- the remover ------------------------------------------------------------------

    async def _remove_loop(self) -> None:
        """Pull acknowledged entries off their documents, each document's in one write of its
        own (concurrently: no document waits behind another's)."""
        while True:
            await self._removals_due.wait()
            self._removals_due.clear()
            while self._published:
                by_doc: dict[Any, list[tuple[str, Document]]] = {}
                for entry_id, (doc_id, entry) in list(self._published.items()):
                    by_doc.setdefault(doc_id, []).append((entry_id, entry))
                    if len(by_doc) >= 4 * REMOVE_CONCURRENCY:
                        break
                gate = asyncio.Semaphore(REMOVE_CONCURRENCY)
                results = await asyncio.gather(
                    *(self._remove(gate, d, [e for _, e in es]) for d, es in by_doc.items()),
                    return_exceptions=True,
                )
                failures = [r for r in results if isinstance(r, BaseException)]
                for (_, entries), result in zip(by_doc.items(), results, strict=True):
                    if isinstance(result, BaseException):
                        continue  # stays in _published: tried again
                    for entry_id, _ in entries:
                        self._forget(entry_id)
                if failures:
                    log.error(
                        "outbox removal for %s failed: %s",
                        self._collection.name,
                        failures[0],
                        exc_info=failures[0],
                    )
                    if self._stopping:
                        return  # the entries stay; worst case a re-publish
                    await asyncio.sleep(self._outage.next_delay())
            if self._stopping:
                return

    def _forget(self, entry_id: str) -> None:
        self._published.pop(entry_id, None)
        if len(self._removed) == self._removed.maxlen:
            self._removed_ids.discard(self._removed[0])
        self._removed.append(entry_id)
        self._removed_ids.add(entry_id)

    async def _remove(self, gate: asyncio.Semaphore, doc_id: Any, entries: list[Document]) -> None:
        """Remove `entries` from `doc_id`'s outbox. Where they are the whole outbox and nothing
        is set aside (the usual case), one write empties it and clears the pending mark;
        otherwise each is pulled by
        its whole stored value (FerretDB v1 matches $pull conditions only as exact elements,
        it ignores {"id": ...} and $in) and the sweep clears the mark later. An entry already
        gone was published by another relay too: counted as a duplicate publish."""
        entries = sorted(entries, key=lambda e: e["seq"])
        async with gate:
            cleared = await self._collection.update_one(
                {"_id": doc_id, OUTBOX: entries, PARKED_MARK: {"$exists": False}},
                {"$set": {OUTBOX: []}, "$unset": {PENDING: ""}},
            )
            if cleared.matched_count:
                return
            duplicates = 0
            for entry in entries:
                pulled = await self._collection.update_one(
                    {"_id": doc_id}, {"$pull": {OUTBOX: entry}}
                )
                if pulled.matched_count and not pulled.modified_count:
                    duplicates += 1
            if duplicates:
                metrics.OUTBOX_DUPLICATE_PUBLISHES.labels(*self._labels).inc(duplicates)

    # ----- recovery ---------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        outage = Backoff(OUTAGE_BACKOFF_BASE, OUTAGE_BACKOFF_CAP)
        renew = min(LEASE_RENEW_SECONDS, self._lease_seconds / 4)
        while True:
            try:
                await self.leases.renew()
                outage.reset()
                await asyncio.sleep(renew)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database is away: held leases lapse
                log.warning("outbox leases of %s not renewed; retrying", self._collection.name)
                await asyncio.sleep(outage.next_delay())

    async def _recover_loop(self) -> None:
        sweep_at = 0.0  # at once on start: a crash may have left entries behind
        outage = Backoff(OUTAGE_BACKOFF_BASE, OUTAGE_BACKOFF_CAP)
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), max(0.0, sweep_at - time.monotonic()))
            if self._stopping:
                return
            began = time.monotonic()
            try:
                more = await self._sweep()
                # Where the database cannot use the index (FerretDB v1 scans and decodes the
                # whole collection) the sweep would take the database's time from the RPCs;
                # keep it under a tenth. A full batch may have left more behind: sweep again
                # soon. Never wait longer than SWEEP_MAX_SECONDS: what a killed process left
                # waits for a sweep (seen in the fault suite on a loaded machine: sweeps
                # minutes apart, copies still stale after the check's 180 s).
                spent = time.monotonic() - began
                pause = min(SWEEP_MAX_SECONDS, max(self._sweep_interval, 10 * spent))
                sweep_at = time.monotonic() + (self._sweep_interval if more else pause)
                outage.reset()
            except Exception:  # noqa: BLE001 - broker or database down: retry
                log.exception("outbox recovery for %s failed; retrying", self._collection.name)
                sweep_at = time.monotonic() + outage.next_delay()

    def _orphaned(self, doc_id: Any, entry: Document, now: datetime) -> bool:
        """Should this relay's sweep publish `entry`? Its own once the prompt path had its
        chance; another's in a partition it holds, when that relay is gone or held up."""
        if self._known(entry["id"]):
            return False
        age = _age(entry, now)
        if entry.get(BY) == self.owner:
            if self._holds(doc_id):
                # The prompt path has it (waiting for the broker, or behind the document's
                # earlier entries): sending it here would overtake those.
                return age > STUCK_SECONDS
            # Committed before this relay started, nothing will hand it over.
            return age > OWN_GRACE_SECONDS or age > (now - self._started).total_seconds()
        if not self.leases.holds(doc_id):
            return False
        # A relay not (or no longer) among the members read at the last renewal: gone, or
        # started since; an entry younger than a lease may be one of the latter's.
        gone = entry.get(BY) not in self.leases.live and age > self._lease_seconds
        return gone or age > STUCK_SECONDS

    def _holds(self, doc_id: Any) -> bool:
        """Is the prompt path responsible for `doc_id`'s entries of this process right now
        (handed over lately, named by a handler, or being sent)?"""
        handed = self._handed_ids.get(doc_id)
        return (
            doc_id in self._handed
            or doc_id in self._due
            or doc_id in self._busy
            or (handed is not None and time.monotonic() - handed < STUCK_SECONDS)
        )

    async def _sweep(self) -> bool:
        """One recovery pass; True if it left work for another soon. Also reports the
        backlog gauges for the partitions held (summed over the replicas, each entry once)."""
        now = datetime.now(UTC)
        projection = {
            f"{OUTBOX}.id": 1,
            f"{OUTBOX}.{BY}": 1,
            f"{OUTBOX}.created": 1,
            f"{PARKED}.id": 1,
        }
        drained: list[Any] = []
        load: list[Any] = []
        events = parked = 0
        oldest: datetime | None = None
        async for doc in self._collection.find(pending_filter(), projection):
            entries = doc.get(OUTBOX) or []
            set_aside = len(doc.get(PARKED) or [])
            if self.leases.holds(doc["_id"]):
                parked += set_aside
                events += len(entries)
                oldest = _oldest(entries, oldest)
                if not entries and not set_aside:
                    drained.append(doc["_id"])
            if any(self._orphaned(doc["_id"], e, now) for e in entries):
                load.append(doc["_id"])
        await self._unmark(drained)
        self._report_backlog(events, parked, oldest, now)
        chosen = load[: self._batch_limit]
        if chosen:
            found = await asyncio.gather(
                *(self._collection.find_one({"_id": i}, {OUTBOX: 1}) for i in chosen)
            )
            now = datetime.now(UTC)
            batch = [
                (
                    doc["_id"],
                    [e for e in doc.get(OUTBOX) or [] if self._orphaned(doc["_id"], e, now)],
                )
                for doc in found
                if doc
            ]
            await self._send(batch, recovered=True)
        return len(load) > len(chosen)

    async def _unmark(self, doc_ids: list[Any]) -> None:
        """Clear the mark of documents the sweep found with an empty outbox and nothing set
        aside; one that queued or set aside an entry since keeps it (the guards fail)."""
        if not doc_ids:
            return
        unmark = [
            UpdateOne(
                {"_id": doc_id, OUTBOX: {"$size": 0}, PARKED_MARK: {"$exists": False}},
                {"$unset": {PENDING: ""}},
            )
            for doc_id in doc_ids
        ]
        await guards.bulk_write(self._collection, unmark)

    def _report_backlog(
        self, events: int, parked: int, oldest: datetime | None, now: datetime
    ) -> None:
        metrics.OUTBOX_PENDING.labels(*self._labels).set(events)
        age = (now - oldest).total_seconds() if oldest else 0.0
        metrics.OUTBOX_OLDEST_AGE.labels(*self._labels).set(max(0.0, age))
        metrics.OUTBOX_PARKED.labels(*self._labels).set(parked)
