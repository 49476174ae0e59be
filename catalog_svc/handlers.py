"""Catalog use cases: one function each, reading like the use case."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import field_mask_pb2

import topology
from catalog_svc import domain
from catalog_svc.domain import Product
from svckit import names
from svckit.admin import Republished, Verdict, republish_each
from svckit.errors import NotFound
from svckit.ids import new_id
from svckit.outbox import Notifier, outbox_entry
from svckit.saving import Change, Lost, change, saved
from svckit.shape import Page
from svckit.store import Store

TOPIC = topology.PRODUCT_CHANGES
SOURCE = names.source(topology.CATALOG)


class Products(Store[Product], Protocol):
    """Catalog's store of products (`ProductRepository`; a fake in unit tests)."""

    async def page(
        self, query: dict[str, Any], *, after: str | None, limit: int
    ) -> tuple[list[Product], str | None]: ...


class CatalogHandlers:
    def __init__(
        self,
        products: Products,
        relay: Notifier,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.products = products
        self.relay = relay
        self.clock = clock

    def _changed(self, product: Product) -> dict[str, Any]:
        event = domain.product_changed(product)
        return outbox_entry(TOPIC, product.id, event, source=SOURCE, seq=product.version)

    async def create_product(self, draft: Product, product_id: str = "") -> Product:
        product = domain.new_product(draft, product_id or new_id(), self.clock())
        await self.products.insert(product, [self._changed(product)])
        self.relay.notify(product.id)
        return product

    async def get_product(self, product_id: str) -> Product:
        product = await self.products.get(product_id)
        if product is None:
            raise NotFound(f"product {product_id!r} not found")
        return product

    async def list_products(self, page: Page) -> tuple[list[Product], str | None]:
        """One page of products and the id the next one starts after (None: the end)."""
        return await self.products.page({}, after=page.after, limit=page.limit)

    async def update_product(self, patch: Product, mask: field_mask_pb2.FieldMask) -> Product:
        def decide(current: Product) -> Change:
            product = domain.updated_product(current, patch, mask, self.clock())
            return Change(product, [self._changed(product)])

        product = await change(
            self.products,
            lambda: self.get_product(patch.id),
            decide,
            what=f"product {patch.id}",
            retry=not patch.etag,
        )
        self.relay.notify(product.id)
        return product

    async def discontinue_product(self, product_id: str, etag: str = "") -> Product:
        def decide(current: Product) -> Change | None:
            product = domain.discontinued(current, etag, self.clock())
            return None if product is None else Change(product, [self._changed(product)])

        product = await change(
            self.products,
            lambda: self.get_product(product_id),
            decide,
            what=f"product {product_id}",
            retry=not etag,
        )
        self.relay.notify(product_id)
        return product

    # --- Operator use cases (svckit.admin) ---------------------------------------------

    async def republish(self, ids: Sequence[str]) -> Republished:
        """Repairs: queue each product's current state again."""
        return await republish_each(ids, self._republish, self.relay.notify)

    async def _republish(self, product_id: str) -> Verdict | Lost:
        product = await self.products.get(product_id)
        if product is None:
            return Verdict.NOT_FOUND
        entries = [self._changed(product)]
        return saved(
            await self.products.republish(product_id, product.version, entries), Verdict.QUEUED
        )
