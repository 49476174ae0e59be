"""Orders' MongoDB (`orders`): orders in `customer.orders` (with their outbox),
customers' copies in `customers` and the catalog's in `products`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

import topology
from orders_svc import domain
from storefront.orders.v1 import orders_pb2
from svckit import doclocks, guards, statuses
from svckit.consumer import Outcome
from svckit.documents import dict_to_message, message_to_dict
from svckit.outbox import OUTBOX
from svckit.store import AggregateStore

Order = orders_pb2.Order
CustomerCopy = orders_pb2.CustomerOrders
ProductCopy = domain.ProductCopy
Document = dict[str, Any]

# Fulfillment versions already in an order's history: the dedup key for OrderStatusChanged.
APPLIED = "applied_fulfillment_versions"
CopyChange = tuple[str, int, CustomerCopy | None]
"""A customer event for the copies: customer id, version, the new copy (None: deleted)."""


class OrderRepository(AggregateStore[Order]):
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db[topology.ORDER_DOCUMENTS], Order, "order_id")

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("customer_id", ASCENDING), ("_id", ASCENDING)])
        await self.collection.create_index([("status", ASCENDING), ("_id", ASCENDING)])

    async def get_with_applied(self, order_id: str) -> tuple[Order, list[int]] | None:
        doc = await self.collection.find_one({"_id": order_id}, {OUTBOX: 0})
        return (self.load(doc), list(doc.get(APPLIED, []))) if doc else None

    async def save_applied(
        self, order: Order, expected_version: int, applied: list[int], events: list[Document]
    ) -> bool:
        return await self.update(order, expected_version, events, extra={APPLIED: applied})

    async def strip_fulfillment_history(
        self, now: Any, facts: Callable[[Order], list[Document]]
    ) -> int:
        """Remove what fulfillment's events added to every order, before a rebuild; each
        order so changed queues the events `facts` gives for it."""
        stripped = 0
        async for doc in self.collection.find({APPLIED: {"$exists": True}}, {OUTBOX: 0}):
            while True:
                found = await self.get_with_applied(doc["_id"])
                if found is None or not found[1]:
                    break
                order = found[0]
                stripped_order = domain.without_fulfillment_history(order, now)
                if await self.save_applied(
                    stripped_order, order.version, [], facts(stripped_order)
                ):
                    stripped += 1
                    break
        return stripped

    async def count_open(self, customer_id: str) -> int:
        open_names = [statuses.status_name(s) for s in domain.OPEN]
        return await self.collection.count_documents(
            {"customer_id": customer_id, "status": {"$in": open_names}}
        )


class VersionedCopies:
    """A copy of another service's aggregates, one document each, only ever moved forward by
    the owner's version (duplicates and late arrivals change nothing)."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self._locks = doclocks.for_collection(self.collection)

    async def _upsert_if_newer(self, copy_id: str, version: int, update: Document) -> Outcome:
        async with self._locks.hold(copy_id):
            return await self._upsert_if_newer_locked(copy_id, version, update)

    async def _upsert_if_newer_locked(
        self, copy_id: str, version: int, update: Document
    ) -> Outcome:
        try:
            await guards.update_one_if(
                self.collection, copy_id, {"version": {"$lt": version}}, update, upsert=True
            )
            return Outcome.APPLIED
        except DuplicateKeyError:
            # The copy exists at this version or a newer one: the upsert's insert collided.
            stored = await self.collection.find_one({"_id": copy_id}, {"version": 1})
            held = stored["version"] if stored else 0
            if held != version:
                return Outcome.STALE
            # Same version: normally an identical redelivery. If the copy was damaged, the
            # owner's republished state (storefront check --repair) overwrites it.
            same = {"_id": copy_id, "version": version}
            result = await self.collection.update_one(same, update)
            return Outcome.APPLIED if result.modified_count else Outcome.DUPLICATE

    async def clear(self) -> int:
        """Forget every copy, before a rebuild from the owner's topic."""
        return (await self.collection.delete_many({})).deleted_count


class ProductCopies(VersionedCopies):
    """Orders' copy of the catalog, from catalog.product.change: what orders are priced from."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db[topology.PRODUCT_COPIES])

    async def get_many(self, product_ids: list[str]) -> dict[str, ProductCopy]:
        """The copies of these products that orders holds, by id."""
        found = await guards.find_by_ids(self.collection, product_ids) if product_ids else []
        return {d["_id"]: self.load(d) for d in found}

    @staticmethod
    def load(doc: Document) -> ProductCopy:
        copy = dict_to_message({k: v for k, v in doc.items() if k in COPIED}, ProductCopy())
        copy.product_id = doc["_id"]
        return copy

    async def apply_changed(self, copy: ProductCopy) -> Outcome:
        fields = message_to_dict(copy)
        data = {k: fields.get(k) for k in COPIED if k in fields}
        update: Document = {"$set": {**data, "version": copy.version}}
        missing = {k: "" for k in COPIED if k not in data and k != "version"}
        if missing:
            update["$unset"] = missing
        return await self._upsert_if_newer(copy.product_id, copy.version, update)


COPIED = ("title", "description", "price", "state", "version")
"""The fields of a product orders keeps (its id is the document's)."""


class CustomerCopies(VersionedCopies):
    """Orders' copy of each customer, only ever moved forward by version."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db[topology.CUSTOMER_COPIES])

    async def get(self, customer_id: str) -> CustomerCopy | None:
        doc = await guards.find_by_id(self.collection, customer_id, {"deleted": {"$ne": True}})
        if doc is None:
            return None
        data: dict[str, Any] = {k: doc[k] for k in ("name", "contact", "addresses") if k in doc}
        copy = dict_to_message(data, CustomerCopy())
        copy.customer_id = doc["_id"]
        copy.customer_version = doc["version"]
        return copy

    @staticmethod
    def changed_update(copy: CustomerCopy) -> Document:
        fields = message_to_dict(copy)
        data = {k: fields[k] for k in ("name", "contact", "addresses") if k in fields}
        update: Document = {"$set": {**data, "version": copy.customer_version, "deleted": False}}
        missing = {k: "" for k in ("name", "contact", "addresses") if k not in data}
        if missing:
            update["$unset"] = missing
        return update

    @staticmethod
    def deleted_update(version: int) -> Document:
        return {
            "$set": {"version": version, "deleted": True},
            "$unset": {"name": "", "contact": "", "addresses": ""},
        }

    async def apply_changed(self, copy: CustomerCopy) -> Outcome:
        update = self.changed_update(copy)
        return await self._upsert_if_newer(copy.customer_id, copy.customer_version, update)

    async def apply_deleted(self, customer_id: str, version: int) -> Outcome:
        return await self._upsert_if_newer(customer_id, version, self.deleted_update(version))

    async def apply_batch(self, batch: list[CopyChange]) -> list[Outcome]:
        """Apply (customer id, version, copy or None for a deletion) changes in order, with the
        outcomes applying them one by one would give, in one read of the stored versions and
        one bulk write: per customer only the newest version in the batch is written. A change
        at exactly the stored version takes the one-by-one path (it may be a repair)."""
        changes = [
            (cid, v, self.deleted_update(v) if copy is None else self.changed_update(copy))
            for cid, v, copy in batch
        ]
        ids = list(dict.fromkeys(cid for cid, _, _ in changes))
        outcomes: list[Outcome | None] = []
        redo: list[int] = []
        async with self._locks.hold(*ids):
            stored = await self._versions(ids)
            held = dict(stored)
            newest: dict[str, tuple[int, Document]] = {}
            for i, (cid, version, update) in enumerate(changes):
                have = held.get(cid, 0)
                if version > have:
                    held[cid] = version
                    newest[cid] = (version, update)
                    outcomes.append(Outcome.APPLIED)
                elif version == have and cid not in newest:
                    outcomes.append(None)
                    redo.append(i)
                else:
                    outcomes.append(Outcome.DUPLICATE if version == have else Outcome.STALE)
            lost = await self._bulk_upsert(newest)
        for i, (cid, _, _) in enumerate(changes):
            if cid in lost and outcomes[i] is Outcome.APPLIED:
                outcomes[i] = Outcome.STALE  # another writer stored a newer version meanwhile
        for i in redo:
            outcomes[i] = await self._upsert_if_newer(*changes[i])
        return [o or Outcome.DUPLICATE for o in outcomes]

    async def _versions(self, ids: list[str]) -> dict[str, int]:
        found = await guards.find_by_ids(self.collection, ids, {"version": 1})
        return {d["_id"]: int(d.get("version", 0)) for d in found}

    async def _bulk_upsert(self, newest: dict[str, tuple[int, Document]]) -> set[str]:
        """Write each newest change, guarded by version; the ids whose guard failed."""
        if not newest:
            return set()
        keys = list(newest)
        ops = [
            UpdateOne({"_id": cid, "version": {"$lt": newest[cid][0]}}, newest[cid][1], upsert=True)
            for cid in keys
        ]
        try:
            await guards.bulk_write(self.collection, ops)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            return {keys[e["index"]] for e in errors}
        return set()
