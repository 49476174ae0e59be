"""AccountsHandlers with in-memory fakes (tests/unit/fakes.py): create, read, list, update
and delete, the events each queues, etags, lost races, and the repair accounts owns; no
server. Card sealing and rotation need the real key vault: tests/integration/test_cards.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import field_mask_pb2

from accounts_svc.handlers import AccountsHandlers
from storefront.accounts.v1 import accounts_pb2
from storefront.accounts.v1 import events_pb2 as accounts_events
from storefront_cli.demo import PEOPLE, customer_draft
from svckit.errors import Aborted, InvalidArgument, NotFound
from svckit.shape import Page
from tests.unit.fakes import FakeCustomers, RecordingNotifier

NOW = datetime(2026, 5, 1, tzinfo=UTC)
EVENTS = [
    accounts_events.CustomerChanged.DESCRIPTOR.full_name,
    accounts_events.CustomerDeleted.DESCRIPTOR.full_name,
]
World = tuple[AccountsHandlers, FakeCustomers, RecordingNotifier]


@pytest.fixture
def world() -> World:
    customers, relay = FakeCustomers(), RecordingNotifier()
    return AccountsHandlers(customers, relay, clock=lambda: NOW), customers, relay


def email_patch(customer_id: str, email: str, etag: str = "") -> accounts_pb2.Customer:
    patch = accounts_pb2.Customer(id=customer_id, etag=etag)
    patch.contact.email = email
    return patch


MASK = field_mask_pb2.FieldMask(paths=["contact.email"])


async def test_a_sign_up_stores_version_1_and_queues_its_state(world: World) -> None:
    handlers, customers, relay = world
    created = await handlers.create_customer(customer_draft(PEOPLE[0]), "c-1")
    assert (created.id, created.version) == ("c-1", 1)
    [event] = [e.message for e in customers.events("c-1", EVENTS)]
    assert isinstance(event, accounts_events.CustomerChanged)
    assert (event.version, event.name.first_name) == (1, "Rajesh")
    assert b"4111111111111111" not in event.SerializeToString()  # cards never travel
    assert relay.notified == ["c-1"]


async def test_bad_input_is_refused_and_stores_nothing(world: World) -> None:
    handlers, customers, relay = world
    broken = customer_draft(PEOPLE[0])
    broken.contact.email = "not-an-email"
    with pytest.raises(InvalidArgument):
        await handlers.create_customer(broken)
    assert customers.state == {} and relay.notified == []


async def test_an_update_moves_the_version_and_queues_the_new_state(world: World) -> None:
    handlers, customers, _ = world
    await handlers.create_customer(customer_draft(PEOPLE[0]), "c-1")
    updated = await handlers.update_customer(email_patch("c-1", "new@example.com"), MASK)
    assert (updated.version, updated.contact.email) == (2, "new@example.com")
    versions = [e.message.version for e in customers.events("c-1", EVENTS)]
    assert versions == [1, 2]


class SealedNumbers(FakeCustomers):
    """Customers whose card numbers cannot be read back."""

    async def get_revealed(self, customer_id: str) -> accounts_pb2.Customer | None:
        raise AssertionError("the card numbers were read")


async def test_an_update_that_leaves_the_cards_alone_does_not_read_their_numbers() -> None:
    customers = SealedNumbers()
    handlers = AccountsHandlers(customers, RecordingNotifier(), clock=lambda: NOW)
    await handlers.create_customer(customer_draft(PEOPLE[0]), "c-1")
    stored = list(customers.state["c-1"].credit_cards)
    updated = await handlers.update_customer(email_patch("c-1", "new@example.com"), MASK)
    assert (updated.version, updated.contact.email) == (2, "new@example.com")
    assert list(customers.state["c-1"].credit_cards) == list(updated.credit_cards) == stored
    with pytest.raises(AssertionError, match="numbers were read"):
        patch = accounts_pb2.Customer(id="c-1")
        patch.credit_cards.extend(stored)
        await handlers.update_customer(patch, field_mask_pb2.FieldMask(paths=["credit_cards"]))


async def test_a_stale_etag_is_aborted_and_changes_nothing(world: World) -> None:
    handlers, customers, _ = world
    created = await handlers.create_customer(customer_draft(PEOPLE[0]), "c-1")
    await handlers.update_customer(email_patch("c-1", "first@example.com"), MASK)
    with pytest.raises(Aborted):
        await handlers.update_customer(email_patch("c-1", "x@example.com", created.etag), MASK)
    assert (await handlers.get_customer("c-1")).contact.email == "first@example.com"
    assert len(customers.outbox["c-1"]) == 2


async def test_without_an_etag_a_lost_race_is_applied_on_the_new_state(world: World) -> None:
    handlers, customers, _ = world
    await handlers.create_customer(customer_draft(PEOPLE[0]), "c-1")
    customers.lose_next = 4  # four other writers came first
    updated = await handlers.update_customer(email_patch("c-1", "late@example.com"), MASK)
    assert updated.contact.email == "late@example.com" and customers.lose_next == 0


async def test_with_an_etag_a_lost_race_is_aborted(world: World) -> None:
    handlers, customers, _ = world
    created = await handlers.create_customer(customer_draft(PEOPLE[0]), "c-1")
    customers.lose_next = 1
    with pytest.raises(Aborted):
        await handlers.update_customer(email_patch("c-1", "x@example.com", created.etag), MASK)


async def test_a_deletion_leaves_a_tombstone_and_queues_the_deletion(world: World) -> None:
    handlers, customers, _ = world
    await handlers.create_customer(customer_draft(PEOPLE[0]), "c-1")
    await handlers.delete_customer("c-1")
    with pytest.raises(NotFound):
        await handlers.get_customer("c-1")
    last = customers.events("c-1", EVENTS)[-1].message
    assert isinstance(last, accounts_events.CustomerDeleted) and last.version == 2
    with pytest.raises(NotFound):
        await handlers.delete_customer("c-1")
    page, _ = await handlers.list_customers(Page(None, 10))
    assert page == []


async def test_republish_sends_the_state_or_the_deletion_at_its_own_version(world: World) -> None:
    handlers, customers, relay = world
    for cid in ("c-1", "c-2"):
        await handlers.create_customer(customer_draft(PEOPLE[0]), cid)
    await handlers.delete_customer("c-2")
    for cid in customers.outbox:
        customers.outbox[cid].clear()  # all published
    relay.notified.clear()
    done = await handlers.republish(["c-1", "c-2", "c-3"])
    assert (done.queued, done.not_found) == (["c-1", "c-2"], ["c-3"])
    [live] = [e.message for e in customers.events("c-1", EVENTS)]
    [gone] = [e.message for e in customers.events("c-2", EVENTS)]
    assert isinstance(live, accounts_events.CustomerChanged) and live.version == 1
    assert isinstance(gone, accounts_events.CustomerDeleted) and gone.version == 2
    assert customers.state["c-2"].version == 2  # a repair changes no version
    assert relay.notified == ["c-1", "c-2"]
