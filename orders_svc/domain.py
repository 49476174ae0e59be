"""Order rules and orders' copy of customers. Pure: no I/O, no clock, no ids."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Generic, NamedTuple, TypeVar

from google.protobuf.message import Message
from google.type import money_pb2

from storefront.accounts.v1 import events_pb2 as accounts_events
from storefront.catalog.v1 import catalog_pb2
from storefront.catalog.v1 import events_pb2 as catalog_events
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import events_pb2 as fulfillment_events
from storefront.orders.v1 import events_pb2, orders_pb2
from svckit import statuses
from svckit.envelope import PoisonEvent
from svckit.errors import FailedPrecondition, FieldViolation, ResourceExhausted, Violations

Order = orders_pb2.Order
Status = common_pb2.OrderStatus
ProductCopy = catalog_events.ProductChanged
"""Orders' copy of a product: the catalog's last ProductChanged for it (time left out)."""
ProductState = catalog_pb2.ProductState

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
    """What a client sends per line: a product id and a quantity. Anything else it sets on
    the line's product (title, description, price) is ignored: the catalog prices orders."""
    if not items:
        v.add(path, "an order needs at least one item")
    if len(items) > MAX_ITEMS:
        v.add(path, f"at most {MAX_ITEMS} items")
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        if not 1 <= item.quantity <= MAX_QUANTITY:
            v.add(f"{p}.quantity", f"must be between 1 and {MAX_QUANTITY}")
        product_id = item.product.id
        if not product_id.strip():
            v.add(f"{p}.product.id", "is required")
        elif len(product_id) > MAX_TEXT:
            v.add(f"{p}.product.id", f"must be at most {MAX_TEXT} characters")


def ordered_product_ids(draft: Order) -> list[str]:
    """The catalog entries an order draft names, each once (the lines beyond MAX_ITEMS are
    refused anyway, so never looked up)."""
    return list(dict.fromkeys(i.product.id for i in draft.items[:MAX_ITEMS] if i.product.id))


def priced_items(
    items: list[common_pb2.LineItem], catalog: Mapping[str, ProductCopy], path: str
) -> list[common_pb2.LineItem]:
    """Each line with its product's title, description and unit price as orders' copy of the
    catalog holds them now; a line naming a product the copy does not know, or one no longer
    for sale, is refused (FAILED_PRECONDITION naming every such line), and so is an order
    whose products are priced in more than one currency."""
    refused: list[FieldViolation] = []
    priced = []
    for i, item in enumerate(items):
        subject = f"{path}[{i}].product.id"
        product = catalog.get(item.product.id)
        if product is None:
            refused.append(
                FieldViolation(subject, f"product {item.product.id!r} is not in the catalog")
            )
            continue
        if product.state != ProductState.PRODUCT_STATE_ACTIVE:
            refused.append(FieldViolation(subject, f"product {item.product.id!r} is discontinued"))
            continue
        line = common_pb2.LineItem(quantity=item.quantity)
        line.product.id, line.product.title = product.product_id, product.title
        line.product.description = product.description
        line.product.price.CopyFrom(product.price)
        priced.append(line)
    if not refused and len({i.product.price.currency_code for i in priced}) > 1:
        refused.append(FieldViolation(path, "the products are priced in several currencies"))
    if refused:
        first, *more = refused
        raise FailedPrecondition(first.description, subject=first.field, type_="CATALOG", more=more)
    return priced


def check_size(items: list[common_pb2.LineItem], path: str) -> None:
    """INVALID_ARGUMENT for an order whose priced lines take more than MAX_ORDER_BYTES."""
    size = sum(item.ByteSize() for item in items)
    if size > MAX_ORDER_BYTES:
        v = Violations()
        v.add(path, f"the items take {size} bytes; an order takes at most {MAX_ORDER_BYTES}")
        v.raise_if_any()


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


def check_draft(draft: Order) -> None:
    """INVALID_ARGUMENT, naming each field, for an order draft no catalog could price."""
    v = Violations()
    validate_items(list(draft.items), v, "order.items")
    v.raise_if_any()


def new_order(
    customer_id: str,
    draft: Order,
    catalog: Mapping[str, ProductCopy],
    order_id: str,
    now: datetime,
    *,
    open_orders: int = 0,
) -> Order:
    """The order placed from `draft`, CREATED, priced from `catalog` (orders' copy of it) as
    it is now: a later change in the catalog never touches it. `open_orders`: the
    customer's now."""
    check_draft(draft)
    check_open_orders(customer_id, open_orders)
    items = priced_items(list(draft.items), catalog, "order.items")
    check_size(items, "order.items")
    order = Order(order_id=order_id, customer_id=customer_id, version=1)
    order.items.extend(items)
    order.total.CopyFrom(total_of(items))
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


def apply_fulfillment_status(
    order: Order,
    applied: list[int],
    event: fulfillment_events.OrderStatusChanged,
    now: datetime,
) -> tuple[Order, list[int]] | None:
    """What a fulfillment status change does to an order that has had the fulfillment versions
    `applied`: None when this version was applied already (a redelivery changes nothing), else
    the order with the change in its history and the versions applied with it."""
    if event.version in applied:
        return None
    return applied_status(order, event, now), sorted([*applied, event.version])


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


def order_changed(order: Order) -> events_pb2.OrderChanged:
    """The fact every change of an order states on orders.order.change: the order as it is."""
    event = events_pb2.OrderChanged(
        order_id=order.order_id,
        version=order.version,
        customer_id=order.customer_id,
        status=order.status,
    )
    event.order.CopyFrom(order)
    event.change_time.CopyFrom(order.update_time)
    return event


def check_product_event(event: catalog_events.ProductChanged) -> None:
    if not event.product_id or event.version <= 0:
        raise PoisonEvent("ProductChanged needs product_id and a positive version")


def product_copy(event: catalog_events.ProductChanged) -> ProductCopy:
    copy = ProductCopy()
    copy.CopyFrom(event)
    copy.ClearField("change_time")
    return copy


# --- Copies of other services' aggregates (customers, products) --------------------------


class CopyOutcome(enum.Enum):
    """What one event does to orders' copy of a customer or a product."""

    APPLIED = "applied"
    """Newer than the copy held, or the same version with other content (the owner's
    republished state repairing a damaged copy): written."""
    DUPLICATE = "duplicate"
    """The same version and content as held: nothing to write."""
    STALE = "stale"
    """Older than the copy held (a late arrival): nothing to write."""


CopyContent = TypeVar("CopyContent", bound=Message)
CopyChange = tuple[str, int, CopyContent | None]
"""An owner's event for a copy: the aggregate's id, its version, its content (None: deleted)."""


class HeldCopy(NamedTuple, Generic[CopyContent]):
    """A copy as held."""

    version: int
    content: CopyContent | None
    """None: a tombstone, kept so a late change cannot bring a deleted aggregate back."""
    intact: bool = True
    """False: the stored copy is not what its content would store (damaged in the database,
    e.g. a field the content cannot hold): the owner's state at the same version repairs it."""


def copy_outcomes(
    held: Mapping[str, HeldCopy[CopyContent]], changes: Sequence[CopyChange[CopyContent]]
) -> tuple[list[CopyOutcome], dict[str, HeldCopy[CopyContent]]]:
    """Each change's outcome, in order, as if applied one by one on top of `held` (by id), and
    the state each changed copy ends in (what to write). A copy only moves forward by version."""
    state = dict(held)
    outcomes: list[CopyOutcome] = []
    writes: dict[str, HeldCopy[CopyContent]] = {}
    for copy_id, version, content in changes:
        have = state.get(copy_id)
        same_version = have is not None and version == have.version
        if (
            have is None
            or version > have.version
            or (same_version and (content != have.content or not have.intact))
        ):
            state[copy_id] = writes[copy_id] = HeldCopy(version, content)
            outcomes.append(CopyOutcome.APPLIED)
        elif same_version:
            outcomes.append(CopyOutcome.DUPLICATE)
        else:
            outcomes.append(CopyOutcome.STALE)
    return outcomes, writes
