"""Conditional single-document writes that carry their outbox entries.

Every state change in every service goes through `insert` or `update`: the
new state, the version guard and the events to publish are one MongoDB write.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from svckit import doclocks, guards, outbox, paging
from svckit.documents import from_document, to_document
from svckit.errors import Aborted, AlreadyExists, Unavailable
from svckit.outbox import OUTBOX, PARKED, PENDING, queue

M = TypeVar("M", bound=Message)
Document = dict[str, Any]

MAX_PENDING_EVENTS = 50
PAGE_READ_BATCH = 20
"""Documents a page reads per round trip: pymongo's first batch is otherwise 101 documents,
~100 MB of large orders decoded before the page's byte budget could stop it."""
"""Events one document may hold unpublished. Past it (Kafka away, or acknowledging nothing),
writes that would queue more fail fast with UNAVAILABLE, never with an oversized document:
at the largest customer a few hundred events would reach MongoDB's 16 MB limit, and the relay's
sweep reads whole outboxes. 50 covers any burst a client makes while the broker blinks."""


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

    def exclusive(self, aggregate_id: str) -> AbstractAsyncContextManager[None]: ...


class AggregateStore(Generic[M]):
    def __init__(self, collection: AsyncCollection[Document], cls: type[M], id_field: str) -> None:
        self.collection = collection
        self._cls = cls
        self._id_field = id_field
        self._fields = [f.name for f in cls.DESCRIPTOR.fields if f.name != id_field]
        self._locks = doclocks.for_collection(collection)

    def load(self, doc: Document) -> M:
        return from_document(doc, self._cls, id_field=self._id_field)

    async def get(self, aggregate_id: str, *, extra_filter: Document | None = None) -> M | None:
        doc = await guards.find_by_id(self.collection, aggregate_id, extra_filter, {OUTBOX: 0})
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
        try:
            async with self._locks.hold(doc["_id"]):
                await self.collection.insert_one(doc)
        except DuplicateKeyError as exc:
            raise AlreadyExists(f"{self._id_field} {doc['_id']} already exists") from exc
        outbox.committed(self.collection, doc["_id"], doc[OUTBOX])  # the relay publishes them

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
        aggregate_id = doc.pop("_id")
        events = list(events)
        update: Document = queue(events) if events else {"$set": {}}
        update["$set"].update(doc)
        removed = {name: "" for name in self._fields if name not in doc}
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
        async with self._locks.hold(aggregate_id):
            if await guards.update_one_if(self.collection, aggregate_id, condition, update):
                if queues:  # the relay publishes them without reading them back
                    outbox.committed(
                        self.collection, aggregate_id, update["$push"][OUTBOX]["$each"]
                    )
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

    def exclusive(self, aggregate_id: str) -> AbstractAsyncContextManager[None]:
        """This process's lock on one aggregate, for a whole read-decide-write: writers in the
        process then never race each other (other processes are still caught by the version
        guard). The store's own writes inside it take the lock again without waiting."""
        return self._locks.hold(aggregate_id)

    async def republish(
        self, aggregate_id: str, expected_version: int, events: list[Document]
    ) -> bool:
        """Queue events for an unchanged aggregate (repairs): outbox only, version kept."""
        return await self._guarded(aggregate_id, expected_version, queue(events), queues=True)


T = TypeVar("T")
SAVE_BUDGET_SECONDS = 10.0
"""How long a request without an etag keeps re-deciding before it gives up (ABORTED):
far beyond any real contention; the caller's deadline ends it sooner."""


async def until_saved(
    attempt: Callable[[], Awaitable[T | None]], *, what: str, retry: bool = True
) -> T:
    """Run a read-decide-write use case until its version-guarded write lands.

    ``attempt`` reads the aggregate, applies the rule and writes with the version it read;
    it returns the result, or None when another writer got there first. A request without an
    etag asks for no concurrency check (AIP-154), so it is re-read and re-decided on the new
    state (a rule may now refuse it, e.g. cancelling what was just shipped); only a request
    that carries an etag (``retry=False``) is answered ABORTED.
    """
    give_up = time.monotonic() + SAVE_BUDGET_SECONDS
    n = 0
    while True:
        result = await attempt()
        if result is not None:
            return result
        if not retry or time.monotonic() > give_up:
            raise Aborted(f"{what} changed concurrently; re-read and retry")
        # Jittered, so racing writers fall out of step and one of them wins each round.
        await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * 2**n)))
        n += 1
