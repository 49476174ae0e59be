"""Who may call accounts' RPCs: customers manage their own account; staff read everyone's.
One rule per RPC of its API (svckit.policy loads this; svckit.authz says what a grant means)."""

from __future__ import annotations

from svckit.authz import EVERY, Own, Rule, SignUp, allow

OWN_ACCOUNT = Own("customer_id")

RULES: dict[str, Rule] = {
    "CreateCustomer": allow(customer=SignUp("customer_id")),
    "GetCustomer": allow(customer=OWN_ACCOUNT, staff=EVERY),
    "ListCustomers": allow(staff=EVERY),
    "UpdateCustomer": allow(customer=Own("customer.id")),
    "DeleteCustomer": allow(customer=OWN_ACCOUNT),
}
