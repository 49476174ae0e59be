"""The fulfillment state machine: every legal step, every illegal one, cancellation, poison."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format

from fulfillment_svc import domain
from storefront.common.v1 import common_pb2
from storefront.orders.v1 import events_pb2 as orders_events_pb2
from svckit.envelope import PoisonEvent
from svckit.errors import FailedPrecondition

APPROVED_AT = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 5, 2, 10, 30, tzinfo=UTC)
ALL_STATUSES = [s for s in common_pb2.OrderStatus.values() if s]
LEGAL = list(domain.NEXT.items())
ILLEGAL = [
    (current, target)
    for current, target in itertools.product(ALL_STATUSES, common_pb2.OrderStatus.values())
    if domain.NEXT.get(current) != target
]


def requested(**overrides: object) -> orders_events_pb2.FulfillmentRequested:
    body: dict[str, object] = {
        "orderId": "o-1",
        "version": 2,
        "customerId": "c-1",
        "items": [
            {
                "product": {
                    "id": "p-1",
                    "title": "Kettle",
                    "price": {"currencyCode": "USD", "units": "25"},
                },
                "quantity": 2,
            }
        ],
        "name": {"firstName": "Rajesh", "lastName": "Iyer"},
        "contact": {"primaryPhone": "555-666-7777", "email": "rajesh@example.com"},
        "shippingAddress": {
            "type": "ADDRESS_TYPE_SHIPPING",
            "address1": "123 Oak Street",
            "city": "Sunrise",
            "state": "CA",
            "postalCode": "12345",
        },
        "approveTime": "2026-05-01T09:00:00Z",
    }
    body.update(overrides)
    return json_format.ParseDict(body, orders_events_pb2.FulfillmentRequested())


def cancel_event(reason: str = "changed my mind") -> orders_events_pb2.FulfillmentCancelled:
    event = orders_events_pb2.FulfillmentCancelled(order_id="o-1", version=3, reason=reason)
    event.cancel_time.FromDatetime(NOW - timedelta(minutes=5))
    return event


SHIPPING_PATH = [domain.APPROVED, *domain.NEXT.values()]


def in_status(status: domain.Status) -> domain.Fulfillment:
    """A fulfillment that reached `status` the way the service would get there.

    CREATED and REJECTED never occur in fulfillment; they are set directly, as a
    foreign or corrupt document would hold them, to show those are refused too.
    """
    f = domain.new_fulfillment(requested(), NOW)
    if status == domain.CANCELLED:
        return domain.cancelled(f, cancel_event(), NOW)
    if status not in SHIPPING_PATH:
        f.status = status
        return f
    while f.status != status:
        f = domain.transition(f, domain.NEXT[f.status], NOW)
    return f


def test_new_fulfillment_is_approved_version_1_at_approve_time() -> None:
    event = requested()
    f = domain.new_fulfillment(event, NOW)
    assert (f.order_id, f.customer_id, f.status, f.version) == ("o-1", "c-1", domain.APPROVED, 1)
    assert list(f.items) == list(event.items)
    assert (f.name, f.contact, f.shipping_address) == (
        event.name,
        event.contact,
        event.shipping_address,
    )
    assert f.create_time.ToDatetime(UTC) == APPROVED_AT
    assert f.update_time.ToDatetime(UTC) == APPROVED_AT
    assert [(e.status, e.time.ToDatetime(UTC), e.note) for e in f.status_events] == [
        (domain.APPROVED, APPROVED_AT, "")
    ]


def test_new_fulfillment_without_approve_time_starts_now_not_1970() -> None:
    event = requested()
    event.ClearField("approve_time")
    f = domain.new_fulfillment(event, NOW)
    assert f.create_time.ToDatetime(UTC) == NOW
    assert f.status_events[0].time.ToDatetime(UTC) == NOW


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"orderId": ""}, "without order_id"),
        ({"version": 0}, "version 0"),
        ({"version": -4}, "version -4"),
    ],
)
def test_malformed_request_is_poison(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(PoisonEvent, match=match):
        domain.validate_requested(requested(**overrides))
    with pytest.raises(PoisonEvent, match=match):
        domain.new_fulfillment(requested(**overrides), NOW)


def test_malformed_cancellation_is_poison() -> None:
    with pytest.raises(PoisonEvent, match="without order_id"):
        domain.validate_cancelled(orders_events_pb2.FulfillmentCancelled(version=3))
    with pytest.raises(PoisonEvent, match="version 0"):
        domain.validate_cancelled(orders_events_pb2.FulfillmentCancelled(order_id="o-1"))


@pytest.mark.parametrize(
    "current, target",
    LEGAL,
    ids=[f"{domain.status_name(c)}->{domain.status_name(t)}" for c, t in LEGAL],
)
def test_each_legal_step_bumps_version_and_appends_history(
    current: domain.Status, target: domain.Status
) -> None:
    before = in_status(current)
    snapshot = domain.Fulfillment()
    snapshot.CopyFrom(before)
    after = domain.transition(before, target, NOW, note="dock 4")
    assert (after.status, after.version) == (target, before.version + 1)
    assert after.update_time.ToDatetime(UTC) == NOW
    assert list(after.status_events[:-1]) == list(before.status_events)
    last = after.status_events[-1]
    assert (last.status, last.time.ToDatetime(UTC), last.note) == (target, NOW, "dock 4")
    assert before == snapshot


@pytest.mark.parametrize(
    "current, target",
    ILLEGAL,
    ids=[f"{domain.status_name(c)}->{domain.status_name(t)}" for c, t in ILLEGAL],
)
def test_every_other_step_is_refused(current: domain.Status, target: domain.Status) -> None:
    before = in_status(current)
    snapshot = domain.Fulfillment()
    snapshot.CopyFrom(before)
    with pytest.raises(FailedPrecondition) as exc:
        domain.transition(before, target, NOW)
    assert domain.status_name(current) in exc.value.message
    assert exc.value.subject == "fulfillments/o-1"
    assert before == snapshot


def test_the_whole_walk_yields_versions_2_to_5() -> None:
    f = domain.new_fulfillment(requested(), NOW)
    seen = []
    for target in (domain.PROCESSING, domain.SHIPPED, domain.IN_TRANSIT, domain.RECEIVED):
        f = domain.transition(f, target, NOW)
        seen.append((f.status, f.version))
    assert seen == [
        (domain.PROCESSING, 2),
        (domain.SHIPPED, 3),
        (domain.IN_TRANSIT, 4),
        (domain.RECEIVED, 5),
    ]
    assert [e.status for e in f.status_events] == [domain.APPROVED, *(s for s, _ in seen)]


def test_order_status_changed_carries_the_new_state() -> None:
    f = domain.transition(in_status(domain.PROCESSING), domain.SHIPPED, NOW, "UPS 1Z999")
    event = domain.order_status_changed(f)
    assert (event.order_id, event.version, event.status, event.note) == (
        "o-1",
        3,
        domain.SHIPPED,
        "UPS 1Z999",
    )
    assert event.change_time.ToDatetime(UTC) == NOW


@pytest.mark.parametrize("status", [domain.APPROVED, domain.PROCESSING])
def test_cancellation_before_shipping_applies(status: domain.Status) -> None:
    before = in_status(status)
    assert domain.cancellation(before) is domain.Cancellation.APPLIES
    event = cancel_event(reason="out of stock")
    after = domain.cancelled(before, event, NOW)
    assert (after.status, after.version) == (domain.CANCELLED, before.version + 1)
    assert after.update_time.ToDatetime(UTC) == NOW
    last = after.status_events[-1]
    assert (last.status, last.note) == (domain.CANCELLED, "out of stock")
    assert last.time == event.cancel_time


def test_cancellation_without_time_is_recorded_now() -> None:
    event = cancel_event()
    event.ClearField("cancel_time")
    after = domain.cancelled(in_status(domain.APPROVED), event, NOW)
    assert after.status_events[-1].time.ToDatetime(UTC) == NOW


@pytest.mark.parametrize("status", [domain.SHIPPED, domain.IN_TRANSIT, domain.RECEIVED])
def test_cancellation_after_goods_left_is_too_late(status: domain.Status) -> None:
    f = in_status(status)
    assert domain.cancellation(f) is domain.Cancellation.TOO_LATE
    with pytest.raises(FailedPrecondition, match="can no longer be cancelled"):
        domain.cancelled(f, cancel_event(), NOW)


def test_second_cancellation_is_recognised_and_refused() -> None:
    f = in_status(domain.CANCELLED)
    assert domain.cancellation(f) is domain.Cancellation.ALREADY_CANCELLED
    with pytest.raises(FailedPrecondition):
        domain.cancelled(f, cancel_event(), NOW)


@pytest.mark.parametrize("target", ALL_STATUSES)
def test_a_cancelled_fulfillment_never_moves_again(target: domain.Status) -> None:
    with pytest.raises(FailedPrecondition, match="no further step"):
        domain.transition(in_status(domain.CANCELLED), target, NOW)


def test_status_name_tolerates_unknown_numbers() -> None:
    assert domain.status_name(domain.SHIPPED) == "ORDER_STATUS_SHIPPED"
    assert domain.status_name(domain.Status(99)) == "99"
