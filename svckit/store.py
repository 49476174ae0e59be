"""Conditional single-document writes that carry their outbox entries.

Every state change in every service goes through `insert` or `update`: the
new state, the version guard and the events to publish are one MongoDB write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from svckit import outbox, paging
from svckit.documents import from_document, to_document
from svckit.errors import AlreadyExists, Unavailable
from svckit.outbox import OUTBOX, PARKED, PENDING, queue

M = TypeVar("M", bound=Message)
T = TypeVar("T")
Document = dict[str, Any]
log = logging.getLogger(__name__)

PAGE_READ_BATCH = 20
"""Documents a page reads per round trip: pymongo's first batch is otherwise 101 documents,
~100 MB of large orders decoded before the page's byte budget could stop it."""
MAX_PENDING_EVENTS = 50
"""Events one document may hold unpublished. Past it (Kafka away, or acknowledging nothing),
writes that would queue more fail fast with UNAVAILABLE, never with an oversized document:
at the largest customer a few hundred events would reach MongoDB's 16 MB limit, and the relay's
sweep reads whole outboxes. 50 covers any burst a client makes while the broker blinks."""


async def _through_cancellation(write: Coroutine[Any, Any, T]) -> T:
    """Run a write and its hand-over to the relay to the end even if the caller is cancelled
    (its client went away, its deadline passed): the database may apply a write whose reply
    the caller no longer waits for, and its events, never handed over, would wait for the
    recovery sweep (seconds). The caller still sees the cancellation at once."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_unawaited_failure)
        raise


def _unawaited_failure(task: asyncio.Future[Any]) -> None:
    """What a write whose caller was cancelled failed with: nobody else will see it."""
    if not task.cancelled() and task.exception() is not None:
        log.info("a write its caller stopped waiting for failed: %r", task.exception())


def _room_for_more() -> Document:
    """The guard "fewer than MAX_PENDING_EVENTS entries": the last allowed index is unused."""
    return {f"{OUTBOX}.{MAX_PENDING_EVENTS - 1}": {"$exists": False}}


class Store(Protocol[M]):
    """The store a service's use cases write through: `AggregateStore` in the services, an
    in-memory fake in the handlers' unit tests (tests/unit/fakes.py)."""

    async def get(self, aggregate_id: str) -> M | None: ...

    async def insert(self, aggregate: M, events: Iterable[Document]) -> None:
        """Raises AlreadyExists for a taken id."""

    async def update(self, aggregate: M, expected_version: int, events: Iterable[Document]) -> bool:
        """False: the stored version is no longer `expected_version` (another writer came first).
        Raises Unavailable when the outbox is full."""

    async def republish(
        self, aggregate_id: str, expected_version: int, events: list[Document]
    ) -> bool: ...


class AggregateStore(Generic[M]):
    def __init__(self, collection: AsyncCollection[Document], cls: type[M], id_field: str) -> None:
        self.collection = collection
        self._cls = cls
        self._id_field = id_field
        self._fields = [f.name for f in cls.DESCRIPTOR.fields if f.name != id_field]

    def load(self, doc: Document) -> M:
        return from_document(doc, self._cls, id_field=self._id_field)

    async def get(self, aggregate_id: str, *, extra_filter: Document | None = None) -> M | None:
        doc = await self.collection.find_one(
            {"_id": aggregate_id, **(extra_filter or {})}, {OUTBOX: 0}
        )
        return self.load(doc) if doc else None

    async def page(
        self, query: Document, *, after: str | None, limit: int
    ) -> tuple[list[M], str | None]:
        """One keyset page in id order, bounded in count and bytes (svckit.paging), and the id
        to continue after (None at the end). Documents are read a few at a time, so a page of
        large ones never holds more than a batch beyond what it sends."""
        if after is not None:
            query = {**query, "_id": {"$gt": after}}
        projection = {OUTBOX: 0, PARKED: 0}
        cursor = self.collection.find(query, projection).sort("_id", 1).limit(limit + 1)
        cursor = cursor.batch_size(min(limit + 1, PAGE_READ_BATCH))
        budget = paging.PageBudget(limit)
        found: list[M] = []
        last: str | None = None
        more = False
        try:
            async for doc in cursor:
                item = self.load(doc)
                if not budget.take(item):
                    more = True
                    break
                found.append(item)
                last = doc["_id"]
        finally:
            await cursor.close()
        return found, (last if more else None)

    async def document(self, aggregate: M) -> Document:
        """The stored form of `aggregate`; a repository that seals fields at rest overrides it."""
        return to_document(aggregate, id_field=self._id_field)

    async def insert(
        self, aggregate: M, events: Iterable[Document], *, extra: Document | None = None
    ) -> None:
        doc = {**await self.document(aggregate), **(extra or {})}
        doc[OUTBOX] = list(events)
        if doc[OUTBOX]:
            doc[PENDING] = True

        async def write() -> None:
            await self.collection.insert_one(doc)
            outbox.committed(self.collection, doc["_id"], doc[OUTBOX])  # the relay sends them

        try:
            await _through_cancellation(write())
        except DuplicateKeyError as exc:
            raise AlreadyExists(f"{self._id_field} {doc['_id']} already exists") from exc

    async def update(
        self,
        aggregate: M,
        expected_version: int,
        events: Iterable[Document],
        *,
        extra: Document | None = None,
    ) -> bool:
        """Write the new state if the stored version is still `expected_version`."""
        doc = {**await self.document(aggregate), **(extra or {})}
        return await self.write_fields(doc, expected_version, events)

    async def write_fields(
        self,
        doc: Document,
        expected_version: int,
        events: Iterable[Document],
        *,
        kept: Iterable[str] = (),
    ) -> bool:
        """Write a stored form of the aggregate (its `_id` and fields) if the stored version is
        still `expected_version`: the aggregate's fields it lacks are removed, but those in
        `kept`, which stay as stored (a repository that need not write them again)."""
        doc = dict(doc)
        aggregate_id = doc.pop("_id")
        events = list(events)
        update: Document = queue(events) if events else {"$set": {}}
        update["$set"].update(doc)
        left = set(kept)
        removed = {name: "" for name in self._fields if name not in doc and name not in left}
        if removed:
            update["$unset"] = removed
        return await self._guarded(aggregate_id, expected_version, update, queues=bool(events))

    async def _guarded(
        self, aggregate_id: str, expected_version: int, update: Document, *, queues: bool
    ) -> bool:
        """The version-guarded write; one that queues events also needs room in the outbox.
        False: the version moved (a concurrent writer). Raises Unavailable: no room."""
        condition: Document = {"version": expected_version}
        if queues:
            condition.update(_room_for_more())

        async def write() -> bool:
            result = await self.collection.update_one({"_id": aggregate_id, **condition}, update)
            if result.matched_count == 1 and queues:  # the relay sends them, not reading back
                outbox.committed(self.collection, aggregate_id, update["$push"][OUTBOX]["$each"])
            return result.matched_count == 1

        if await _through_cancellation(write()):
            return True
        if not queues:
            return False
        doc = await self.collection.find_one({"_id": aggregate_id}, {"version": 1, OUTBOX: 1})
        if doc is not None and doc.get("version") == expected_version:
            pending = len(doc.get(OUTBOX) or [])
            raise Unavailable(
                f"{self._id_field} {aggregate_id} has {pending} events waiting to be published "
                "(the event broker is unreachable or slow); retry later"
            )
        return False

    async def republish(
        self, aggregate_id: str, expected_version: int, events: list[Document]
    ) -> bool:
        """Queue events for an unchanged aggregate (repairs): outbox only, version kept."""
        return await self._guarded(aggregate_id, expected_version, queue(events), queues=True)
