"""Who may call fulfillment's RPCs: the warehouse walks it; a customer may look at their own
order's. One rule per RPC of its API (svckit.policy loads this)."""

from __future__ import annotations

from svckit.authz import EVERY, OwnedVia, Rule, allow

OWN_FULFILLMENT = OwnedVia("order_id", "fulfillment", "fulfillment for order")
"""The order's owner, as fulfillment looks it up (`app.owners("fulfillment", ...)`)."""

RULES: dict[str, Rule] = {
    "GetFulfillment": allow(customer=OWN_FULFILLMENT, warehouse=EVERY),
    "ListFulfillments": allow(warehouse=EVERY),
    "ProcessFulfillment": allow(warehouse=EVERY),
    "ShipFulfillment": allow(warehouse=EVERY),
    "MarkFulfillmentInTransit": allow(warehouse=EVERY),
    "ConfirmFulfillmentReceived": allow(warehouse=EVERY),
}
