"""NUL characters and strings past the generic budget are refused in any string field, at any
depth, with the fields named."""

from __future__ import annotations

import grpc
import pytest

from storefront.accounts.v1 import accounts_pb2
from storefront.orders.v1 import orders_pb2
from svckit.errors import InvalidArgument
from svckit.text import MAX_FIELD_CHARS, has_bad_text, refuse_bad_text, text_violations


def test_clean_messages_pass() -> None:
    customer = accounts_pb2.Customer(id="c-1")
    customer.name.first_name = "Ada"
    customer.addresses.add(city="Sunrise")
    refuse_bad_text(accounts_pb2.CreateCustomerRequest(customer=customer))


def test_nul_is_found_in_nested_repeated_and_top_level_fields() -> None:
    customer = accounts_pb2.Customer(id="c\x001")
    customer.name.first_name = "A\x00da"
    customer.addresses.add(city="ok")
    customer.addresses.add(city="Sun\x00rise")
    request = accounts_pb2.CreateCustomerRequest(customer=customer, customer_id="x\x00")
    assert sorted(v.field for v in text_violations(request)) == [
        "customer.addresses[1].city",
        "customer.id",
        "customer.name.first_name",
        "customer_id",
    ]


def test_refusal_is_invalid_argument_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        refuse_bad_text(orders_pb2.GetOrderRequest(order_id="o\x00"))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in err.value.violations] == ["order_id"]


def test_cheap_check_agrees_with_the_paths() -> None:
    clean = accounts_pb2.CreateCustomerRequest(customer_id="c")
    dirty = accounts_pb2.CreateCustomerRequest()
    dirty.customer.addresses.add(city="a\x00")
    assert not has_bad_text(clean) and text_violations(clean) == []
    assert has_bad_text(dirty)
    assert [v.field for v in text_violations(dirty)] == ["customer.addresses[0].city"]


def test_a_string_past_the_budget_is_refused_naming_the_field() -> None:
    """Issue 25 finding 3: a 3.8 MB e-mail reached the domain's regex; now any string past the
    generic budget is refused before a handler runs."""
    request = accounts_pb2.CreateCustomerRequest()
    request.customer.contact.email = "a" * (MAX_FIELD_CHARS + 1) + "@example.com"
    request.customer.name.first_name = "x" * MAX_FIELD_CHARS  # at the budget: fine
    with pytest.raises(InvalidArgument) as err:
        refuse_bad_text(request)
    assert [(v.field, v.description) for v in err.value.violations] == [
        ("customer.contact.email", f"must be at most {MAX_FIELD_CHARS} characters")
    ]
