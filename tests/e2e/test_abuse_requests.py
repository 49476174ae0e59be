"""Issue 25 finding 1 against the whole stack: sign-ups carrying megabytes in a field the protos
do not declare, as a client would send them (native gRPC, gRPC-Web through Envoy), must not
stop the next customers' changes from reaching orders."""

from __future__ import annotations

import asyncio
import http.client

import grpc
import pytest

from storefront.accounts.v1 import accounts_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients, eventually
from storefront_cli.demo import PEOPLE, customer_draft
from tests.support import System, issuer_of, unique
from tests.wire import length_delimited

pytestmark = pytest.mark.e2e

CREATE_CUSTOMER = "/storefront.accounts.v1.AccountsService/CreateCustomer"


def sign_up_with_unknown_field(customer_id: str, unknown_bytes: int) -> bytes:
    """A valid CreateCustomer whose `customer.name` also carries an undeclared field 999."""
    draft = customer_draft(PEOPLE[0])
    name = draft.name.SerializeToString() + length_delimited(999, b"x" * unknown_bytes)
    draft.ClearField("name")
    customer = draft.SerializeToString() + length_delimited(2, name)  # Customer.name is field 2
    # CreateCustomerRequest: customer is field 1, customer_id field 2.
    return length_delimited(1, customer) + length_delimited(2, customer_id.encode())


async def native_sign_up(system: System, customer_id: str, unknown_bytes: int) -> grpc.StatusCode:
    token = issuer_of(system.stack).customer(customer_id)
    async with grpc.aio.insecure_channel(system.target("accounts")) as channel:
        call = channel.unary_unary(
            CREATE_CUSTOMER,
            request_serializer=lambda raw: raw,
            response_deserializer=accounts_pb2.Customer.FromString,
        )
        try:
            created = await call(
                sign_up_with_unknown_field(customer_id, unknown_bytes),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=30,
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
    assert created.name.ByteSize() < 200
    return grpc.StatusCode.OK


def grpc_web_sign_up(system: System, customer_id: str, unknown_bytes: int) -> int:
    """The same through Envoy as a browser's gRPC-Web client frames it: the HTTP status."""
    body = sign_up_with_unknown_field(customer_id, unknown_bytes)
    token = issuer_of(system.stack).customer(customer_id)
    conn = http.client.HTTPConnection("127.0.0.1", system.ports.envoy, timeout=30)
    try:
        conn.request(
            "POST",
            CREATE_CUSTOMER,
            body=b"\0" + len(body).to_bytes(4, "big") + body,
            headers={
                "content-type": "application/grpc-web+proto",
                "x-grpc-web": "1",
                "authorization": f"Bearer {token}",
            },
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


async def test_megabyte_unknown_fields_do_not_stop_other_customers_changes(
    running_system: System, clients: Clients
) -> None:
    # Over the relay's and the broker's limits before the fix (2 MB), and under them (600 KB).
    codes = [
        await native_sign_up(running_system, unique("big"), 2 * 1024 * 1024),
        await native_sign_up(running_system, unique("mid"), 600 * 1024),
    ]
    web = await asyncio.to_thread(grpc_web_sign_up, running_system, unique("web"), 2 * 1024 * 1024)
    # Refused for its size before it is read, or accepted without the unknown field.
    assert codes[0] in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert codes[1] == grpc.StatusCode.OK
    assert web in (200, 413)

    others = []
    for _ in range(5):
        created = await clients.accounts.CreateCustomer(
            accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[1]))
        )
        others.append(created.id)
    for customer_id in others:
        get = orders_pb2.GetCustomerOrdersRequest(customer_id=customer_id)
        await eventually(
            lambda get=get: clients.orders.GetCustomerOrders(get),  # type: ignore[misc]
            timeout=30,
            what=f"customer {customer_id} copied to orders",
        )
