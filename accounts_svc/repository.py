"""Customers in MongoDB (`accounts` / `customer.accounts`), with their outbox."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from storefront.accounts.v1 import accounts_pb2
from svckit.outbox import OUTBOX
from svckit.store import AggregateStore

Customer = accounts_pb2.Customer
COLLECTION = "customer.accounts"
# Deleted customers stay as tombstones: their CustomerDeleted is still in the
# outbox, and a late retry of a create with the same id must not resurrect them.
LIVE = {"deleted": {"$ne": True}}


class CustomerRepository(AggregateStore[Customer]):
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        super().__init__(db[COLLECTION], Customer, "id")

    async def get_live(self, customer_id: str) -> Customer | None:
        return await self.get(customer_id, extra_filter=LIVE)

    async def get_any(self, customer_id: str) -> tuple[Customer, bool] | None:
        """The customer, live or a tombstone, and whether it is deleted."""
        doc = await self.collection.find_one({"_id": customer_id}, {OUTBOX: 0})
        return None if doc is None else (self.load(doc), bool(doc.get("deleted")))

    async def page_live(self, after: str | None, limit: int) -> tuple[list[Customer], str | None]:
        return await self.page(dict(LIVE), after=after, limit=limit)

    async def tombstone(
        self, customer: Customer, expected_version: int, events: list[dict[str, Any]]
    ) -> bool:
        """Keep only id and version, mark deleted and queue CustomerDeleted, in one write."""
        gone = Customer(id=customer.id, version=expected_version + 1)
        return await self.update(gone, expected_version, events, extra={"deleted": True})
