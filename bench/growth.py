"""Growth: the same operation against a small and a large data set, the ratio large/small.

A ratio near 1.0 means the cost per operation does not depend on how much is stored (every
lookup is answered by an index); one far below means something scans. The large sets are
seeded straight into the services' collections, as the repositories store them
(``svckit.documents.to_document`` of what the domain builds, as already published events), in
unordered ``insert_many`` batches: 100,000 customers take seconds instead of the minutes the
RPCs would, and nothing in the measured path differs from data that came through the API.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import topology
from accounts_svc import domain as accounts_domain
from bench import data
from fulfillment_svc import domain as fulfillment_domain
from orders_svc import domain as orders_domain
from storefront.common.v1 import common_pb2
from storefront.orders.v1 import events_pb2 as order_events
from storefront.orders.v1 import orders_pb2
from storefront_cli.demo import catalog_copy, order_draft
from svckit import mongo, paging
from svckit.documents import Document, to_document
from svckit.outbox import OUTBOX

ACCOUNTS = "storefront.accounts.v1.AccountsService"
ORDERS = "storefront.orders.v1.OrdersService"
FULFILLMENTS = "storefront.fulfillment.v1.FulfillmentService"
ORDERS_PER_CUSTOMER = 10
STATUSES = ("ORDER_STATUS_CREATED", "ORDER_STATUS_APPROVED", "ORDER_STATUS_REJECTED")
FULFILLMENT_STATUSES = (
    fulfillment_domain.APPROVED,
    fulfillment_domain.PROCESSING,
    fulfillment_domain.SHIPPED,
)
BATCH = 1000
CATALOG = catalog_copy()

Log = Callable[[str], None]


@dataclass(frozen=True)
class Operation:
    service: str
    method: str
    requests: Any
    caller: str
    """Whose token each request carries (docs/security.md): ``staff`` or ``warehouse``;
    ``customer``, each request as the customer in ``customers`` at its index; ``sign_up``, a
    new customer each."""
    customers: tuple[str, ...] = ()


Measure = Callable[[Operation], dict[str, Any]]
"""An operation's figures (loadgen.LoadResult.as_dict, with whatever the bench adds)."""


@dataclass(frozen=True)
class Sizes:
    small: int
    """Customers (and orders) stored for the first measurement."""
    large: int
    """... and for the second."""
    few_orders: int = 10
    many_orders: int = 1000
    """GetCustomerOrders: a customer with this many orders, against one with few_orders (pages
    of few_orders both)."""


def _customer_doc(i: int, customer_id: str, now: datetime) -> dict[str, Any]:
    customer = accounts_domain.new_customer(data.customer_draft(i), customer_id, now)
    return to_document(customer, id_field="id") | {OUTBOX: []}


def _order(customer_id: str, order_id: str, status: str, now: datetime) -> orders_pb2.Order:
    order = orders_domain.new_order(customer_id, order_draft((0, 1)), CATALOG, order_id, now)
    target = common_pb2.OrderStatus.Value(status)
    if target != order.status:
        order = orders_domain.transition(order, target, now)
    return order


def _fulfillment(order_id: str, customer_id: str, status: int, now: datetime) -> Document:
    requested = order_events.FulfillmentRequested(
        order_id=order_id, version=2, customer_id=customer_id
    )
    requested.items.extend(order_draft((0, 1)).items)
    f = fulfillment_domain.new_fulfillment(requested, now)
    while f.status != status:
        f = fulfillment_domain.transition(f, fulfillment_domain.NEXT[f.status], now)
    return to_document(f, id_field="order_id") | {OUTBOX: []}


async def _insert(uri: str, db: str, collection: str, docs: list[dict[str, Any]], log: Log) -> None:
    client = mongo.connect(uri)
    try:
        coll = client[db][collection]
        t0 = time.monotonic()
        for start in range(0, len(docs), BATCH):
            await coll.insert_many(docs[start : start + BATCH], ordered=False)
            done = start + BATCH
            if done % 20_000 == 0:
                log(f"[bench]   {collection}: {done:,} of {len(docs):,} seeded")
        log(f"[bench]   {collection}: {len(docs):,} seeded in {time.monotonic() - t0:.1f}s")
    finally:
        await client.close()


class Growth:
    """Seeds to ``sizes.small`` then ``sizes.large`` and measures each operation at both."""

    def __init__(
        self,
        *,
        uri: str,
        accounts_db: str,
        orders_db: str,
        fulfillment_db: str,
        sizes: Sizes,
        measure: Measure,
        settle: Callable[[], None],
        log: Log,
        seeded: Callable[[], None] = lambda: None,
        rounds: int = 1,
    ) -> None:
        self.uri = uri
        self.accounts_db = accounts_db
        self.orders_db = orders_db
        self.fulfillment_db = fulfillment_db
        self.sizes = sizes
        self.measure = measure
        self.settle = settle
        self.seeded = seeded
        """Called after each bulk seed (the bench's VACUUM ANALYZE)."""
        self.log = log
        self.rounds = rounds
        """Measurements of each operation at each size, interleaved: the median is kept."""
        self.customers: list[str] = []
        self.orders = 0
        self.now = datetime.now(UTC)

    def seed_to(self, n: int) -> None:
        new = [f"growth-{i:07d}" for i in range(len(self.customers), n)]
        docs = [_customer_doc(i, cid, self.now) for i, cid in enumerate(new, len(self.customers))]
        asyncio.run(_insert(self.uri, self.accounts_db, topology.CUSTOMERS, docs, self.log))
        self.customers += new
        # n orders: the first n / ORDERS_PER_CUSTOMER customers have ORDERS_PER_CUSTOMER each.
        owners = [self.customers[i // ORDERS_PER_CUSTOMER] for i in range(self.orders, n)]
        orders = [
            to_document(
                _order(owner, f"o-{i:07d}", STATUSES[i % len(STATUSES)], self.now),
                id_field="order_id",
            )
            | {OUTBOX: []}
            for i, owner in enumerate(owners, self.orders)
        ]
        asyncio.run(_insert(self.uri, self.orders_db, topology.ORDER_DOCUMENTS, orders, self.log))
        fulfillments = [
            _fulfillment(
                f"o-{i:07d}", owner, FULFILLMENT_STATUSES[i % len(FULFILLMENT_STATUSES)], self.now
            )
            for i, owner in enumerate(owners, self.orders)
        ]
        asyncio.run(
            _insert(self.uri, self.fulfillment_db, topology.FULFILLMENTS, fulfillments, self.log)
        )
        self.orders = n
        self.seeded()

    def seed_customer_with_orders(self, customer_id: str, count: int) -> None:
        copy = {
            "_id": customer_id,
            "version": 1,
            "deleted": False,
            **{
                k: v
                for k, v in _customer_doc(0, customer_id, self.now).items()
                if k in ("name", "contact", "addresses")
            },
        }
        orders = [
            to_document(
                _order(customer_id, f"{customer_id}-o{i:05d}", STATUSES[0], self.now),
                id_field="order_id",
            )
            | {OUTBOX: []}
            for i in range(count)
        ]
        asyncio.run(_insert(self.uri, self.orders_db, topology.CUSTOMER_COPIES, [copy], self.log))
        asyncio.run(_insert(self.uri, self.orders_db, topology.ORDER_DOCUMENTS, orders, self.log))
        self.seeded()

    def operations(self) -> dict[str, Operation]:
        """The operations measured, over the data stored now; those that scan last."""
        rng = random.Random(len(self.customers))
        sample = rng.sample(self.customers, min(1000, len(self.customers)))
        deep = paging.encode_token(self.customers[-60])
        owners = self.customers[: max(1, self.orders // ORDERS_PER_CUSTOMER)]
        owner_sample = rng.sample(owners, min(200, len(owners)))
        return {
            "get_customer": Operation(
                "accounts", f"{ACCOUNTS}.GetCustomer", [{"customer_id": c} for c in sample], "staff"
            ),
            "update_customer": Operation(
                "accounts",
                f"{ACCOUNTS}.UpdateCustomer",
                [
                    {
                        "customer": {"id": c, "contact": {"email": f"grown{n}@example.com"}},
                        "update_mask": {"paths": ["contact.email"]},
                    }
                    for n, c in enumerate(sample)
                ],
                "customer",
                tuple(sample),
            ),
            "create_customer": Operation(
                "accounts",
                f"{ACCOUNTS}.CreateCustomer",
                {"customer": data.customer_body(3)},
                "sign_up",
            ),
            "list_orders_by_customer": Operation(
                "orders",
                f"{ORDERS}.ListOrders",
                [{"customer_id": c, "page_size": 50} for c in owner_sample],
                "staff",
            ),
            "list_customers_deep_page": Operation(
                "accounts",
                f"{ACCOUNTS}.ListCustomers",
                {"page_size": 50, "page_token": deep},
                "staff",
            ),
            "list_orders_by_status": Operation(
                "orders",
                f"{ORDERS}.ListOrders",
                {"status": STATUSES[1], "page_size": 50},
                "staff",
            ),
            "list_fulfillments_by_status": Operation(
                "fulfillment",
                f"{FULFILLMENTS}.ListFulfillments",
                {"status": common_pb2.OrderStatus.Name(FULFILLMENT_STATUSES[1]), "page_size": 50},
                "warehouse",
            ),
        }

    def run(self) -> dict[str, Any]:
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for label, n in (("small", self.sizes.small), ("large", self.sizes.large)):
            self.log(f"[bench] growth: seeding to {n:,} customers and {n:,} orders")
            self.seed_to(n)
            operations = self.operations()
            for round_ in range(1, self.rounds + 1):
                for name, operation in operations.items():
                    self.settle()
                    self.log(f"[bench] growth: {name} with {n:,} stored ({self._of(round_)})")
                    r = self.measure(operation)
                    runs.setdefault(name, {}).setdefault(label, []).append({**r, "stored": n})
        few, many = f"growth-few-{self.sizes.few_orders}", f"growth-many-{self.sizes.many_orders}"
        self.seed_customer_with_orders(few, self.sizes.few_orders)
        self.seed_customer_with_orders(many, self.sizes.many_orders)
        # Both customers are stored from here on, so their rounds alternate.
        for round_ in range(1, self.rounds + 1):
            for label, cid, count in (
                ("small", few, self.sizes.few_orders),
                ("large", many, self.sizes.many_orders),
            ):
                self.settle()
                self.log(
                    f"[bench] growth: get_customer_orders of a customer with {count:,} orders"
                    f" ({self._of(round_)})"
                )
                # Pages of the same size (the few orders fill one), so the ratio is what a page
                # costs as the customer's orders grow, not a page 5x larger.
                page = {"customer_id": cid, "page_size": self.sizes.few_orders}
                operation = Operation("orders", f"{ORDERS}.GetCustomerOrders", page, "staff")
                measured = self.measure(operation)
                runs.setdefault("get_customer_orders", {}).setdefault(label, []).append(
                    {**measured, "stored": count}
                )
        return {name: _summary(by_label) for name, by_label in runs.items()}

    def _of(self, round_: int) -> str:
        return f"round {round_} of {self.rounds}"


def _summary(by_label: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each size's median round (by rps), every round's rps beside it, and the ratio of the
    medians: a round slowed by the machine's other work moves the median less than a mean."""
    out: dict[str, Any] = {}
    for label, rounds in by_label.items():
        ordered = sorted(rounds, key=lambda r: r["rps"])
        out[label] = {**ordered[(len(ordered) - 1) // 2], "rounds_rps": [r["rps"] for r in rounds]}
    small, large = out["small"]["rps"], out["large"]["rps"]
    out["ratio"] = large / small if small else 0.0
    out["target"] = "ratio >= 0.8"
    out["met"] = out["ratio"] >= 0.8
    return out


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Table rows: name, large figure, small figure, ratio, target : met."""
    out = []
    for name, r in results.items():
        if "error" in r:
            out.append((f"growth {name}", "error: " + str(r["error"])[:60], "", "", ""))
            continue
        small, large = r["small"], r["large"]
        out.append(
            (
                f"growth {name}",
                f"{large['rps']:,.0f} rps with {large['stored']:,}{_spread(large)}",
                f"{small['rps']:,.0f} rps with {small['stored']:,}{_spread(small)}",
                f"{r['ratio']:.2f}",
                f"{r['target']} : {'yes' if r['met'] else 'NO'}",
            )
        )
    return out


def _spread(measured: dict[str, Any]) -> str:
    """The rounds' rps after the median, when there were several."""
    rounds = measured.get("rounds_rps", [])
    return f" ({'/'.join(f'{r:,.0f}' for r in rounds)})" if len(rounds) > 1 else ""
