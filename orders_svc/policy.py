"""Who may call orders' RPCs: customers place and follow their own; staff see all, approve,
reject, cancel. One rule per RPC of its API (svckit.policy loads this)."""

from __future__ import annotations

from svckit.authz import EVERY, Own, OwnedVia, Rule, allow

OWN_ACCOUNT = Own("customer_id")
OWN_ORDER = OwnedVia("order_id", "order", "order")
"""The order's owner, as orders looks it up (`app.owners("order", ...)`)."""

RULES: dict[str, Rule] = {
    "CreateOrder": allow(customer=OWN_ACCOUNT),
    "GetOrder": allow(customer=OWN_ORDER, staff=EVERY),
    "ListOrders": allow(customer=Own("customer_id", fill=True), staff=EVERY),
    "GetCustomerOrders": allow(customer=OWN_ACCOUNT, staff=EVERY),
    "ApproveOrder": allow(staff=EVERY),
    "RejectOrder": allow(staff=EVERY),
    "CancelOrder": allow(customer=OWN_ORDER, staff=EVERY),
}
