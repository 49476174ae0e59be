"""The real grpcurl binary against the running services, as docs/api.md tells people to use it.

Each service is discovered through its own gRPC server reflection (list, describe, calls with
JSON in and out). Envoy does not route reflection, by design (three servers would answer it),
so the native gRPC call through Envoy's port gives grpcurl the descriptor set instead.

grpcurl's JSON replies are read back into the generated message types with
`json_format.ParseDict`, which accepts both JSON spellings of a field name; the spelling itself
is checked only where it is the point of the test.

Every call carries `-H "authorization: Bearer ..."`, as docs/api.md shows, with a token of a
principal the policy allows for the call (tests.support.tokens_of).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import descriptor_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection_pb2

from bench import loadgen
from stack import tools
from storefront.accounts.v1 import accounts_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import TokenFor, eventually
from tests.e2e.conftest import System
from tests.support import ensure_tools, http_rules, tokens_of, wait_for_copies

pytestmark = pytest.mark.e2e

PROTOSET = tools.REPO_ROOT / "gen" / "storefront.binpb"
ACCOUNTS = "storefront.accounts.v1.AccountsService"
ORDERS = "storefront.orders.v1.OrdersService"
FULFILLMENT = "storefront.fulfillment.v1.FulfillmentService"
CATALOG = "storefront.catalog.v1.CatalogService"
SERVICE_NAMES = {
    "accounts": ACCOUNTS,
    "orders": ORDERS,
    "fulfillment": FULFILLMENT,
    "catalog": CATALOG,
}
HEALTH = "grpc.health.v1.Health"
NOT_FOUND, INVALID_ARGUMENT = 5, 3

Json = dict[str, Any]
M = TypeVar("M", bound=Message)
REQUESTS = {rule.method: rule.request_class for rule in http_rules()}
TOKENS: list[TokenFor] = []


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    ensure_tools("grpcurl", "ghz")


@pytest.fixture(autouse=True)
def tokens(running_system: System) -> None:
    """The running system's issuer signs the tokens `call` sends."""
    TOKENS[:] = [tokens_of(running_system.stack)]


def authorization(method: str, request: Json) -> list[str]:
    """grpcurl's -H option with the token this call needs (none for health)."""
    cls = REQUESTS.get(f"/{method}")
    message = json_format.ParseDict(request, cls()) if cls else None
    token = TOKENS[0](f"/{method}", message) if message is not None else None
    return ["-H", f"authorization: Bearer {token}"] if token else []


def parsed(reply: Json, cls: Callable[[], M]) -> M:
    """grpcurl's JSON as the generated message (either JSON spelling of field names)."""
    return json_format.ParseDict(reply, cls())


class GrpcurlError(Exception):
    """A call that ended with a non-OK gRPC status (grpcurl exits with 64 + the code)."""

    def __init__(self, code: int, status: Json) -> None:
        super().__init__(f"gRPC status {code}: {status.get('message', '')}")
        self.code = code
        self.status = parsed(status, status_pb2.Status)  # -format-error prints it as JSON

    def detail(self, cls: Callable[[], M]) -> M:
        """The one detail of type `cls` (google.rpc.BadRequest, ErrorInfo ...)."""
        found = [d for d in self.status.details if d.Is(cls().DESCRIPTOR)]
        assert len(found) == 1, self.status
        message = cls()
        found[0].Unpack(message)
        return message


async def grpcurl(*args: str) -> str:
    """Run grpcurl (plaintext, bounded); its stdout, or GrpcurlError for a gRPC error."""
    argv = [str(tools.path("grpcurl")), "-plaintext", "-max-time", "20", "-format-error", *args]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30)
    if done.returncode > 64:
        raise GrpcurlError(done.returncode - 64, json.loads(done.stderr))
    assert done.returncode == 0, f"grpcurl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


async def call(target: str, method: str, request: Json, *options: str) -> Json:
    """One unary call with a JSON request; the JSON reply."""
    auth = authorization(method, request)
    return json.loads(await grpcurl(*options, *auth, "-d", json.dumps(request), target, method))


async def found_or_none(probe: Callable[[], Any]) -> Any:
    """For `eventually`: NOT_FOUND (not replicated yet) means "not yet"."""
    try:
        return await probe()
    except GrpcurlError as error:
        if error.code == NOT_FOUND:
            return None
        raise


async def create_customer(accounts: str, orders: str, request: Json, *options: str) -> Json:
    """CreateCustomer, then wait for orders' copy so that nothing is left in flight."""
    created = await call(accounts, f"{ACCOUNTS}/CreateCustomer", request, *options)

    async def copy() -> Json:
        request = {"customerId": created["id"]}
        return await call(orders, f"{ORDERS}/GetCustomerOrders", request, *options)

    await eventually(lambda: found_or_none(copy), what="orders' copy")
    return created


def a_customer() -> Json:
    return {
        "name": {"title": "Ms.", "firstName": "Ada", "lastName": "Lovelace"},
        "contact": {"primaryPhone": "555-010-0199", "email": "ada@example.com"},
        "addresses": [
            {
                "type": "ADDRESS_TYPE_SHIPPING",
                "address1": "12 St James's Square",
                "city": "Sunrise",
                "state": "CA",
                "postalCode": "12345",
            }
        ],
        "creditCards": [
            {
                "type": "CREDIT_CARD_TYPE_PRIMARY",
                "number": "5555 5555 5555 4444",
                "expiration": "12/30",
                "nameOnCard": "Ada Lovelace",
            }
        ],
    }


# --- reflection: list and describe ----------------------------------------------------------


ADMIN = "storefront.admin.v1.AdminService"


@pytest.mark.parametrize("service", list(SERVICE_NAMES))
async def test_list_shows_the_service_and_health(running_system: System, service: str) -> None:
    listed = (await grpcurl(running_system.target(service), "list")).split()
    assert {SERVICE_NAMES[service], HEALTH} <= set(listed)
    assert [s for s in listed if s.startswith("storefront.")] == [SERVICE_NAMES[service]]
    # Each service also serves the internal admin service, on its own port only.
    on_admin = (await grpcurl(running_system.admin_target(service), "list")).split()
    assert {ADMIN, HEALTH} <= set(on_admin)
    assert [s for s in on_admin if s.startswith("storefront.")] == [ADMIN]


@pytest.mark.parametrize(
    ("service", "method", "signature", "http_rule"),
    [
        (
            "accounts",
            "CreateCustomer",
            "( .storefront.accounts.v1.CreateCustomerRequest ) returns "
            "( .storefront.accounts.v1.Customer )",
            'post: "/v1/customers", body: "customer"',
        ),
        (
            "orders",
            "ApproveOrder",
            "( .storefront.orders.v1.ApproveOrderRequest ) returns ( .storefront.orders.v1.Order )",
            'post: "/v1/orders/{order_id}:approve"',
        ),
        (
            "fulfillment",
            "ShipFulfillment",
            "( .storefront.fulfillment.v1.ShipFulfillmentRequest ) returns "
            "( .storefront.fulfillment.v1.Fulfillment )",
            'post: "/v1/fulfillments/{order_id}:ship"',
        ),
    ],
)
async def test_describe_shows_each_method_with_its_http_rule(
    running_system: System, service: str, method: str, signature: str, http_rule: str
) -> None:
    described = await grpcurl(running_system.target(service), "describe", SERVICE_NAMES[service])
    assert described.startswith(f"{SERVICE_NAMES[service]} is a service:")
    assert f"rpc {method} {signature}" in described
    assert http_rule in described


async def test_describe_a_message(running_system: System) -> None:
    described = await grpcurl(
        running_system.target("accounts"), "describe", "storefront.accounts.v1.Customer"
    )
    assert "storefront.accounts.v1.Customer is a message:" in described
    assert "repeated .storefront.accounts.v1.CreditCard credit_cards = 5;" in described


async def test_describe_a_method_by_its_full_name(running_system: System) -> None:
    """Reflection alone, no protoset: grpcio-reflection answers NOT_FOUND here
    (grpc/grpc#34743); svckit.reflection finds the method in its service's file."""
    for service, name in SERVICE_NAMES.items():
        method = {"accounts": "CreateCustomer", "orders": "GetOrder", "catalog": "GetProduct"}.get(
            service, "ShipFulfillment"
        )
        described = await grpcurl(running_system.target(service), "describe", f"{name}.{method}")
        assert described.startswith(f"{name}.{method} is a method:"), described
        assert f"rpc {method} (" in described
    described = await grpcurl(
        running_system.target("accounts"), "describe", f"{ACCOUNTS}.CreateCustomer"
    )
    assert 'post: "/v1/customers", body: "customer"' in described


async def test_reflection_v1_is_served(running_system: System) -> None:
    """A raw grpc.reflection.v1 stream (grpcurl tries v1 first, then falls back to v1alpha,
    so it alone would not tell); the two versions' messages are the same on the wire."""
    request = reflection_pb2.ServerReflectionRequest
    async with grpc.aio.insecure_channel(running_system.target("orders")) as channel:
        stream = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=request.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        asked = [request(list_services=""), request(file_containing_symbol=f"{ORDERS}.GetOrder")]
        listed, method = [r async for r in stream(iter(asked), timeout=10)]
    names = {s.name for s in listed.list_services_response.service}
    assert {ORDERS, HEALTH, "grpc.reflection.v1.ServerReflection"} <= names
    files = method.file_descriptor_response.file_descriptor_proto
    parsed = [descriptor_pb2.FileDescriptorProto.FromString(f) for f in files]
    assert "storefront/orders/v1/orders.proto" in {f.name for f in parsed}


async def test_ghz_calls_a_method_found_through_reflection_alone(running_system: System) -> None:
    """ghz without --protoset resolves the method by reflection; every call succeeds."""
    accounts, orders = running_system.target("accounts"), running_system.target("orders")
    created = await create_customer(accounts, orders, {"customer": a_customer()})
    request = {"customerId": created["id"]}
    [token] = authorization(f"{ACCOUNTS}/GetCustomer", request)[1:]
    name, _, value = token.partition(": ")
    result = await asyncio.to_thread(
        loadgen.ghz,
        accounts,
        f"{ACCOUNTS}/GetCustomer",
        request,
        concurrency=2,
        duration=0,
        total=40,
        metadata={name: value},
        protoset=None,
    )
    print(f"ghz via reflection: {result}")  # figures, with pytest -s
    assert (result.requests, result.errors) == (40, 0), result.error_kinds


async def test_describe_a_method_from_the_descriptor_set() -> None:
    """What the xfail above should print; the descriptor set needs no server."""
    described = await grpcurl("-protoset", str(PROTOSET), "describe", f"{ACCOUNTS}.CreateCustomer")
    assert described.startswith(f"{ACCOUNTS}.CreateCustomer is a method:")
    assert 'post: "/v1/customers", body: "customer"' in described


# --- reflection: calls ----------------------------------------------------------------------


async def all_fulfillments(target: str, status: str) -> list[fulfillment_pb2.Fulfillment]:
    """Every page of ListFulfillments for `status` (bounded: at most 20 pages)."""
    found: list[fulfillment_pb2.Fulfillment] = []
    token = ""
    for _ in range(20):
        request = {"status": status, "pageSize": 500, "pageToken": token}
        page = parsed(
            await call(target, f"{FULFILLMENT}/ListFulfillments", request),
            fulfillment_pb2.ListFulfillmentsResponse,
        )
        found += page.fulfillments
        token = page.next_page_token
        if not token:
            return found
    raise AssertionError("more than 20 pages of fulfillments")


@pytest.mark.parametrize("service", list(SERVICE_NAMES))
async def test_health_check_says_serving(running_system: System, service: str) -> None:
    reply = await call(running_system.target(service), f"{HEALTH}/Check", {"service": ""})
    assert reply == {"status": "SERVING"}


async def test_calls_through_reflection_take_an_order_to_fulfillment(
    running_system: System,
) -> None:
    accounts, orders = running_system.target("accounts"), running_system.target("orders")
    fulfillment = running_system.target("fulfillment")

    created = parsed(
        await create_customer(accounts, orders, {"customer": a_customer()}),
        accounts_pb2.Customer,
    )
    assert created.name.first_name == "Ada" and created.version == 1
    assert created.credit_cards[0].number == "************4444"
    got = await call(accounts, f"{ACCOUNTS}/GetCustomer", {"customerId": created.id})
    assert parsed(got, accounts_pb2.Customer) == created
    copied = parsed(
        await call(orders, f"{ORDERS}/GetCustomerOrders", {"customerId": created.id}),
        orders_pb2.CustomerOrders,
    )
    assert (copied.name, copied.contact) == (created.name, created.contact)

    engine = {
        "title": "Difference engine",
        "price": {"currencyCode": "GBP", "units": "17470"},
    }
    product_id = f"sku-42-{created.id}"
    await call(
        running_system.target("catalog"),
        f"{CATALOG}/CreateProduct",
        {"productId": product_id, "product": engine},
    )
    await asyncio.to_thread(wait_for_copies, running_system, {product_id})
    new_order = {
        "customerId": created.id,
        "order": {"items": [{"product": {"id": product_id}, "quantity": 1}]},
    }
    order = parsed(await call(orders, f"{ORDERS}/CreateOrder", new_order), orders_pb2.Order)
    assert order.total.units == 17470 and order.items[0].product.title == "Difference engine"
    listed = parsed(
        await call(orders, f"{ORDERS}/ListOrders", {"customerId": created.id}),
        orders_pb2.ListOrdersResponse,
    )
    assert [o.order_id for o in listed.orders] == [order.order_id]
    await call(orders, f"{ORDERS}/ApproveOrder", {"orderId": order.order_id, "note": "paid"})

    async def requested() -> Json:
        request = {"orderId": order.order_id}
        return await call(fulfillment, f"{FULFILLMENT}/GetFulfillment", request)

    await eventually(lambda: found_or_none(requested), what="fulfillment")
    approved = await all_fulfillments(fulfillment, "ORDER_STATUS_APPROVED")
    [mine] = [f for f in approved if f.order_id == order.order_id]
    assert mine.customer_id == created.id and mine.shipping_address.city == "Sunrise"


async def test_errors_carry_the_status_and_its_details(running_system: System) -> None:
    accounts = running_system.target("accounts")
    with pytest.raises(GrpcurlError) as missing:
        await call(accounts, f"{ACCOUNTS}/GetCustomer", {"customerId": "nobody"})
    assert missing.value.code == NOT_FOUND
    assert missing.value.detail(error_details_pb2.ErrorInfo).reason == "NOT_FOUND"

    with pytest.raises(GrpcurlError) as invalid:
        await call(accounts, f"{ACCOUNTS}/CreateCustomer", {"customer": {}})
    assert invalid.value.code == INVALID_ARGUMENT
    bad_request = invalid.value.detail(error_details_pb2.BadRequest)
    assert {v.field for v in bad_request.field_violations} == {"customer.name", "customer.contact"}


async def test_reflection_json_uses_camel_case_as_documented(running_system: System) -> None:
    accounts, orders = running_system.target("accounts"), running_system.target("orders")
    created = await create_customer(accounts, orders, {"customer": a_customer()})
    assert {"createTime", "creditCards"} <= set(created)
    assert "firstName" in created["name"]


# --- native gRPC through Envoy --------------------------------------------------------------


async def test_native_grpc_through_envoy_with_the_descriptor_set(running_system: System) -> None:
    envoy = f"127.0.0.1:{running_system.ports.envoy}"
    protoset = ("-protoset", str(PROTOSET))
    customer_id = f"grpcurl-{uuid.uuid4().hex[:12]}"
    request = {"customerId": customer_id, "customer": a_customer()}
    created = await create_customer(envoy, envoy, request, *protoset)
    assert created["id"] == customer_id
    assert {"createTime", "creditCards"} <= set(created)  # json_name is in the protoset
    assert created["creditCards"][0]["number"] == "************4444"

    got = await call(envoy, f"{ACCOUNTS}/GetCustomer", {"customerId": customer_id}, *protoset)
    assert got == created

    with pytest.raises(GrpcurlError) as missing:
        await call(envoy, f"{ORDERS}/GetOrder", {"orderId": f"{customer_id}-x"}, *protoset)
    assert missing.value.code == NOT_FOUND  # the service's status, details and all
    assert missing.value.detail(error_details_pb2.ErrorInfo).reason == "NOT_FOUND"


async def test_envoy_does_not_route_reflection(running_system: System) -> None:
    argv = [str(tools.path("grpcurl")), "-plaintext", "-max-time", "20"]
    argv += authorization(f"{ACCOUNTS}/ListCustomers", {})  # past jwt_authn: to the router
    argv += [f"127.0.0.1:{running_system.ports.envoy}", "list"]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "server does not support the reflection API" in done.stderr
