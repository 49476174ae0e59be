"""The sample-data demo: the seed posts' script, through the generated stubs.

Loads a small catalog, creates customers, changes an address, places orders (priced by
orders' copy of the catalog), approves, rejects and cancels some, walks fulfilments through
every status, changes a price (which new orders pay, placed ones keep), then prints each
service's view once they have converged. `demo_loop` keeps gentle traffic going through
every flow (`storefront demo --loop`), so the console and Prometheus show a live system.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, json_format

from storefront.accounts.v1 import accounts_pb2
from storefront.catalog.v1 import catalog_pb2
from storefront.catalog.v1 import events_pb2 as catalog_events
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients, eventually
from storefront_cli.tables import Log, render
from svckit.ids import new_id
from svckit.statuses import status_name

Status = common_pb2.OrderStatus

PEOPLE = [
    ("Mr.", "Rajesh", "Iyer", "555-666-7777", "Sunrise", "CA", "12345-6789", "4111111111111111"),
    ("Ms.", "Maria", "Lopez", "555-222-1000", "Austin", "TX", "73301", "5500005555555559"),
    ("Dr.", "Kenji", "Sato", "555-901-4455", "Seattle", "WA", "98101", "340000000000009"),
]
PRODUCTS = [
    ("sku-100", "Espresso machine", 249, 990_000_000),
    ("sku-200", "Coffee grinder", 89, 500_000_000),
    ("sku-300", "Milk frother", 24, 0),
]


def customer_body(person: tuple[str, ...]) -> dict[str, Any]:
    """A create request's customer as proto JSON: 2 addresses (billing, shipping), 1 card."""
    title, first, last, phone, city, state, postal, card = person
    address = {"address1": "123 Oak Street", "city": city, "state": state, "postalCode": postal}
    return {
        "name": {"title": title, "firstName": first, "lastName": last},
        "contact": {"primaryPhone": phone, "email": f"{first.lower()}.{last.lower()}@example.com"},
        "addresses": [
            {"type": "ADDRESS_TYPE_BILLING", "description": "Card statements", **address},
            {"type": "ADDRESS_TYPE_SHIPPING", "description": "Home", **address},
        ],
        "creditCards": [
            {
                "type": "CREDIT_CARD_TYPE_PRIMARY",
                "description": "VISA",
                "number": card,
                "expiration": "06/29",
                "nameOnCard": f"{first} {last}",
            }
        ],
    }


def customer_draft(person: tuple[str, ...]) -> accounts_pb2.Customer:
    return json_format.ParseDict(customer_body(person), accounts_pb2.Customer())


def product_draft(index: int) -> catalog_pb2.Product:
    """One of the demo catalog's PRODUCTS, as a create request's product."""
    _, title, units, nanos = PRODUCTS[index]
    product = catalog_pb2.Product(title=title, description=f"The demo's {title.lower()}")
    product.price.currency_code = "USD"
    product.price.units, product.price.nanos = units, nanos
    return product


def catalog_copy() -> dict[str, catalog_events.ProductChanged]:
    """Orders' copy of the demo catalog as its events make it (unit tests and benchmarks)."""
    copies = {}
    for i, (sku, *_) in enumerate(PRODUCTS):
        p = product_draft(i)
        copies[sku] = catalog_events.ProductChanged(
            product_id=sku,
            version=1,
            title=p.title,
            description=p.description,
            price=p.price,
            state=catalog_pb2.PRODUCT_STATE_ACTIVE,
        )
    return copies


def order_draft(*lines: tuple[int, int]) -> orders_pb2.Order:
    """An order of (product index, quantity) lines: product ids and quantities only, as a
    client sends them; the catalog gives each line its title and price."""
    order = orders_pb2.Order()
    for product_index, quantity in lines:
        order.items.add(quantity=quantity).product.id = PRODUCTS[product_index][0]
    return order


async def load_catalog(c: Clients, log: Log = print) -> list[catalog_pb2.Product]:
    """Create the demo's PRODUCTS (as staff) under their fixed ids; ones already there are
    kept as they are, so loading twice changes nothing."""
    loaded = []
    for i, (sku, *_) in enumerate(PRODUCTS):
        try:
            product = await c.catalog.CreateProduct(
                catalog_pb2.CreateProductRequest(product=product_draft(i), product_id=sku)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            product = await c.catalog.GetProduct(catalog_pb2.GetProductRequest(product_id=sku))
        loaded.append(product)
    log(f"[demo] catalog: {', '.join(f'{p.title} {money(p.price)}' for p in loaded)}")
    return loaded


async def place_order(
    c: Clients, customer_id: str, draft: orders_pb2.Order, timeout: float = 60.0
) -> orders_pb2.Order:
    """CreateOrder, retried (with one order id, so never placed twice) while orders does not
    know the customer or a product yet: its copies follow accounts and catalog a moment
    behind."""
    request = orders_pb2.CreateOrderRequest(customer_id=customer_id, order=draft, order_id=new_id())

    async def attempt() -> orders_pb2.Order:
        try:
            return await c.orders.CreateOrder(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            return await c.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=request.order_id))

    return await eventually(attempt, timeout=timeout, what=f"orders to price {request.order_id}")


def status(value: int) -> str:
    return status_name(value, short=True)


def money(m: object) -> str:
    units, nanos, code = m.units, m.nanos, m.currency_code  # type: ignore[attr-defined]
    return f"{units + nanos / 1e9:,.2f} {code}"


async def run_demo(c: Clients, log: Log = print, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    log("[demo] loading the catalog ...")
    await load_catalog(c, log)
    log("[demo] creating customers ...")
    customers = [
        await c.accounts.CreateCustomer(
            accounts_pb2.CreateCustomerRequest(customer=customer_draft(p))
        )
        for p in PEOPLE
    ]
    moved = accounts_pb2.Customer(id=customers[1].id, etag=customers[1].etag)
    moved.addresses.extend(customers[1].addresses)
    moved.addresses[1].address1 = "500 Congress Avenue"
    moved.addresses[1].description = "New home"
    log(f"[demo] {PEOPLE[1][1]} moves: updating the shipping address ...")
    customers[1] = await c.accounts.UpdateCustomer(
        accounts_pb2.UpdateCustomerRequest(
            customer=moved, update_mask=field_mask_pb2.FieldMask(paths=["addresses"])
        )
    )
    log("[demo] waiting for orders to hold the customers' copies ...")
    for customer in customers:
        await eventually(
            functools.partial(_copy_at, c, customer.id, customer.version),
            timeout=timeout,
            what=f"orders' copy of {customer.id}",
        )
    log("[demo] placing orders ...")
    plan = [((0, 1), (2, 2)), ((1, 1),), ((0, 1), (1, 1)), ((2, 3),), ((1, 2),), ((0, 1),)]
    orders = [
        await place_order(c, customers[i % len(customers)].id, order_draft(*lines), timeout)
        for i, lines in enumerate(plan)
    ]
    approved = orders[:4]
    for order in approved:
        await c.orders.ApproveOrder(orders_pb2.ApproveOrderRequest(order_id=order.order_id))
    await c.orders.RejectOrder(
        orders_pb2.RejectOrderRequest(order_id=orders[4].order_id, reason="payment declined")
    )
    await c.orders.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=orders[5].order_id, reason="changed my mind")
    )
    log("[demo] approved 4, rejected 1, cancelled 1; walking fulfilments ...")
    for depth, order in zip((4, 4, 3, 1), approved, strict=True):
        await walk_fulfillment(c, order.order_id, depth, timeout)
    log("[demo] waiting for order histories to converge ...")
    for order in approved:
        await eventually(
            functools.partial(_histories_agree, c, order.order_id),
            timeout=timeout,
            what=f"history of {order.order_id}",
        )
    await change_a_price(c, log)
    log(f"[demo] converged in {time.monotonic() - t0:.2f}s\n")
    await print_views(c, [x.id for x in customers], log)


async def walk_fulfillment(c: Clients, order_id: str, depth: int, timeout: float) -> None:
    """Once fulfillment holds the approved order, move it `depth` steps as the warehouse
    (1: processing ... 4: received)."""
    steps = [
        (c.fulfillment.ProcessFulfillment, fulfillment_pb2.ProcessFulfillmentRequest),
        (c.fulfillment.ShipFulfillment, fulfillment_pb2.ShipFulfillmentRequest),
        (c.fulfillment.MarkFulfillmentInTransit, fulfillment_pb2.MarkFulfillmentInTransitRequest),
        (
            c.fulfillment.ConfirmFulfillmentReceived,
            fulfillment_pb2.ConfirmFulfillmentReceivedRequest,
        ),
    ]
    await eventually(
        functools.partial(
            c.fulfillment.GetFulfillment, fulfillment_pb2.GetFulfillmentRequest(order_id=order_id)
        ),
        timeout=timeout,
        what=f"fulfillment of {order_id}",
    )
    for call, request in steps[:depth]:
        await call(request(order_id=order_id))


async def change_a_price(c: Clients, log: Log) -> None:
    """A price change in catalog: orders' copy follows it (`storefront check` shows when it
    has), so new orders pay it; the orders placed before keep the price they were placed at."""
    sku = PRODUCTS[2][0]
    before = await c.catalog.GetProduct(catalog_pb2.GetProductRequest(product_id=sku))
    raised = catalog_pb2.Product(id=sku)
    raised.price.CopyFrom(before.price)
    raised.price.units += 1
    await c.catalog.UpdateProduct(
        catalog_pb2.UpdateProductRequest(
            product=raised, update_mask=field_mask_pb2.FieldMask(paths=["price"])
        )
    )
    log(
        f"[demo] {before.title}: {money(before.price)} -> {money(raised.price)} in the catalog; "
        "new orders pay it, placed ones keep their totals"
    )


async def _copy_at(c: Clients, customer_id: str, version: int) -> object | None:
    copy = await c.orders.GetCustomerOrders(
        orders_pb2.GetCustomerOrdersRequest(customer_id=customer_id)
    )
    return copy if copy.customer_version >= version else None


async def _histories_agree(c: Clients, order_id: str) -> object | None:
    order = await c.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id))
    f = await c.fulfillment.GetFulfillment(fulfillment_pb2.GetFulfillmentRequest(order_id=order_id))
    return order if order.status == f.status else None


async def print_views(c: Clients, customer_ids: list[str], log: Log = print) -> None:
    rows = []
    order_rows = []
    for cid in customer_ids:
        a = await c.accounts.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=cid))
        o = await c.orders.GetCustomerOrders(orders_pb2.GetCustomerOrdersRequest(customer_id=cid))
        same = (a.name, a.contact, list(a.addresses)) == (o.name, o.contact, list(o.addresses))
        shipping = next(x for x in a.addresses if x.type == common_pb2.ADDRESS_TYPE_SHIPPING)
        rows.append(
            (
                cid[-8:],
                f"{a.name.first_name} {a.name.last_name}",
                shipping.address1,
                a.credit_cards[0].number if a.credit_cards else "",
                a.version,
                o.customer_version,
                "yes" if same else "NO",
            )
        )
        for order in o.orders:
            try:
                f = await c.fulfillment.GetFulfillment(
                    fulfillment_pb2.GetFulfillmentRequest(order_id=order.order_id)
                )
                f_status = status(f.status)
            except Exception:  # noqa: BLE001 - not every order reaches fulfillment
                f_status = "-"
            history = " > ".join(status(e.status) for e in order.status_events)
            order_rows.append(
                (
                    order.order_id[-8:],
                    cid[-8:],
                    money(order.total),
                    status(order.status),
                    f_status,
                    history,
                )
            )
    log(
        render(
            (
                "customer",
                "name",
                "shipping address",
                "card",
                "accounts v",
                "orders copy v",
                "equal",
            ),
            rows,
            title="Customers: accounts (system of record) vs orders' copy",
        )
    )
    log("")
    log(
        render(
            ("order", "customer", "total", "orders status", "fulfillment", "history in orders"),
            order_rows,
            title="Orders: orders' history vs fulfillment",
        )
    )


async def demo_round(c: Clients, n: int, log: Log, timeout: float = 60.0) -> None:
    """One pass through every flow, for one new customer: sign-up and an address change
    (CustomerChanged), an order shipped to the end (FulfillmentRequested, OrderStatusChanged
    at each step), one approved then cancelled (FulfillmentCancelled), one rejected, and the
    customer closing the account (CustomerDeleted)."""
    person = PEOPLE[n % len(PEOPLE)]
    customer = await c.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(person))
    )
    moved = accounts_pb2.Customer(id=customer.id, etag=customer.etag)
    moved.addresses.extend(customer.addresses)
    moved.addresses[1].address1 = f"{100 + n} Harbor Road"
    customer = await c.accounts.UpdateCustomer(
        accounts_pb2.UpdateCustomerRequest(
            customer=moved, update_mask=field_mask_pb2.FieldMask(paths=["addresses"])
        )
    )
    await eventually(
        functools.partial(_copy_at, c, customer.id, customer.version),
        timeout=timeout,
        what=f"orders' copy of {customer.id}",
    )
    shipped, cancelled, rejected = [
        await place_order(c, customer.id, order_draft(*lines), timeout)
        for lines in (((n % 3, 1),), (((n + 1) % 3, 2),), (((n + 2) % 3, 1),))
    ]
    for order in (shipped, cancelled):
        await c.orders.ApproveOrder(orders_pb2.ApproveOrderRequest(order_id=order.order_id))
    await c.orders.RejectOrder(
        orders_pb2.RejectOrderRequest(order_id=rejected.order_id, reason="out of stock")
    )
    await c.orders.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=cancelled.order_id, reason="changed my mind")
    )
    oid = shipped.order_id
    await walk_fulfillment(c, oid, 4, timeout)
    await eventually(
        functools.partial(_histories_agree, c, oid), timeout=timeout, what=f"history of {oid}"
    )
    await c.accounts.DeleteCustomer(accounts_pb2.DeleteCustomerRequest(customer_id=customer.id))
    log(
        f"[demo] round {n}: {person[1]} signed up, moved, ordered 3 "
        f"(received, cancelled, rejected), left"
    )


async def demo_loop(
    connect: Callable[[], Clients], log: Log, *, interval: float, rounds: int = 0
) -> int:
    """The demo catalog (once), then `demo_round` again and again, `interval` seconds apart,
    until Ctrl-C (or `rounds` rounds); a round that fails is reported and the next one
    starts. Fresh clients per round, so tokens never outlive a long loop. Returns the rounds
    completed."""
    done = n = 0
    catalog_loaded = False
    while not rounds or n < rounds:
        c = connect()
        try:
            if not catalog_loaded:
                await load_catalog(c, log)
                catalog_loaded = True
            await demo_round(c, n, log)
            done += 1
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            log(f"[demo] round {n} failed (the next one starts anyway): {detail}")
        finally:
            await c.close()
        n += 1
        if not rounds or n < rounds:
            await asyncio.sleep(interval)
    return done
