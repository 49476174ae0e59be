"""accounts_svc against the real broker and database, in-process on its own database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import topology
from accounts_svc.main import build
from stack.embedded import EmbeddedStack
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from storefront_cli.clients import channel
from svckit import names
from svckit.app import ServiceApp
from svckit.envelope import Envelope
from tests.support import eventually, read_topic, running, settings_for, tokens_of
from tests.unit.test_accounts_domain import draft

pytestmark = pytest.mark.integration
TOPIC = topology.CUSTOMER_CHANGES
TYPES = ["storefront.accounts.v1.CustomerChanged", "storefront.accounts.v1.CustomerDeleted"]


@pytest.fixture
async def accounts(stack: EmbeddedStack, mongo_db_name: str) -> AsyncIterator[ServiceApp]:
    async with running(build, settings_for(stack, "accounts", mongo_db_name)) as app:
        yield app


@pytest.fixture
async def stub(
    stack: EmbeddedStack, accounts: ServiceApp
) -> AsyncIterator[accounts_pb2_grpc.AccountsServiceStub]:
    async with channel(f"127.0.0.1:{accounts.bound_port}", tokens_of(stack)) as channel_:
        yield accounts_pb2_grpc.AccountsServiceStub(channel_)


async def test_create_update_delete_publish_versioned_events_without_cards(
    stack: EmbeddedStack, accounts: ServiceApp, stub: accounts_pb2_grpc.AccountsServiceStub
) -> None:
    created = await stub.CreateCustomer(accounts_pb2.CreateCustomerRequest(customer=draft()))
    assert created.credit_cards[0].number == "************4242"
    patch = accounts_pb2.Customer(id=created.id, etag=created.etag)
    patch.name.first_name = "Raj"
    mask = field_mask_pb2.FieldMask(paths=["name.first_name"])
    updated = await stub.UpdateCustomer(
        accounts_pb2.UpdateCustomerRequest(customer=patch, update_mask=mask)
    )
    assert (updated.version, updated.name.last_name) == (2, "Iyer")
    await stub.DeleteCustomer(accounts_pb2.DeleteCustomerRequest(customer_id=created.id))

    async def three_events() -> list[Envelope] | None:
        events = await read_topic(stack.kafka, TOPIC, TYPES, key=created.id)
        return events if len(events) >= 3 else None

    events = await eventually(three_events, timeout=30, what="three events")
    assert [(e.type.rsplit(".", 1)[1], e.message.version) for e in events] == [
        ("CustomerChanged", 1),
        ("CustomerChanged", 2),
        ("CustomerDeleted", 3),
    ]
    assert events[1].message.name.first_name == "Raj"
    assert all(e.source == names.source(topology.ACCOUNTS) for e in events)
    for event in events:
        assert b"4242" not in event.message.SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=created.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    async def drained() -> bool | None:
        # Entries leave the document after Kafka acknowledged them: soon after, not before.
        pending = await accounts.db[topology.CUSTOMERS].count_documents(
            {"_outbox.id": {"$exists": True}}
        )
        return True if pending == 0 else None

    await eventually(drained, timeout=30, what="outbox drained")


async def test_stale_etag_is_aborted_and_changes_nothing(
    stub: accounts_pb2_grpc.AccountsServiceStub,
) -> None:
    created = await stub.CreateCustomer(accounts_pb2.CreateCustomerRequest(customer=draft()))
    patch = accounts_pb2.Customer(id=created.id, etag='W/"7"')
    patch.contact.email = "other@example.com"
    mask = field_mask_pb2.FieldMask(paths=["contact.email"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateCustomer(
            accounts_pb2.UpdateCustomerRequest(customer=patch, update_mask=mask)
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    again = await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=created.id))
    assert (again.version, again.contact.email) == (1, created.contact.email)


async def test_invalid_create_lists_field_violations_and_stores_nothing(
    accounts: ServiceApp, stub: accounts_pb2_grpc.AccountsServiceStub
) -> None:
    bad = draft(contact={"primaryPhone": "555-666-7777", "email": "nope"})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateCustomer(accounts_pb2.CreateCustomerRequest(customer=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    request = error_details_pb2.BadRequest()
    assert any(d.Unpack(request) for d in status.details)
    assert [v.field for v in request.field_violations] == ["customer.contact.email"]
    assert await accounts.db[topology.CUSTOMERS].count_documents({}) == 0


async def test_client_chosen_id_makes_create_retry_safe(
    stub: accounts_pb2_grpc.AccountsServiceStub,
) -> None:
    req = accounts_pb2.CreateCustomerRequest(customer=draft(), customer_id="retry-me-1")
    await stub.CreateCustomer(req)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateCustomer(req)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_list_pages_through_everything_once(
    stub: accounts_pb2_grpc.AccountsServiceStub,
) -> None:
    made = {
        (await stub.CreateCustomer(accounts_pb2.CreateCustomerRequest(customer=draft()))).id
        for _ in range(5)
    }
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListCustomers(
            accounts_pb2.ListCustomersRequest(page_size=2, page_token=token)
        )
        assert len(page.customers) <= 2
        seen += [c.id for c in page.customers]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(made)


async def test_oversized_request_is_refused_before_it_reaches_the_handler(
    accounts: ServiceApp, stub: accounts_pb2_grpc.AccountsServiceStub
) -> None:
    big = draft()
    big.addresses[0].description = "x" * (5 * 1024 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateCustomer(accounts_pb2.CreateCustomerRequest(customer=big))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await accounts.db[topology.CUSTOMERS].count_documents({}) == 0


async def test_updates_without_etag_all_succeed_under_concurrent_writers(
    stub: accounts_pb2_grpc.AccountsServiceStub,
) -> None:
    """Issue 12 finding 6: 8 writers, no etag: the server re-reads and re-applies; none is
    told ABORTED, and every update counts."""
    created = await stub.CreateCustomer(accounts_pb2.CreateCustomerRequest(customer=draft()))
    mask = field_mask_pb2.FieldMask(paths=["contact.email"])

    async def writer(w: int) -> list[str]:
        codes = []
        for n in range(10):
            patch = accounts_pb2.Customer(id=created.id)
            patch.contact.email = f"w{w}n{n}@example.com"
            try:
                await stub.UpdateCustomer(
                    accounts_pb2.UpdateCustomerRequest(customer=patch, update_mask=mask)
                )
                codes.append("OK")
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code().name)
        return codes

    results = await asyncio.gather(*(writer(w) for w in range(8)))
    assert [c for codes in results for c in codes] == ["OK"] * 80
    final = await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=created.id))
    assert final.version == 81
