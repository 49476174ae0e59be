"""What each owner republishes for a repair (pure rules), and the republish loop of
svckit.admin: re-decided when another writer came first, the relay woken only for what was
queued."""

from __future__ import annotations

from datetime import UTC, datetime

from accounts_svc import domain as accounts_domain
from orders_svc import domain as orders_domain
from storefront.accounts.v1 import accounts_pb2, events_pb2
from storefront.orders.v1 import events_pb2 as orders_events
from storefront.orders.v1 import orders_pb2
from storefront_cli.demo import PEOPLE, catalog_copy, customer_draft, order_draft
from svckit.admin import Verdict, republish_each
from svckit.saving import LOST, Lost

NOW = datetime(2026, 5, 1, tzinfo=UTC)
Status = orders_domain.Status


def copy_of_customer() -> orders_pb2.CustomerOrders:
    draft = customer_draft(PEOPLE[0])
    copy = orders_pb2.CustomerOrders(customer_id="c1")
    copy.name.CopyFrom(draft.name)
    copy.contact.CopyFrom(draft.contact)
    copy.addresses.extend(draft.addresses)
    return copy


def order_through(*statuses: int) -> orders_pb2.Order:
    order = orders_domain.new_order("c1", order_draft((0, 1)), catalog_copy(), "o1", NOW)
    for status in statuses:
        order = orders_domain.transition(order, status, NOW, note=f"to {status}")
    return order


def test_orders_never_re_requests_fulfillment_of_a_cancelled_order() -> None:
    cancelled = order_through(Status.ORDER_STATUS_APPROVED, Status.ORDER_STATUS_CANCELLED)
    event = orders_domain.fulfillment_should_know(cancelled, copy_of_customer())
    assert isinstance(event, orders_events.FulfillmentCancelled)
    assert (event.order_id, event.version) == ("o1", cancelled.version)


def test_orders_re_requests_fulfillment_of_an_approved_order() -> None:
    approved = order_through(Status.ORDER_STATUS_APPROVED)
    event = orders_domain.fulfillment_should_know(approved, copy_of_customer())
    assert isinstance(event, orders_events.FulfillmentRequested)
    assert event.contact.email == copy_of_customer().contact.email


def test_orders_has_nothing_for_fulfillment_before_approval_or_without_the_copy() -> None:
    created = order_through()
    assert orders_domain.fulfillment_should_know(created, copy_of_customer()) is None
    rejected = order_through(Status.ORDER_STATUS_REJECTED)
    assert orders_domain.fulfillment_should_know(rejected, copy_of_customer()) is None
    never_approved = order_through(Status.ORDER_STATUS_CANCELLED)
    assert orders_domain.fulfillment_should_know(never_approved, copy_of_customer()) is None
    approved = order_through(Status.ORDER_STATUS_APPROVED)
    assert orders_domain.fulfillment_should_know(approved, None) is None


def test_accounts_republishes_a_tombstone_as_its_deletion_at_its_own_version() -> None:
    live = accounts_domain.new_customer(customer_draft(PEOPLE[1]), "c1", NOW)
    changed = accounts_domain.current_state(live, deleted=False, now=NOW)
    assert isinstance(changed, events_pb2.CustomerChanged) and changed.version == live.version
    tombstone = accounts_pb2.Customer(id="c1", version=live.version + 1)
    gone = accounts_domain.current_state(tombstone, deleted=True, now=NOW)
    assert isinstance(gone, events_pb2.CustomerDeleted)
    # The deletion event already had this version: consumers see a duplicate, not a new one.
    assert gone.version == accounts_domain.customer_deleted(live, NOW).version


async def test_republish_each_retries_a_lost_race_and_wakes_the_relay_for_what_it_queued() -> None:
    attempts: dict[str, int] = {}
    notified: list[str] = []

    async def decide(aggregate_id: str) -> Verdict | Lost:
        attempts[aggregate_id] = attempts.get(aggregate_id, 0) + 1
        if aggregate_id == "raced" and attempts[aggregate_id] == 1:
            return LOST  # another writer moved the version: read and decide again
        return {"gone": Verdict.NOT_FOUND, "idle": Verdict.NOTHING_TO_PUBLISH}.get(
            aggregate_id, Verdict.QUEUED
        )

    done = await republish_each(["a", "raced", "gone", "idle"], decide, notified.append)
    assert done.queued == ["a", "raced"]
    assert done.not_found == ["gone"] and done.nothing_to_publish == ["idle"]
    assert attempts == {"a": 1, "raced": 2, "gone": 1, "idle": 1} and notified == ["a", "raced"]
