"""Fulfillment rules. Pure: no I/O, no clock; callers pass the time in.

Fulfillment owns the shipping half of the order lifecycle:
APPROVED -> PROCESSING -> SHIPPED -> IN_TRANSIT -> RECEIVED, one step at a time.
CANCELLED belongs to orders; fulfillment only follows it, and only while the goods
are still in the warehouse.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TypeAlias

from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import events_pb2, fulfillment_pb2
from storefront.orders.v1 import events_pb2 as orders_events_pb2
from svckit import statuses
from svckit.envelope import PoisonEvent
from svckit.errors import FailedPrecondition

Fulfillment = fulfillment_pb2.Fulfillment
FulfillmentRequested = orders_events_pb2.FulfillmentRequested
FulfillmentCancelled = orders_events_pb2.FulfillmentCancelled
Status: TypeAlias = common_pb2.OrderStatus.ValueType

APPROVED = common_pb2.ORDER_STATUS_APPROVED
PROCESSING = common_pb2.ORDER_STATUS_PROCESSING
SHIPPED = common_pb2.ORDER_STATUS_SHIPPED
IN_TRANSIT = common_pb2.ORDER_STATUS_IN_TRANSIT
RECEIVED = common_pb2.ORDER_STATUS_RECEIVED
CANCELLED = common_pb2.ORDER_STATUS_CANCELLED

# The only moves fulfillment makes itself; each status has exactly one successor.
NEXT: dict[Status, Status] = {
    APPROVED: PROCESSING,
    PROCESSING: SHIPPED,
    SHIPPED: IN_TRANSIT,
    IN_TRANSIT: RECEIVED,
}
CANCELLABLE = frozenset({APPROVED, PROCESSING})


def status_name(status: Status) -> str:
    """The enum name, as stored and in messages."""
    return statuses.status_name(status)


def subject(order_id: str) -> str:
    return f"fulfillments/{order_id}"


def validate_requested(event: FulfillmentRequested) -> None:
    """An event without an order id or version names nothing we could ever store."""
    if not event.order_id:
        raise PoisonEvent("FulfillmentRequested without order_id")
    if event.version <= 0:
        raise PoisonEvent(f"FulfillmentRequested for {event.order_id} with version {event.version}")


def validate_cancelled(event: FulfillmentCancelled) -> None:
    """Same rule as for requests: without an order id there is nothing to cancel, ever."""
    if not event.order_id:
        raise PoisonEvent("FulfillmentCancelled without order_id")
    if event.version <= 0:
        raise PoisonEvent(f"FulfillmentCancelled for {event.order_id} with version {event.version}")


def new_fulfillment(event: FulfillmentRequested, now: datetime) -> Fulfillment:
    """Version 1, APPROVED as of the order's approval.

    The history starts at `approve_time` because orders owns APPROVED and states
    when it happened; `now` stands in only if a producer left the time out, so
    the history never starts in 1970.
    """
    validate_requested(event)
    f = Fulfillment(
        order_id=event.order_id,
        customer_id=event.customer_id,
        status=APPROVED,
        version=1,
    )
    f.items.extend(event.items)
    if event.HasField("name"):
        f.name.CopyFrom(event.name)
    if event.HasField("contact"):
        f.contact.CopyFrom(event.contact)
    if event.HasField("shipping_address"):
        f.shipping_address.CopyFrom(event.shipping_address)
    if event.HasField("approve_time"):
        f.create_time.CopyFrom(event.approve_time)
    else:
        f.create_time.FromDatetime(now)
    f.update_time.CopyFrom(f.create_time)
    f.status_events.add(status=APPROVED).time.CopyFrom(f.create_time)
    return f


def transition(current: Fulfillment, target: Status, now: datetime, note: str = "") -> Fulfillment:
    """The fulfillment one step further; anything but the single next step is refused."""
    allowed = NEXT.get(current.status)
    if target != allowed:
        hint = f"only {status_name(allowed)} may follow" if allowed else "no further step"
        raise FailedPrecondition(
            f"fulfillment {current.order_id} is {status_name(current.status)}; "
            f"cannot move to {status_name(target)} ({hint})",
            subject=subject(current.order_id),
        )
    return _with_status(current, target, now, now, note)


class Cancellation(enum.Enum):
    """What a FulfillmentCancelled does to a fulfillment in its current status."""

    APPLIES = "applies"
    ALREADY_CANCELLED = "already_cancelled"
    TOO_LATE = "too_late"


def cancellation(current: Fulfillment) -> Cancellation:
    """Whether orders' cancellation can still stop this fulfillment.

    Once SHIPPED (or later) the goods have left the warehouse: fulfillment cannot
    call them back, so the cancellation is ignored here and the shipment runs its
    course; its status changes keep flowing to orders, which decides what to tell
    the customer. A fulfillment that is already CANCELLED has seen this event.
    """
    if current.status == CANCELLED:
        return Cancellation.ALREADY_CANCELLED
    if current.status in CANCELLABLE:
        return Cancellation.APPLIES
    return Cancellation.TOO_LATE


def cancelled(current: Fulfillment, event: FulfillmentCancelled, now: datetime) -> Fulfillment:
    """CANCELLED, with orders' cancel time and reason in the history.

    Raises FailedPrecondition unless `cancellation(current)` is APPLIES; callers
    ask first and treat the other verdicts as nothing to do.
    """
    validate_cancelled(event)
    verdict = cancellation(current)
    if verdict is not Cancellation.APPLIES:
        raise FailedPrecondition(
            f"fulfillment {current.order_id} is {status_name(current.status)}; "
            "it can no longer be cancelled",
            subject=subject(current.order_id),
        )
    when = event.cancel_time.ToDatetime(UTC) if event.HasField("cancel_time") else now
    return _with_status(current, CANCELLED, when, now, event.reason)


def cancelled_before_requested(event: FulfillmentCancelled, now: datetime) -> Fulfillment:
    """A tombstone: the cancellation of an order whose request has not arrived (parked in the
    DLQ, or reordered by a replay). Stored under the order's id, it makes any later
    FulfillmentRequested for that order a duplicate, so a cancelled order is never shipped."""
    validate_cancelled(event)
    when = event.cancel_time.ToDatetime(UTC) if event.HasField("cancel_time") else now
    f = Fulfillment(order_id=event.order_id, status=CANCELLED, version=1)
    f.create_time.FromDatetime(when)
    f.update_time.FromDatetime(now)
    entry = f.status_events.add(status=CANCELLED, note=event.reason)
    entry.time.FromDatetime(when)
    return f


def _with_status(
    current: Fulfillment, status: Status, happened: datetime, now: datetime, note: str
) -> Fulfillment:
    f = Fulfillment()
    f.CopyFrom(current)
    f.status = status
    f.version = current.version + 1
    f.update_time.FromDatetime(now)
    entry = f.status_events.add(status=status, note=note)
    entry.time.FromDatetime(happened)
    return f


def order_status_changed(f: Fulfillment) -> events_pb2.OrderStatusChanged:
    """The event orders appends to the order's history; its version dedupes redeliveries."""
    event = events_pb2.OrderStatusChanged(
        order_id=f.order_id,
        version=f.version,
        status=f.status,
        note=f.status_events[-1].note if f.status_events else "",
    )
    event.change_time.CopyFrom(f.update_time)
    return event


def published_changes(f: Fulfillment) -> list[events_pb2.OrderStatusChanged]:
    """Every OrderStatusChanged this fulfillment has emitted, rebuilt from its history.

    Each transition appends one entry and adds one to the version, so entry i was
    version i + 1; only the statuses fulfillment owns were published.
    """
    changes = []
    for i, entry in enumerate(f.status_events):
        if entry.status in (PROCESSING, SHIPPED, IN_TRANSIT, RECEIVED):
            event = events_pb2.OrderStatusChanged(
                order_id=f.order_id, version=i + 1, status=entry.status, note=entry.note
            )
            event.change_time.CopyFrom(entry.time)
            changes.append(event)
    return changes
