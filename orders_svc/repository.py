"""Orders' MongoDB (`orders`): orders in `customer.orders` (with their outbox)
and customers' copies in `customers`."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from storefront.orders.v1 import orders_pb2
from svckit.consumer import Outcome
from svckit.outbox import OUTBOX
from svckit.store import AggregateStore

Order = orders_pb2.Order
CustomerCopy = orders_pb2.CustomerOrders
Document = dict[str, Any]

# Fulfillment versions already in an order's history: the dedup key for OrderStatusChanged.
APPLIED = "applied_fulfillment_versions"


class OrderRepository(AggregateStore[Order]):
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db["customer.orders"], Order, "order_id")

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("customer_id", ASCENDING), ("_id", ASCENDING)])
        await self.collection.create_index([("status", ASCENDING), ("_id", ASCENDING)])

    async def get_with_applied(self, order_id: str) -> tuple[Order, list[int]] | None:
        doc = await self.collection.find_one({"_id": order_id}, {OUTBOX: 0})
        return (self.load(doc), list(doc.get(APPLIED, []))) if doc else None

    async def save_applied(self, order: Order, expected_version: int, applied: list[int]) -> bool:
        return await self.update(order, expected_version, [], extra={APPLIED: applied})

    async def of_customer(self, customer_id: str, limit: int) -> list[Order]:
        orders, _ = await self.page({"customer_id": customer_id}, after=None, limit=limit)
        return orders


class CustomerCopies:
    """Orders' copy of each customer, only ever moved forward by version."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db["customers"]

    async def get(self, customer_id: str) -> CustomerCopy | None:
        doc = await self.collection.find_one({"_id": customer_id, "deleted": {"$ne": True}})
        if doc is None:
            return None
        data = {k: doc[k] for k in ("name", "contact", "addresses") if k in doc}
        copy = json_format.ParseDict(data, CustomerCopy(), ignore_unknown_fields=True)
        copy.customer_id = doc["_id"]
        copy.customer_version = doc["version"]
        return copy

    async def _upsert_if_newer(self, customer_id: str, version: int, update: Document) -> Outcome:
        try:
            await self.collection.update_one(
                {"_id": customer_id, "version": {"$lt": version}}, update, upsert=True
            )
            return Outcome.APPLIED
        except DuplicateKeyError:
            # The copy exists at this version or a newer one: the upsert's insert collided.
            stored = await self.collection.find_one({"_id": customer_id}, {"version": 1})
            held = stored["version"] if stored else 0
            return Outcome.DUPLICATE if held == version else Outcome.STALE

    async def apply_changed(self, copy: CustomerCopy) -> Outcome:
        fields = json_format.MessageToDict(copy, preserving_proto_field_name=True)
        data = {k: fields[k] for k in ("name", "contact", "addresses") if k in fields}
        update: Document = {"$set": {**data, "version": copy.customer_version, "deleted": False}}
        missing = {k: "" for k in ("name", "contact", "addresses") if k not in data}
        if missing:
            update["$unset"] = missing
        return await self._upsert_if_newer(copy.customer_id, copy.customer_version, update)

    async def apply_deleted(self, customer_id: str, version: int) -> Outcome:
        update = {
            "$set": {"version": version, "deleted": True},
            "$unset": {"name": "", "contact": "", "addresses": ""},
        }
        return await self._upsert_if_newer(customer_id, version, update)

    async def all_ids(self) -> list[str]:
        return [d["_id"] async for d in self.collection.find({}, {"_id": 1})]
