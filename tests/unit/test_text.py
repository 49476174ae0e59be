"""NUL characters are refused in any string field, at any depth, with the fields named."""

from __future__ import annotations

import grpc
import pytest

from storefront.accounts.v1 import accounts_pb2
from storefront.orders.v1 import orders_pb2
from svckit.errors import InvalidArgument
from svckit.text import has_nul, nul_fields, refuse_nul


def test_clean_messages_pass() -> None:
    customer = accounts_pb2.Customer(id="c-1")
    customer.name.first_name = "Ada"
    customer.addresses.add(city="Sunrise")
    refuse_nul(accounts_pb2.CreateCustomerRequest(customer=customer))


def test_nul_is_found_in_nested_repeated_and_top_level_fields() -> None:
    customer = accounts_pb2.Customer(id="c\x001")
    customer.name.first_name = "A\x00da"
    customer.addresses.add(city="ok")
    customer.addresses.add(city="Sun\x00rise")
    request = accounts_pb2.CreateCustomerRequest(customer=customer, customer_id="x\x00")
    assert sorted(nul_fields(request)) == [
        "customer.addresses[1].city",
        "customer.id",
        "customer.name.first_name",
        "customer_id",
    ]


def test_refusal_is_invalid_argument_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        refuse_nul(orders_pb2.GetOrderRequest(order_id="o\x00"))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in err.value.violations] == ["order_id"]


def test_cheap_check_agrees_with_the_paths() -> None:
    clean = accounts_pb2.CreateCustomerRequest(customer_id="c")
    dirty = accounts_pb2.CreateCustomerRequest()
    dirty.customer.addresses.add(city="a\x00")
    assert not has_nul(clean) and nul_fields(clean) == []
    assert has_nul(dirty) and nul_fields(dirty) == ["customer.addresses[0].city"]
