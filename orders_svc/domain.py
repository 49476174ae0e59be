"""Order rules and orders' copy of customers. Pure: no I/O, no clock, no ids."""

from __future__ import annotations

import re
from datetime import datetime

from google.type import money_pb2

from storefront.accounts.v1 import events_pb2 as accounts_events
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import events_pb2 as fulfillment_events
from storefront.orders.v1 import events_pb2, orders_pb2
from svckit import statuses
from svckit.envelope import PoisonEvent
from svckit.errors import FailedPrecondition, ResourceExhausted, Violations

Order = orders_pb2.Order
Status = common_pb2.OrderStatus

MAX_ITEMS = 100
MAX_ORDER_BYTES = 64 * 1024
"""An order's items, encoded. 100 lines of 200 + 200 + 2,000 four-byte characters made ~1 MB
orders, of which one customer stored 60 and a reply of 5 passed the 4 MiB limit (issue 25
finding 2); 64 KiB leaves room for ~100 lines with plain titles and short descriptions."""
MAX_OPEN_ORDERS = 20
"""Orders one customer may have open (neither RECEIVED, REJECTED nor CANCELLED) at once."""
OPEN = (
    Status.ORDER_STATUS_CREATED,
    Status.ORDER_STATUS_APPROVED,
    Status.ORDER_STATUS_PROCESSING,
    Status.ORDER_STATUS_SHIPPED,
    Status.ORDER_STATUS_IN_TRANSIT,
)
MAX_QUANTITY = 1000
MAX_TEXT = 200
NANOS = 1_000_000_000
CURRENCY = re.compile(r"[A-Z]{3}")  # fullmatch: `$` also accepts a trailing newline

# The transitions orders itself makes; fulfillment owns PROCESSING..RECEIVED.
ORDERS_TRANSITIONS: dict[int, set[int]] = {
    Status.ORDER_STATUS_APPROVED: {Status.ORDER_STATUS_CREATED},
    Status.ORDER_STATUS_REJECTED: {Status.ORDER_STATUS_CREATED},
    Status.ORDER_STATUS_CANCELLED: {
        Status.ORDER_STATUS_CREATED,
        Status.ORDER_STATUS_APPROVED,
        Status.ORDER_STATUS_PROCESSING,
    },
}
FULFILLMENT_REQUESTED = {Status.ORDER_STATUS_APPROVED, Status.ORDER_STATUS_PROCESSING}


def status_name(status: int) -> str:
    """For messages: the status without its ORDER_STATUS_ prefix."""
    return statuses.status_name(status, short=True)


def _money_nanos(m: money_pb2.Money) -> int:
    return m.units * NANOS + m.nanos


def validate_items(items: list[common_pb2.LineItem], v: Violations, path: str) -> None:
    if not items:
        v.add(path, "an order needs at least one item")
    if len(items) > MAX_ITEMS:
        v.add(path, f"at most {MAX_ITEMS} items")
    currencies = set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        if not 1 <= item.quantity <= MAX_QUANTITY:
            v.add(f"{p}.quantity", f"must be between 1 and {MAX_QUANTITY}")
        product = item.product
        for field in ("id", "title"):
            value = getattr(product, field)
            if not value.strip():
                v.add(f"{p}.product.{field}", "is required")
            elif len(value) > MAX_TEXT:
                v.add(f"{p}.product.{field}", f"must be at most {MAX_TEXT} characters")
        if len(product.description) > 2000:
            v.add(f"{p}.product.description", "must be at most 2000 characters")
        price = product.price
        if not CURRENCY.fullmatch(price.currency_code):
            v.add(f"{p}.product.price.currency_code", "must be an ISO 4217 code, e.g. USD")
        currencies.add(price.currency_code)
        if not -NANOS < price.nanos < NANOS or (price.units > 0 and price.nanos < 0):
            v.add(
                f"{p}.product.price.nanos", "must be within (-1e9, 1e9) and agree with units' sign"
            )
        elif _money_nanos(price) <= 0:
            v.add(f"{p}.product.price", "must be positive")
        elif price.units > 10**9:
            v.add(f"{p}.product.price.units", "is too large")
    if len(currencies) > 1:
        v.add(path, "all items must be priced in one currency")
    size = sum(item.ByteSize() for item in items)
    if size > MAX_ORDER_BYTES:
        v.add(path, f"the items take {size} bytes; an order takes at most {MAX_ORDER_BYTES}")


def total_of(items: list[common_pb2.LineItem]) -> money_pb2.Money:
    nanos = sum(_money_nanos(i.product.price) * i.quantity for i in items)
    currency = items[0].product.price.currency_code if items else ""
    return money_pb2.Money(currency_code=currency, units=nanos // NANOS, nanos=nanos % NANOS)


def _append_status(order: Order, status: int, when: datetime, note: str = "") -> None:
    entry = order.status_events.add(status=status, note=note)
    entry.time.FromDatetime(when)
    order.status = Status.ValueType(status)


CHOSEN_ID_SEPARATOR = "."
"""Between the customer's id and the id they chose; neither may hold it (svckit.ids)."""


def chosen_order_id(customer_id: str, chosen: str) -> str:
    """The id of an order whose customer chose `chosen`: scoped to that customer, so no
    customer can take an id another will want, nor learn from ALREADY_EXISTS which ids
    another has used. Server-made ids (hex, no separator) never take this shape."""
    return f"{customer_id}{CHOSEN_ID_SEPARATOR}{chosen}"


def check_open_orders(customer_id: str, open_orders: int) -> None:
    """The customer's quota of open orders, before a new one is placed."""
    if open_orders >= MAX_OPEN_ORDERS:
        raise ResourceExhausted(
            f"customer {customer_id} has {open_orders} open orders, the most one may have "
            f"({MAX_OPEN_ORDERS}); place more once some are received or cancelled",
            subject=f"customers/{customer_id}/open-orders",
        )


def new_order(
    customer_id: str, draft: Order, order_id: str, now: datetime, *, open_orders: int = 0
) -> Order:
    """A valid order from the client's draft, CREATED; `open_orders`: the customer's now."""
    v = Violations()
    validate_items(list(draft.items), v, "order.items")
    v.raise_if_any()
    check_open_orders(customer_id, open_orders)
    order = Order(order_id=order_id, customer_id=customer_id, version=1)
    order.items.extend(draft.items)
    order.total.CopyFrom(total_of(list(draft.items)))
    order.create_time.FromDatetime(now)
    order.update_time.FromDatetime(now)
    _append_status(order, Status.ORDER_STATUS_CREATED, now)
    return order


def transition(order: Order, to: int, now: datetime, note: str = "") -> Order:
    """One of orders' own transitions; anything else is refused, nothing changes."""
    if order.status not in ORDERS_TRANSITIONS[to]:
        raise FailedPrecondition(
            f"order {order.order_id} is {status_name(order.status)}; "
            f"cannot become {status_name(to)}",
            subject=f"orders/{order.order_id}",
        )
    result = Order()
    result.CopyFrom(order)
    result.version += 1
    result.update_time.FromDatetime(now)
    _append_status(result, to, now, note)
    return result


def shipping_address(copy: orders_pb2.CustomerOrders) -> common_pb2.Address:
    for address in copy.addresses:
        if address.type == common_pb2.ADDRESS_TYPE_SHIPPING:
            return address
    raise FailedPrecondition(
        f"customer {copy.customer_id} has no shipping address",
        subject=f"customers/{copy.customer_id}",
    )


def fulfillment_requested(
    order: Order, customer: orders_pb2.CustomerOrders
) -> events_pb2.FulfillmentRequested:
    event = events_pb2.FulfillmentRequested(
        order_id=order.order_id, version=order.version, customer_id=order.customer_id
    )
    event.items.extend(order.items)
    event.name.CopyFrom(customer.name)
    event.contact.CopyFrom(customer.contact)
    event.shipping_address.CopyFrom(shipping_address(customer))
    event.approve_time.CopyFrom(order.update_time)
    return event


def fulfillment_cancelled(order: Order, reason: str) -> events_pb2.FulfillmentCancelled:
    event = events_pb2.FulfillmentCancelled(
        order_id=order.order_id, version=order.version, reason=reason
    )
    event.cancel_time.CopyFrom(order.update_time)
    return event


def fulfillment_should_know(
    order: Order, customer: orders_pb2.CustomerOrders | None
) -> events_pb2.FulfillmentRequested | events_pb2.FulfillmentCancelled | None:
    """What fulfillment must have heard about an order (repairs): the cancellation of a
    cancelled order it was asked to fulfil (never a new request: it would ship it), the
    request for an approved one; nothing for an order never approved, or, lacking the
    customer's copy, nothing yet (repair the copy first)."""
    if Status.ORDER_STATUS_APPROVED not in {e.status for e in order.status_events}:
        return None
    if order.status == Status.ORDER_STATUS_CANCELLED:
        return fulfillment_cancelled(order, order.status_events[-1].note)
    if order.status == Status.ORDER_STATUS_REJECTED or customer is None:
        return None
    return fulfillment_requested(order, customer)


def applied_status(
    order: Order, event: fulfillment_events.OrderStatusChanged, now: datetime
) -> Order:
    """The order with a fulfillment status change in its history, kept in time order.

    The current status is the latest entry's: goods that shipped did ship, even
    if a cancellation crossed the shipment in flight.
    """
    result = Order()
    result.CopyFrom(order)
    result.version += 1
    result.update_time.FromDatetime(now)
    entry = common_pb2.StatusEvent(status=event.status, note=event.note)
    entry.time.CopyFrom(event.change_time)
    history = [*result.status_events, entry]
    history.sort(key=lambda e: (e.time.seconds, e.time.nanos))
    del result.status_events[:]
    result.status_events.extend(history)
    result.status = history[-1].status
    return result


FULFILLMENT_OWNED = {
    Status.ORDER_STATUS_PROCESSING,
    Status.ORDER_STATUS_SHIPPED,
    Status.ORDER_STATUS_IN_TRANSIT,
    Status.ORDER_STATUS_RECEIVED,
}


def without_fulfillment_history(order: Order, now: datetime) -> Order:
    """The order as orders alone made it: fulfillment's entries removed (for a rebuild)."""
    result = Order()
    result.CopyFrom(order)
    kept = [e for e in result.status_events if e.status not in FULFILLMENT_OWNED]
    del result.status_events[:]
    result.status_events.extend(kept)
    result.status = kept[-1].status if kept else Status.ORDER_STATUS_UNSPECIFIED
    result.version += 1
    result.update_time.FromDatetime(now)
    return result


def check_status_event(event: fulfillment_events.OrderStatusChanged) -> None:
    if not event.order_id or event.version <= 0:
        raise PoisonEvent("OrderStatusChanged needs order_id and a positive version")
    if event.status not in FULFILLMENT_OWNED:
        raise PoisonEvent(f"fulfillment cannot set status {event.status}")


def check_customer_event(
    event: accounts_events.CustomerChanged | accounts_events.CustomerDeleted,
) -> None:
    if not event.customer_id or event.version <= 0:
        raise PoisonEvent(f"{type(event).__name__} needs customer_id and a positive version")


def customer_copy(event: accounts_events.CustomerChanged) -> orders_pb2.CustomerOrders:
    copy = orders_pb2.CustomerOrders(customer_id=event.customer_id, customer_version=event.version)
    copy.name.CopyFrom(event.name)
    copy.contact.CopyFrom(event.contact)
    copy.addresses.extend(event.addresses)
    return copy
