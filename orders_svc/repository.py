"""Orders' MongoDB (`orders`): orders in `customer.orders` (with their outbox),
customers' copies in `customers` and the catalog's in `products`."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

import topology
from orders_svc import domain
from orders_svc.domain import HeldCopy
from storefront.orders.v1 import orders_pb2
from svckit import guards, statuses
from svckit.documents import dict_to_message, message_to_dict
from svckit.outbox import OUTBOX
from svckit.store import AggregateStore

Order = orders_pb2.Order
CustomerCopy = orders_pb2.CustomerOrders
ProductCopy = domain.ProductCopy
Document = dict[str, Any]

# Fulfillment versions already in an order's history: the dedup key for OrderStatusChanged.
APPLIED = "applied_fulfillment_versions"
C = TypeVar("C", CustomerCopy, ProductCopy)


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

    async def ids_with_applied(self) -> list[str]:
        """The orders that may hold some of fulfillment's status changes."""
        cursor = self.collection.find({APPLIED: {"$exists": True}}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def count_open(self, customer_id: str) -> int:
        open_names = [statuses.status_name(s) for s in domain.OPEN]
        return await self.collection.count_documents(
            {"customer_id": customer_id, "status": {"$in": open_names}}
        )


class VersionedCopies(Generic[C]):
    """A copy of another service's aggregates, one document each. What an event does to it is
    the domain's decision (`domain.copy_outcomes`); this only reads what is held and writes
    what was decided, guarded so that a copy never moves back: a write lands only over a
    version not newer than its own (a concurrent writer of a newer one wins)."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    def content(self, doc: Document) -> C | None:
        """The copy a stored document holds (None: a tombstone)."""
        raise NotImplementedError

    def update(self, version: int, content: C | None) -> Document:
        """The update that stores `content` at `version`."""
        raise NotImplementedError

    async def held(self, ids: list[str]) -> dict[str, HeldCopy[C]]:
        """The copies held of these ids (absent: none ever held), in one read."""
        found = self.collection.find({"_id": {"$in": ids}}) if ids else None
        if found is None:
            return {}
        return {d["_id"]: self._held(d) async for d in found}

    def _held(self, doc: Document) -> HeldCopy[C]:
        version, content = int(doc.get("version", 0)), self.content(doc)
        update = self.update(version, content)
        intact = all(doc.get(k) == v for k, v in update["$set"].items()) and not any(
            k in doc for k in update.get("$unset", {})
        )
        return HeldCopy(version, content, intact)

    async def put(self, writes: dict[str, HeldCopy[C]], *, newer_only: bool = False) -> set[str]:
        """Write each (version, content) by id, in one bulk write; the ids whose guard failed
        (a newer version is stored, or with `newer_only` the same one: the caller decides
        again)."""
        if not writes:
            return set()
        keys = list(writes)
        guard = "$lt" if newer_only else "$lte"
        ops = [
            UpdateOne(
                {"_id": cid, "version": {guard: writes[cid].version}},
                self.update(writes[cid].version, writes[cid].content),
                upsert=True,
            )
            for cid in keys
        ]
        try:
            await guards.bulk_write(self.collection, ops)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return {keys[e["index"]] for e in errors}
        return set()

    async def clear(self) -> int:
        """Forget every copy, before a rebuild from the owner's topic."""
        return (await self.collection.delete_many({})).deleted_count


DUPLICATE_KEY = 11000
"""The guarded upsert's insert collided with the stored, newer copy."""


class ProductCopies(VersionedCopies[ProductCopy]):
    """Orders' copy of the catalog, from catalog.product.change: what orders are priced from."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db[topology.PRODUCT_COPIES])

    async def get_many(self, product_ids: list[str]) -> dict[str, ProductCopy]:
        """The copies of these products that orders holds, by id."""
        return {
            i: held.content
            for i, held in (await self.held(product_ids)).items()
            if held.content is not None
        }

    def content(self, doc: Document) -> ProductCopy:
        copy = dict_to_message({k: v for k, v in doc.items() if k in COPIED}, ProductCopy())
        copy.product_id = doc["_id"]
        return copy

    def update(self, version: int, content: ProductCopy | None) -> Document:
        assert content is not None  # products are discontinued, never deleted
        fields = message_to_dict(content)
        data = {k: fields.get(k) for k in COPIED if k in fields}
        update: Document = {"$set": {**data, "version": version}}
        missing = {k: "" for k in COPIED if k not in data and k != "version"}
        if missing:
            update["$unset"] = missing
        return update


COPIED = ("title", "description", "price", "state", "version")
"""The fields of a product orders keeps (its id is the document's)."""
CUSTOMER_FIELDS = ("name", "contact", "addresses")
"""The fields of a customer orders keeps (its id is the document's, its version `version`)."""


class CustomerCopies(VersionedCopies[CustomerCopy]):
    """Orders' copy of each customer; a deleted one stays a tombstone (`deleted`)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db[topology.CUSTOMER_COPIES])

    async def get(self, customer_id: str) -> CustomerCopy | None:
        doc = await self.collection.find_one({"_id": customer_id, "deleted": {"$ne": True}})
        return None if doc is None else self.content(doc)

    def content(self, doc: Document) -> CustomerCopy | None:
        if doc.get("deleted"):
            return None
        data: dict[str, Any] = {k: doc[k] for k in CUSTOMER_FIELDS if k in doc}
        copy = dict_to_message(data, CustomerCopy())
        copy.customer_id = doc["_id"]
        copy.customer_version = doc["version"]
        return copy

    def update(self, version: int, content: CustomerCopy | None) -> Document:
        if content is None:
            return {
                "$set": {"version": version, "deleted": True},
                "$unset": dict.fromkeys(CUSTOMER_FIELDS, ""),
            }
        fields = message_to_dict(content)
        data = {k: fields[k] for k in CUSTOMER_FIELDS if k in fields}
        update: Document = {"$set": {**data, "version": version, "deleted": False}}
        missing = {k: "" for k in CUSTOMER_FIELDS if k not in data}
        if missing:
            update["$unset"] = missing
        return update
