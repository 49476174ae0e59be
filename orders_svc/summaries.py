"""What orders answers for (`storefront check`): its orders, and the copies it keeps of the
customers and of the catalog, each read as its owner's summaries are."""

from __future__ import annotations

from typing import Any

import topology
from orders_svc.repository import APPLIED, CustomerCopies, OrderRepository, ProductCopies
from storefront.common.v1 import common_pb2
from svckit.admin import Summarized
from svckit.checks import Summary, document_summary, message_digest
from svckit.statuses import status_name

CUSTOMER_FIELDS = ("name", "contact", "addresses")
"""What a customer copy holds of the customer (accounts digests the same)."""
PRODUCT_FIELDS = ("title", "description", "price", "state")
"""What a product copy holds of the product (catalog digests the same)."""


def customer_copy(doc: dict[str, Any]) -> Summary:
    return document_summary(doc, CUSTOMER_FIELDS, {"deleted": bool(doc.get("deleted"))})


def summaries(
    orders: OrderRepository, customers: CustomerCopies, products: ProductCopies
) -> dict[str, Summarized]:
    def order(doc: dict[str, Any]) -> Summary:
        o = orders.load(doc)
        seen = {e.status for e in o.status_events}
        facts = {
            "status": status_name(o.status, short=True),
            "approved": common_pb2.ORDER_STATUS_APPROVED in seen,
            "applied": sorted(int(v) for v in doc.get(APPLIED, [])),
        }
        return Summary(o.order_id, o.version, facts=facts)

    def product_copy(doc: dict[str, Any]) -> Summary:
        copy = products.content(doc)
        return Summary(copy.product_id, copy.version, message_digest(copy, PRODUCT_FIELDS))

    return {
        topology.ORDER_DOCUMENTS: Summarized(orders.collection, order),
        topology.CUSTOMER_COPIES: Summarized(customers.collection, customer_copy),
        topology.PRODUCT_COPIES: Summarized(products.collection, product_copy),
    }
