"""Issue 25 findings 1, 3 and 10: what every request goes through before any rule runs
(unknown fields dropped, strings bounded), patterns matched whole, events bounded."""

from __future__ import annotations

import grpc
import pytest
from google.type import money_pb2

from accounts_svc import domain as accounts_domain
from catalog_svc import domain as catalog_domain
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc, events_pb2
from storefront.common.v1 import common_pb2
from svckit.errors import Violations
from svckit.ids import check_client_id
from svckit.interceptors import ServerInterceptor
from svckit.outbox import MAX_EVENT_BYTES, EventTooLarge, outbox_entry
from tests.support import accounts_served
from tests.wire import length_delimited


class Recording(accounts_pb2_grpc.AccountsServiceServicer):
    def __init__(self) -> None:
        self.seen: list[accounts_pb2.CreateCustomerRequest] = []

    async def CreateCustomer(
        self, request: accounts_pb2.CreateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        self.seen.append(request)
        return accounts_pb2.Customer()


async def test_unknown_fields_are_dropped_at_every_depth_before_the_handler() -> None:
    """A client (any transport ends as protobuf here) hides 200 KB in an unknown field of
    `customer.name`: the handler sees none of it, so no CopyFrom carries it into an event."""
    recording = Recording()  # type: ignore[abstract]
    name = common_pb2.PersonName(first_name="Ada").SerializeToString()
    name += length_delimited(999, b"x" * 200_000)
    customer = length_delimited(2, name)  # Customer.name is field 2
    body = length_delimited(1, customer)  # request.customer is field 1
    body += length_delimited(77, b"y" * 10)
    async with accounts_served(recording, ServerInterceptor("test")) as channel:
        call = channel.unary_unary(
            "/storefront.accounts.v1.AccountsService/CreateCustomer",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        await call(body, timeout=10)
    [seen] = recording.seen
    assert seen.customer.name.first_name == "Ada"
    assert seen.ByteSize() < 100
    assert seen.customer.name.SerializeToString() == b"\x12\x03Ada"


@pytest.mark.parametrize("value", ["abc\n", "abc\r\n", "a" * 64, "-abc"])
def test_client_ids_are_matched_whole(value: str) -> None:
    v = Violations()
    check_client_id(value, "customer_id", v)
    assert [f.field for f in v.items] == ["customer_id"]


def contact(**fields: str) -> common_pb2.Contact:
    return common_pb2.Contact(**{"primary_phone": "555-666-7777", "email": "a@b.co", **fields})


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"email": "ada@example.com\n"}, "c.email"),
        ({"primary_phone": "555-666-7777\n"}, "c.primary_phone"),
        ({"secondary_phone": "555-666-7777\n"}, "c.secondary_phone"),
    ],
)
def test_contact_patterns_refuse_a_trailing_newline(fields: dict[str, str], path: str) -> None:
    v = Violations()
    accounts_domain.validate_contact(contact(**fields), v, "c")
    assert [f.field for f in v.items] == [path]


def test_a_zip_code_with_a_trailing_newline_is_refused() -> None:
    address = common_pb2.Address(
        type=common_pb2.ADDRESS_TYPE_SHIPPING,
        address1="1 Main St",
        city="Sunrise",
        state="FL",
        postal_code="12345\n",
    )
    v = Violations()
    accounts_domain.validate_addresses([address], v, "a")
    assert [f.field for f in v.items] == ["a[0].postal_code"]


def test_a_currency_with_a_trailing_newline_is_refused() -> None:
    """Prices are the catalog's (orders prices lines from its copy), so the rule is there."""
    price = money_pb2.Money(currency_code="USD\n", units=1)
    v = Violations()
    catalog_domain.validate_price(price, v, "product.price")
    assert [f.field for f in v.items] == ["product.price.currency_code"]


def test_an_overlong_email_gets_the_length_answer_only() -> None:
    """The pattern never sees a value its length already refused (finding 3)."""
    v = Violations()
    accounts_domain.validate_contact(contact(email="a" * 3_800_000 + "@example.com"), v, "c")
    assert [(f.field, f.description) for f in v.items] == [
        ("c.email", f"must be at most {accounts_domain.MAX_TEXT} characters")
    ]


def test_an_event_past_its_budget_is_refused_when_created() -> None:
    event = events_pb2.CustomerChanged(customer_id="c-1", version=1)
    event.name.first_name = "x" * (MAX_EVENT_BYTES + 1)
    with pytest.raises(EventTooLarge) as err:
        outbox_entry("t", "c-1", event, source="//test", seq=1)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(err.value.message) < 400
    event.name.first_name = "x" * 1000
    assert outbox_entry("t", "c-1", event, source="//test", seq=1)["seq"] == 1
