"""A client that keeps a ledger of every write the system acknowledged.

The ledger is the ground truth the fault suite checks the system against: an
acknowledged write that is missing at the end was lost; a status that shows
up twice was duplicated. Retries are how a real client survives a crashed
service, so every call retries on UNAVAILABLE, and ambiguous outcomes (the
service may have committed before it died) are settled by reading back.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from storefront.accounts.v1 import accounts_pb2
from storefront.catalog.v1 import catalog_pb2
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients
from storefront_cli.demo import PEOPLE, customer_draft, order_draft, product_draft
from svckit.backoff import Backoff

T = TypeVar("T")
Status = common_pb2.OrderStatus
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
STEPS = [
    (
        Status.ORDER_STATUS_PROCESSING,
        "ProcessFulfillment",
        fulfillment_pb2.ProcessFulfillmentRequest,
    ),
    (Status.ORDER_STATUS_SHIPPED, "ShipFulfillment", fulfillment_pb2.ShipFulfillmentRequest),
    (
        Status.ORDER_STATUS_IN_TRANSIT,
        "MarkFulfillmentInTransit",
        fulfillment_pb2.MarkFulfillmentInTransitRequest,
    ),
    (
        Status.ORDER_STATUS_RECEIVED,
        "ConfirmFulfillmentReceived",
        fulfillment_pb2.ConfirmFulfillmentReceivedRequest,
    ),
]


@dataclass
class Ledger:
    customers: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (version, email)
    orders: dict[str, str] = field(default_factory=dict)  # order id -> customer id
    approved: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)  # approved, then cancelled before shipping
    steps: dict[str, list[int]] = field(default_factory=dict)  # order id -> acked statuses
    products: dict[str, int] = field(default_factory=dict)  # product id -> version acked
    prices: dict[str, set[int]] = field(default_factory=dict)  # product id -> units it had
    operations: int = 0
    retries: int = 0


async def call(fn: Callable[[], Awaitable[T]], ledger: Ledger, *, budget: float = 90.0) -> T:
    """Retry while the service is down; anything else is the answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    # As a well-behaved client: quick retries at first, then at most one a second per caller
    # (jittered), so an outage is not met by a stream of requests.
    backoff = Backoff(0.1, 1.0)
    while True:
        try:
            return await fn()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE or loop.time() > deadline:
                raise
            ledger.retries += 1
            await asyncio.sleep(backoff.next_delay())


class Workload:
    def __init__(self, clients: Clients, ledger: Ledger, seed: int) -> None:
        self.c = clients
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.mine: list[str] = []  # customers this worker owns (single writer each)

    async def create_customer(self, n: int) -> None:
        cid = f"chaos-c{n}-{self.rng.randrange(10**9)}"
        draft = customer_draft(PEOPLE[n % len(PEOPLE)])
        draft.contact.email = f"{cid}@example.com"
        req = accounts_pb2.CreateCustomerRequest(customer=draft, customer_id=cid)
        try:
            await call(lambda: self.c.accounts.CreateCustomer(req, timeout=5), self.ledger)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # our earlier attempt committed
                raise
        self.ledger.customers[cid] = (1, draft.contact.email)
        self.mine.append(cid)
        self.ledger.operations += 1

    async def update_customer(self) -> None:
        cid = self.rng.choice(self.mine)
        version, _ = self.ledger.customers[cid]
        email = f"{cid}.v{version + 1}@example.com"
        patch = accounts_pb2.Customer(id=cid, etag=f'W/"{version}"')
        patch.contact.email = email
        req = accounts_pb2.UpdateCustomerRequest(
            customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["contact.email"])
        )
        try:
            await call(lambda: self.c.accounts.UpdateCustomer(req, timeout=5), self.ledger)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ABORTED:
                raise
            now = await call(
                lambda: self.c.accounts.GetCustomer(
                    accounts_pb2.GetCustomerRequest(customer_id=cid), timeout=5
                ),
                self.ledger,
            )
            if now.version <= version:
                raise AssertionError(
                    f"{cid}: ABORTED although nobody wrote since v{version}"
                ) from exc
            if (now.version, now.contact.email) != (version + 1, email):
                # Another client wrote since our etag (update_shared_customer): a clean refusal.
                # What we read is committed: the stored copy may only be newer.
                if now.version > self.ledger.customers[cid][0]:
                    self.ledger.customers[cid] = (now.version, now.contact.email)
                self.ledger.operations += 1
                return
        self.ledger.customers[cid] = (version + 1, email)
        self.ledger.operations += 1

    async def update_shared_customer(self) -> None:
        """Any worker's customer, without etag: several clients write the same customers. The
        server re-decides on conflict (never ABORTED); the ledger keeps the newest version
        acknowledged, which the stored one may only exceed (a retried write can land twice)."""
        cid = self.rng.choice(sorted(self.ledger.customers))
        email = f"{cid}.s{self.rng.randrange(10**9)}@example.com"
        patch = accounts_pb2.Customer(id=cid)
        patch.contact.email = email
        req = accounts_pb2.UpdateCustomerRequest(
            customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["contact.email"])
        )
        got = await call(lambda: self.c.accounts.UpdateCustomer(req, timeout=5), self.ledger)
        if got.version > self.ledger.customers[cid][0]:
            self.ledger.customers[cid] = (got.version, email)
        self.ledger.operations += 1

    async def create_product(self, n: int) -> None:
        """Staff add a product under an id of their choosing (a retry is ALREADY_EXISTS)."""
        pid = f"chaos-p{n}-{self.rng.randrange(10**9)}"
        draft = product_draft(n % 3)
        req = catalog_pb2.CreateProductRequest(product=draft, product_id=pid)
        try:
            await call(lambda: self.c.catalog.CreateProduct(req, timeout=5), self.ledger)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # our earlier attempt committed
                raise
        self.ledger.products[pid] = 1
        self.ledger.prices[pid] = {draft.price.units}
        self.ledger.operations += 1

    async def reprice(self) -> None:
        """A new price for any product, without etag (several workers reprice the same ones):
        every price it is acknowledged at may be one an order is placed at."""
        pid = self.rng.choice(sorted(self.ledger.products))
        units = self.rng.randrange(1, 500)
        patch = catalog_pb2.Product(id=pid)
        patch.price.currency_code, patch.price.units = "USD", units
        req = catalog_pb2.UpdateProductRequest(
            product=patch, update_mask=field_mask_pb2.FieldMask(paths=["price"])
        )
        # Listed before the call: an attempt whose answer is lost may still have committed.
        self.ledger.prices[pid].add(units)
        got = await call(lambda: self.c.catalog.UpdateProduct(req, timeout=5), self.ledger)
        self.ledger.products[pid] = max(self.ledger.products[pid], got.version)
        self.ledger.operations += 1

    def order_lines(self, n: int) -> orders_pb2.Order:
        """Half the orders are of the demo catalog, half of the products the workers made."""
        draft = order_draft((n % 3, 1 + n % 2))
        if self.ledger.products and self.rng.random() < 0.5:
            draft.items[0].product.id = self.rng.choice(sorted(self.ledger.products))
        return draft

    async def order_now(self, oid: str) -> orders_pb2.Order:
        """The order as stored, to tell a refusal from an earlier attempt whose answer was lost."""
        request = orders_pb2.GetOrderRequest(order_id=oid)
        return await call(lambda: self.c.orders.GetOrder(request, timeout=5), self.ledger)

    async def reject(self, oid: str) -> None:
        req = orders_pb2.RejectOrderRequest(order_id=oid, reason="chaos says no")
        try:
            got = await call(lambda: self.c.orders.RejectOrder(req, timeout=5), self.ledger)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            got = await self.order_now(oid)
        if got.status != Status.ORDER_STATUS_REJECTED:
            raise AssertionError(f"{oid}: rejection neither applied nor refused cleanly")
        self.ledger.rejected.add(oid)
        self.ledger.operations += 1

    async def cancel(self, oid: str) -> bool:
        """Cancel an approved order; False if it has shipped meanwhile (a fact, not a loss)."""
        req = orders_pb2.CancelOrderRequest(order_id=oid, reason="chaos changed its mind")
        try:
            got = await call(lambda: self.c.orders.CancelOrder(req, timeout=5), self.ledger)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            now = await self.order_now(oid)
            if now.status != Status.ORDER_STATUS_CANCELLED:
                return False
        else:
            if got.status != Status.ORDER_STATUS_CANCELLED:
                raise AssertionError(f"{oid}: cancel answered {got.status}")
        self.ledger.cancelled.add(oid)
        self.ledger.operations += 1
        return True

    async def place_order(self, n: int) -> str | None:
        cid = self.rng.choice(self.mine)
        chosen = f"chaos-o{n}-{self.rng.randrange(10**9)}"
        oid = f"{cid}.{chosen}"  # the order a chosen id names (docs/api.md), even if a retry
        req = orders_pb2.CreateOrderRequest(  # answers ALREADY_EXISTS
            customer_id=cid, order=self.order_lines(n), order_id=chosen
        )
        try:
            await call(lambda: self.c.orders.CreateOrder(req, timeout=5), self.ledger)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                # The customer's or a new product's copy has not reached orders yet: a fact,
                # not a loss.
                return None
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return None  # the customer holds its quota of open orders: refused, not lost
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        self.ledger.orders[oid] = cid
        self.ledger.operations += 1
        return oid

    async def approve(self, oid: str) -> None:
        req = orders_pb2.ApproveOrderRequest(order_id=oid)
        try:
            await call(lambda: self.c.orders.ApproveOrder(req, timeout=5), self.ledger)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            now = await self.order_now(oid)
            if Status.ORDER_STATUS_APPROVED not in [e.status for e in now.status_events]:
                raise AssertionError(
                    f"{oid}: approval neither applied nor refused cleanly"
                ) from exc
        self.ledger.approved.add(oid)
        self.ledger.operations += 1

    async def advance(self, oid: str) -> bool:
        """The next fulfillment step, once the fulfillment exists; False if not there yet."""
        done = self.ledger.steps.setdefault(oid, [])
        if len(done) == len(STEPS):
            return True
        target, method, request = STEPS[len(done)]
        rpc: Any = getattr(self.c.fulfillment, method)
        try:
            await call(lambda: rpc(request(order_id=oid), timeout=5), self.ledger)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            if exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED):
                raise
            now = await call(
                lambda: self.c.fulfillment.GetFulfillment(
                    fulfillment_pb2.GetFulfillmentRequest(order_id=oid), timeout=5
                ),
                self.ledger,
            )
            if target not in [e.status for e in now.status_events]:
                return False  # refused (e.g. a concurrent step still in flight): try again later
        done.append(target)
        self.ledger.operations += 1
        return True
