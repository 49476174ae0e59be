"""Fulfillments in MongoDB (`fulfillment` / `fulfillment.requests`), with their outbox."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

import topology
from fulfillment_svc.domain import Fulfillment, Status, status_name
from svckit.store import AggregateStore


class FulfillmentRepository(AggregateStore[Fulfillment]):
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        super().__init__(db[topology.FULFILLMENTS], Fulfillment, "order_id")

    async def ensure_indexes(self) -> None:
        """Listing by status walks this index in id order, the same order keyset pages use."""
        await self.collection.create_index([("status", 1), ("_id", 1)], name="status_id")

    async def page_by_status(
        self, status: Status | None, after: str | None, limit: int
    ) -> tuple[list[Fulfillment], str | None]:
        """Documents store enum names, so the filter does too."""
        query = {"status": status_name(status)} if status else {}
        return await self.page(query, after=after, limit=limit)
