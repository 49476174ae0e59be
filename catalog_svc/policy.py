"""Who may call catalog's RPCs: staff keep the products; every signed-in caller reads them.
One rule per RPC of its API (svckit.policy loads this)."""

from __future__ import annotations

from svckit.authz import EVERY, Rule, allow

READERS = allow(customer=EVERY, staff=EVERY, warehouse=EVERY)

RULES: dict[str, Rule] = {
    "CreateProduct": allow(staff=EVERY),
    "GetProduct": READERS,
    "ListProducts": READERS,
    "UpdateProduct": allow(staff=EVERY),
    "DiscontinueProduct": allow(staff=EVERY),
}
