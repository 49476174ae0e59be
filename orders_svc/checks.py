"""The copies orders keeps of others' data, and how `storefront check` tells each has drifted
from its source: customers (accounts), products (catalog), and the shipping statuses
fulfillment published, applied to the orders. Each finding names the owner whose
republishing repairs it."""

from __future__ import annotations

from collections.abc import Iterator

import topology
from svckit.checks import Comparison, Divergence, Side, Summary, versioned_copy

customers = versioned_copy("customer", topology.ACCOUNTS)
"""Deleted customers are copied as tombstones."""
products = versioned_copy("product", topology.CATALOG)
"""Orders are priced from this copy; catalog never deletes a product (it discontinues it)."""


def statuses(oid: str, source: Summary | None, order: Summary | None) -> Iterator[Divergence]:
    """Every status change fulfillment published is applied to the order (a fulfillment
    without its order is fulfillment's rule to report)."""
    if source is None or order is None:
        return
    applied = set(order.facts.get("applied", ()))
    for version, status in source.facts.get("published", ()):
        if int(version) not in applied:
            yield Divergence(
                "status change missing in order",
                oid,
                f"{status} (v{int(version)})",
                topology.FULFILLMENT,
            )


COMPARISONS = (
    Comparison(
        Side(topology.ACCOUNTS, topology.CUSTOMERS),
        Side(topology.ORDERS, topology.CUSTOMER_COPIES),
        customers,
    ),
    Comparison(
        Side(topology.CATALOG, topology.PRODUCTS),
        Side(topology.ORDERS, topology.PRODUCT_COPIES),
        products,
    ),
    Comparison(
        Side(topology.FULFILLMENT, topology.FULFILLMENTS),
        Side(topology.ORDERS, topology.ORDER_DOCUMENTS),
        statuses,
    ),
)
