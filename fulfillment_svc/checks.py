"""The copy fulfillment keeps of orders' approved orders (one fulfillment each), and how
`storefront check` tells it has drifted: an approved order without a fulfillment, a
fulfillment orders never approved or does not know, a cancellation that did not reach it."""

from __future__ import annotations

from collections.abc import Iterator

import topology
from svckit.checks import Comparison, Divergence, Side, Summary


def approved_orders(
    oid: str, order: Summary | None, fulfillment: Summary | None
) -> Iterator[Divergence]:
    if order is None:
        if fulfillment is not None:
            yield Divergence("fulfillment of unknown order", oid, "orders has no such order")
        return
    if not order.facts.get("approved"):
        if fulfillment is not None:
            yield Divergence("fulfillment of unapproved order", oid, "orders never approved it")
        return
    cancelled = order.facts.get("status") == "CANCELLED"
    if fulfillment is None:
        # Orders decides what to send: for a cancelled order the cancellation (which leaves
        # fulfillment a CANCELLED tombstone), never a request that would ship it.
        kind = (
            "cancelled order unknown to fulfillment"
            if cancelled
            else "approved order without fulfillment"
        )
        yield Divergence(kind, oid, "", topology.ORDERS)
    elif cancelled and fulfillment.facts.get("cancellable"):
        status = fulfillment.facts.get("status")
        yield Divergence("cancellation not applied", oid, f"fulfillment {status}", topology.ORDERS)


COMPARISONS = (
    Comparison(
        Side(topology.ORDERS, topology.ORDER_DOCUMENTS),
        Side(topology.FULFILLMENT, topology.FULFILLMENTS),
        approved_orders,
    ),
)
