"""What catalog answers for (`storefront check`): its products, as their copies see them."""

from __future__ import annotations

from typing import Any

import topology
from catalog_svc.repository import ProductRepository
from svckit.admin import Summarized
from svckit.checks import Summary, message_digest

PUBLISHED = ("title", "description", "price", "state")
"""The content ProductChanged carries to the copies."""


def summaries(products: ProductRepository) -> dict[str, Summarized]:
    def summarize(doc: dict[str, Any]) -> Summary:
        product = products.load(doc)
        return Summary(product.id, product.version, message_digest(product, PUBLISHED))

    return {topology.PRODUCTS: Summarized(products.collection, summarize)}
