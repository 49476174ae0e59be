"""Who may call what: one rule per RPC of every service, and nothing else decides it.

Read a row as "this RPC: these roles, on these resources" (grants: svckit.authz). Every RPC the
servers serve must have a row (tests/unit/test_policy.py checks it against the descriptors);
one without is refused. docs/security.md shows this table as a matrix:
`python -m svckit.policy` prints it, and a test keeps the two equal.
"""

from __future__ import annotations

import sys

from svckit.authz import (
    EVERY,
    PUBLIC,
    ROLES,
    Every,
    Own,
    OwnedVia,
    Rule,
    SignUp,
    allow,
)

ACCOUNTS = "/storefront.accounts.v1.AccountsService"
ORDERS = "/storefront.orders.v1.OrdersService"
FULFILLMENT = "/storefront.fulfillment.v1.FulfillmentService"
CATALOG = "/storefront.catalog.v1.CatalogService"
ADMIN = "/storefront.admin.v1.AdminService"

OWN_ACCOUNT = Own("customer_id")
OWN_ORDER = OwnedVia("order_id", "order", "order")
OWN_FULFILLMENT = OwnedVia("order_id", "fulfillment", "fulfillment for order")

POLICY: dict[str, Rule] = {
    # accounts: customers manage their own account; staff read everyone's.
    f"{ACCOUNTS}/CreateCustomer": allow(customer=SignUp("customer_id")),
    f"{ACCOUNTS}/GetCustomer": allow(customer=OWN_ACCOUNT, staff=EVERY),
    f"{ACCOUNTS}/ListCustomers": allow(staff=EVERY),
    f"{ACCOUNTS}/UpdateCustomer": allow(customer=Own("customer.id")),
    f"{ACCOUNTS}/DeleteCustomer": allow(customer=OWN_ACCOUNT),
    # orders: customers place and follow their own; staff see all, approve, reject, cancel.
    f"{ORDERS}/CreateOrder": allow(customer=OWN_ACCOUNT),
    f"{ORDERS}/GetOrder": allow(customer=OWN_ORDER, staff=EVERY),
    f"{ORDERS}/ListOrders": allow(customer=Own("customer_id", fill=True), staff=EVERY),
    f"{ORDERS}/GetCustomerOrders": allow(customer=OWN_ACCOUNT, staff=EVERY),
    f"{ORDERS}/ApproveOrder": allow(staff=EVERY),
    f"{ORDERS}/RejectOrder": allow(staff=EVERY),
    f"{ORDERS}/CancelOrder": allow(customer=OWN_ORDER, staff=EVERY),
    # fulfillment: the warehouse walks it; a customer may look at their own order's.
    f"{FULFILLMENT}/GetFulfillment": allow(customer=OWN_FULFILLMENT, warehouse=EVERY),
    f"{FULFILLMENT}/ListFulfillments": allow(warehouse=EVERY),
    f"{FULFILLMENT}/ProcessFulfillment": allow(warehouse=EVERY),
    f"{FULFILLMENT}/ShipFulfillment": allow(warehouse=EVERY),
    f"{FULFILLMENT}/MarkFulfillmentInTransit": allow(warehouse=EVERY),
    f"{FULFILLMENT}/ConfirmFulfillmentReceived": allow(warehouse=EVERY),
    # catalog: staff keep the products; every signed-in caller reads them.
    f"{CATALOG}/CreateProduct": allow(staff=EVERY),
    f"{CATALOG}/GetProduct": allow(customer=EVERY, staff=EVERY, warehouse=EVERY),
    f"{CATALOG}/ListProducts": allow(customer=EVERY, staff=EVERY, warehouse=EVERY),
    f"{CATALOG}/UpdateProduct": allow(staff=EVERY),
    f"{CATALOG}/DiscontinueProduct": allow(staff=EVERY),
    # The internal admin service every service serves on its own port (repairs, replays):
    # the operator only, not staff; routed by neither Envoy nor the gateway.
    f"{ADMIN}/Republish": allow(operator=EVERY),
    f"{ADMIN}/ReplayTopic": allow(operator=EVERY),
    f"{ADMIN}/ReplayParked": allow(operator=EVERY),
    f"{ADMIN}/ListSummaries": allow(operator=EVERY),
    f"{ADMIN}/MigrateParked": allow(operator=EVERY),
    # Probes and tooling, served on the service and admin ports only (Envoy and the gateway
    # route nothing but the four services): no token.
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
}

CELLS = {Every: "all", Own: "own", OwnedVia: "own", SignUp: "self"}
"""How docs/security.md writes a grant. "403": the role has none (PERMISSION_DENIED); "401":
no valid token (UNAUTHENTICATED); "own": the caller's own resources, another's answer 404;
"self": only as themselves, another id answers 403."""
COLUMNS = ("anonymous", *ROLES)


def matrix() -> str:
    """The RPC x caller matrix of docs/security.md, as a Markdown table."""
    lines = [
        "| RPC | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for method, rule in POLICY.items():
        if rule.public:
            cells = ["public"] * len(COLUMNS)
        else:
            grants = [rule.grants.get(r) for r in ROLES]
            cells = ["401", *(CELLS[type(g)] if g else "403" for g in grants)]
        lines.append(f"| `{method.lstrip('/')}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(matrix())
