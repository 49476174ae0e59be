"""Conditional single-document writes that carry their outbox entries.

Every state change in every service goes through `insert` or `update`: the
new state, the version guard and the events to publish are one MongoDB write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from svckit import doclocks, guards
from svckit.documents import from_document, to_document
from svckit.errors import AlreadyExists
from svckit.outbox import OUTBOX, PENDING, queue

M = TypeVar("M", bound=Message)
Document = dict[str, Any]


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
        """One keyset page in id order, and the id to continue after (None at the end)."""
        if after is not None:
            query = {**query, "_id": {"$gt": after}}
        cursor = self.collection.find(query, {OUTBOX: 0}).sort("_id", 1).limit(limit + 1)
        docs = [doc async for doc in cursor]
        more = len(docs) > limit
        docs = docs[:limit]
        return [self.load(d) for d in docs], (docs[-1]["_id"] if more else None)

    async def insert(
        self, aggregate: M, events: Iterable[Document], *, extra: Document | None = None
    ) -> None:
        doc = {**to_document(aggregate, id_field=self._id_field), **(extra or {})}
        doc[OUTBOX] = list(events)
        if doc[OUTBOX]:
            doc[PENDING] = True
        try:
            async with self._locks.hold(doc["_id"]):
                await self.collection.insert_one(doc)
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
        doc = {**to_document(aggregate, id_field=self._id_field), **(extra or {})}
        aggregate_id = doc.pop("_id")
        events = list(events)
        update: Document = queue(events) if events else {"$set": {}}
        update["$set"].update(doc)
        removed = {name: "" for name in self._fields if name not in doc}
        if removed:
            update["$unset"] = removed
        async with self._locks.hold(aggregate_id):
            return await guards.update_one_if(
                self.collection, aggregate_id, {"version": expected_version}, update
            )

    async def republish(
        self, aggregate_id: str, expected_version: int, events: list[Document]
    ) -> bool:
        """Queue events for an unchanged aggregate (repairs): outbox only, version kept."""
        async with self._locks.hold(aggregate_id):
            return await guards.update_one_if(
                self.collection,
                aggregate_id,
                {"version": expected_version},
                queue(events),
            )
