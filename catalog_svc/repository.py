"""Products in MongoDB (`catalog` / `catalog.products`), with their outbox."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

import topology
from catalog_svc.domain import Product
from svckit.store import AggregateStore


class ProductRepository(AggregateStore[Product]):
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        super().__init__(db[topology.PRODUCTS], Product, "id")
