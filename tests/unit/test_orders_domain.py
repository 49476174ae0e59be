"""Orders' pure rules (orders_svc/domain.py): item validation, pricing from the catalog's
copy and totals, orders' own
transitions (every pair), status changes from fulfillment kept in time order, the rebuild's
stripping, and what makes a consumed event poison."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from orders_svc import domain
from orders_svc.domain import CopyOutcome, HeldCopy
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import events_pb2 as fulfillment_events
from storefront.orders.v1 import orders_pb2
from storefront_cli.demo import catalog_copy, order_draft
from svckit import statuses
from svckit.envelope import PoisonEvent
from svckit.errors import FailedPrecondition, InvalidArgument, Violations

NOW = datetime(2026, 5, 1, tzinfo=UTC)
Status = domain.Status
STATUSES = [s for s in Status.values() if s != Status.ORDER_STATUS_UNSPECIFIED]
APPROVED = Status.ORDER_STATUS_APPROVED
CATALOG = catalog_copy()


def order_in(status: int) -> orders_pb2.Order:
    order = domain.new_order("c-1", order_draft((0, 2), (1, 1)), CATALOG, "o-1", NOW)
    order.status = Status.ValueType(status)
    return order


def test_a_new_order_is_created_at_version_1_with_its_total() -> None:
    order = domain.new_order("c-1", order_draft((0, 2), (1, 1)), CATALOG, "o-1", NOW)
    assert (order.version, order.status) == (1, Status.ORDER_STATUS_CREATED)
    # 2 x 249.99 + 1 x 89.50
    assert (order.total.currency_code, order.total.units, order.total.nanos) == (
        "USD",
        589,
        480_000_000,
    )
    assert [e.status for e in order.status_events] == [Status.ORDER_STATUS_CREATED]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda i: setattr(i, "quantity", 0), "order.items[0].quantity"),
        (lambda i: setattr(i.product, "id", " "), "order.items[0].product.id"),
        (lambda i: setattr(i.product, "id", "x" * 201), "order.items[0].product.id"),
    ],
)
def test_bad_items_are_refused_naming_the_field(
    change: Callable[[common_pb2.LineItem], object], field: str
) -> None:
    draft = order_draft((0, 1))
    change(draft.items[0])
    with pytest.raises(InvalidArgument) as refused:
        domain.new_order("c-1", draft, CATALOG, "o-1", NOW)
    assert any(field in v.field for v in refused.value.violations)


def test_an_order_needs_items_in_one_currency() -> None:
    with pytest.raises(InvalidArgument):
        domain.new_order("c-1", orders_pb2.Order(), CATALOG, "o-1", NOW)
    catalog = catalog_copy()
    catalog["sku-200"].price.currency_code = "EUR"
    with pytest.raises(FailedPrecondition) as refused:
        domain.new_order("c-1", order_draft((0, 1), (1, 1)), catalog, "o-1", NOW)
    assert "several currencies" in refused.value.message


def test_a_client_sent_title_and_price_are_replaced_by_the_catalogs() -> None:
    draft = order_draft((2, 1))
    draft.items[0].product.title = "free"
    draft.items[0].product.price.currency_code = "EUR"
    draft.items[0].product.price.units = 0
    draft.items[0].product.price.nanos = 10_000_000
    order = domain.new_order("c-1", draft, CATALOG, "o-1", NOW)
    assert order.items[0].product == common_pb2.Product(
        id="sku-300",
        title=CATALOG["sku-300"].title,
        description=CATALOG["sku-300"].description,
        price=CATALOG["sku-300"].price,
    )
    assert order.total == CATALOG["sku-300"].price


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(STATUSES, domain.ORDERS_TRANSITIONS))
)
def test_orders_own_transitions_every_pair(current: int, target: int) -> None:
    order = order_in(current)
    if current in domain.ORDERS_TRANSITIONS[target]:
        moved = domain.transition(order, target, NOW, note="why")
        assert (moved.status, moved.version) == (target, order.version + 1)
        assert moved.status_events[-1].note == "why"
        assert order.status == current  # the input is not changed
    else:
        with pytest.raises(FailedPrecondition):
            domain.transition(order, target, NOW)


def status_change(
    status: int, at: datetime, version: int = 2
) -> fulfillment_events.OrderStatusChanged:
    event = fulfillment_events.OrderStatusChanged(
        order_id="o-1", version=version, status=Status.ValueType(status)
    )
    event.change_time.FromDatetime(at)
    return event


def test_status_changes_are_kept_in_time_order_and_the_latest_is_current() -> None:
    order = domain.transition(order_in(Status.ORDER_STATUS_CREATED), APPROVED, NOW)
    shipped = status_change(Status.ORDER_STATUS_SHIPPED, NOW + timedelta(minutes=2), 3)
    processing = status_change(Status.ORDER_STATUS_PROCESSING, NOW + timedelta(minutes=1), 2)
    order = domain.applied_status(order, shipped, NOW)  # arrived first
    order = domain.applied_status(order, processing, NOW)
    assert [e.status for e in order.status_events][-2:] == [
        Status.ORDER_STATUS_PROCESSING,
        Status.ORDER_STATUS_SHIPPED,
    ]
    assert order.status == Status.ORDER_STATUS_SHIPPED


def test_a_fulfillment_version_applies_once_and_is_remembered() -> None:
    order = domain.transition(order_in(Status.ORDER_STATUS_CREATED), APPROVED, NOW)
    processing = status_change(Status.ORDER_STATUS_PROCESSING, NOW, 4)
    decided = domain.apply_fulfillment_status(order, [2, 7], processing, NOW)
    assert decided is not None
    updated, applied = decided
    assert updated.status == Status.ORDER_STATUS_PROCESSING
    assert updated.version == order.version + 1
    assert applied == [2, 4, 7]
    assert domain.apply_fulfillment_status(updated, applied, processing, NOW) is None


def test_a_rebuild_strips_only_what_fulfillment_added() -> None:
    order = domain.transition(order_in(Status.ORDER_STATUS_CREATED), APPROVED, NOW)
    order = domain.applied_status(order, status_change(Status.ORDER_STATUS_PROCESSING, NOW), NOW)
    stripped = domain.without_fulfillment_history(order, NOW)
    assert stripped.status == Status.ORDER_STATUS_APPROVED
    assert Status.ORDER_STATUS_PROCESSING not in [e.status for e in stripped.status_events]


def test_events_orders_cannot_interpret_are_poison() -> None:
    with pytest.raises(PoisonEvent):
        domain.check_status_event(status_change(Status.ORDER_STATUS_APPROVED, NOW))  # orders' own
    with pytest.raises(PoisonEvent):
        domain.check_status_event(status_change(Status.ORDER_STATUS_SHIPPED, NOW, version=0))
    domain.check_status_event(status_change(Status.ORDER_STATUS_SHIPPED, NOW))


def test_the_shipping_address_is_the_copys_shipping_one() -> None:
    copy = orders_pb2.CustomerOrders(customer_id="c-1")
    copy.addresses.add(type=common_pb2.ADDRESS_TYPE_BILLING, city="Billtown")
    copy.addresses.add(type=common_pb2.ADDRESS_TYPE_SHIPPING, city="Shipville")
    assert domain.shipping_address(copy).city == "Shipville"


def test_a_note_has_a_size_limit() -> None:
    v = Violations()
    statuses.check_note("x" * statuses.MAX_NOTE, "note", v)
    v.raise_if_any()
    statuses.check_note("x" * (statuses.MAX_NOTE + 1), "note", v)
    with pytest.raises(InvalidArgument, match="note"):
        v.raise_if_any()


# --- copies of customers and products: only forward by version -----------------------------


def _copy(customer_id: str, version: int, city: str) -> orders_pb2.CustomerOrders:
    copy = orders_pb2.CustomerOrders(customer_id=customer_id, customer_version=version)
    copy.addresses.add(city=city)
    return copy


def test_a_copy_moves_only_forward_and_a_same_version_repairs_only_what_differs() -> None:
    held = {"c": HeldCopy(2, _copy("c", 2, "Austin"))}
    outcomes, writes = domain.copy_outcomes(
        held,
        [
            ("c", 1, _copy("c", 1, "Waco")),  # late arrival
            ("c", 2, _copy("c", 2, "Austin")),  # redelivery
            ("new", 1, _copy("new", 1, "Reno")),  # never held
        ],
    )
    assert outcomes == [CopyOutcome.STALE, CopyOutcome.DUPLICATE, CopyOutcome.APPLIED]
    assert set(writes) == {"new"}
    repaired, writes = domain.copy_outcomes(held, [("c", 2, _copy("c", 2, "Dallas"))])
    assert repaired == [CopyOutcome.APPLIED] and writes["c"].content == _copy("c", 2, "Dallas")
    # damaged in the database in a way the content cannot show: the owner's state repairs it
    damaged = {"c": HeldCopy(2, _copy("c", 2, "Austin"), intact=False)}
    outcomes, writes = domain.copy_outcomes(damaged, [("c", 2, _copy("c", 2, "Austin"))])
    assert outcomes == [CopyOutcome.APPLIED] and set(writes) == {"c"}


def test_a_deleted_copy_stays_a_tombstone_against_older_changes() -> None:
    outcomes, writes = domain.copy_outcomes(
        {"c": HeldCopy(1, _copy("c", 1, "Austin"))},
        [("c", 3, None), ("c", 2, _copy("c", 2, "Dallas")), ("c", 3, None)],
    )
    assert outcomes == [CopyOutcome.APPLIED, CopyOutcome.STALE, CopyOutcome.DUPLICATE]
    assert writes == {"c": HeldCopy(3, None)}


def test_a_batch_decides_each_change_on_top_of_the_ones_before_it() -> None:
    changes = [
        ("a", 1, _copy("a", 1, "x")),
        ("a", 3, _copy("a", 3, "y")),
        ("a", 2, _copy("a", 2, "z")),
        ("b", 1, _copy("b", 1, "w")),
    ]
    batch, writes = domain.copy_outcomes({}, changes)
    one_by_one: list[CopyOutcome] = []
    held: dict[str, domain.HeldCopy[orders_pb2.CustomerOrders]] = {}
    for change in changes:
        [outcome], written = domain.copy_outcomes(held, [change])
        one_by_one.append(outcome)
        held.update(written)
    assert (
        batch
        == one_by_one
        == [
            CopyOutcome.APPLIED,
            CopyOutcome.APPLIED,
            CopyOutcome.STALE,
            CopyOutcome.APPLIED,
        ]
    )
    assert writes == held and writes["a"].version == 3
