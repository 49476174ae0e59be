"""The access policy (svckit.policy) and its enforcement (svckit.authz): every RPC has exactly
one declared rule, the rules mean what docs/security.md says, and the interceptor applies them
before any handler. No server beyond an in-process grpc.aio one, no external tool."""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

import topology
from stack.issuer import LocalIssuer
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from storefront.admin.v1 import admin_pb2
from storefront.catalog.v1 import catalog_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from svckit import policy
from svckit.auth import Principal, TokenVerifier
from svckit.authz import Authorizer, Gatekeeper, Own, OwnedVia, SignUp, get_field
from svckit.errors import InvalidArgument, NotFound, PermissionDenied
from svckit.interceptors import ServerInterceptor

ROOT = Path(__file__).resolve().parents[2]
SECURITY_DOC = ROOT / "docs" / "security.md"

A = Principal("cust-a", frozenset({"customer"}))
B = Principal("cust-b", frozenset({"customer"}))
STAFF = Principal("alice", frozenset({"staff"}))
WAREHOUSE = Principal("wendy", frozenset({"warehouse"}))
OPERATOR = Principal("olga", frozenset({"operator"}))
NOBODY = Principal("someone", frozenset())

ORDERS_OF = {"order-a": "cust-a", "order-b": "cust-b"}


async def owner(resource_id: str) -> str | None:
    return ORDERS_OF.get(resource_id)


AUTHORIZER = Authorizer(policy.POLICY, {"order": owner, "fulfillment": owner})


def served_methods() -> set[str]:
    methods = {
        f"/{service.full_name}/{m.name}"
        for module in (accounts_pb2, orders_pb2, fulfillment_pb2, catalog_pb2, admin_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    }
    for service in (
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    ):
        methods |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    # Reflection v1 has the same methods as v1alpha (svckit.reflection serves both).
    return methods | {m.replace(".v1alpha.", ".v1.") for m in methods if "v1alpha" in m}


def request_class(method: str) -> type[Message]:
    _, service_name, name = method.split("/")
    for module in (accounts_pb2, orders_pb2, fulfillment_pb2, catalog_pb2, admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.full_name == service_name:
                return message_factory.GetMessageClass(service.methods_by_name[name].input_type)
    raise KeyError(method)


def test_every_served_rpc_has_exactly_one_rule_and_every_rule_an_rpc() -> None:
    assert set(policy.POLICY) == served_methods()


def test_only_health_and_reflection_are_public() -> None:
    public = {m for m, rule in policy.POLICY.items() if rule.public}
    assert public == {m for m in served_methods() if not m.startswith("/storefront.")}


@pytest.mark.parametrize("method", sorted(m for m in policy.POLICY if m.startswith("/storefront.")))
def test_grants_name_string_fields_of_the_request(method: str) -> None:
    rule = policy.POLICY[method]
    assert rule.grants, f"{method}: nobody may call it"
    for role, grant in rule.grants.items():
        if isinstance(grant, Own | OwnedVia | SignUp):
            assert role == "customer"
            assert get_field(request_class(method)(), grant.field) == ""  # a string field


def check(principal: Principal, method: str, request: Message) -> str:
    """The outcome of the check: "ok" or the denial's class name."""
    try:
        asyncio.run(AUTHORIZER.check(f"{method}", principal, request))
    except (NotFound, PermissionDenied, InvalidArgument) as exc:
        return type(exc).__name__
    return "ok"


def api(service: str) -> str:
    return f"/{topology.SYSTEM.service(service).api}"


ACC = api(topology.ACCOUNTS)
ORD = api(topology.ORDERS)
FUL = api(topology.FULFILLMENT)
ADM = policy.ADMIN
CAT = api(topology.CATALOG)
CASES = [
    # accounts
    (A, f"{ACC}/GetCustomer", accounts_pb2.GetCustomerRequest(customer_id="cust-a"), "ok"),
    (B, f"{ACC}/GetCustomer", accounts_pb2.GetCustomerRequest(customer_id="cust-a"), "NotFound"),
    (STAFF, f"{ACC}/GetCustomer", accounts_pb2.GetCustomerRequest(customer_id="cust-a"), "ok"),
    (WAREHOUSE, f"{ACC}/GetCustomer", accounts_pb2.GetCustomerRequest(customer_id="x"), "PermissionDenied"),
    (A, f"{ACC}/ListCustomers", accounts_pb2.ListCustomersRequest(), "PermissionDenied"),
    (STAFF, f"{ACC}/ListCustomers", accounts_pb2.ListCustomersRequest(), "ok"),
    (A, f"{ACC}/UpdateCustomer", accounts_pb2.UpdateCustomerRequest(customer=accounts_pb2.Customer(id="cust-a")), "ok"),
    (B, f"{ACC}/UpdateCustomer", accounts_pb2.UpdateCustomerRequest(customer=accounts_pb2.Customer(id="cust-a")), "NotFound"),
    (STAFF, f"{ACC}/UpdateCustomer", accounts_pb2.UpdateCustomerRequest(customer=accounts_pb2.Customer(id="cust-a")), "PermissionDenied"),
    (B, f"{ACC}/DeleteCustomer", accounts_pb2.DeleteCustomerRequest(customer_id="cust-a"), "NotFound"),
    (A, f"{ACC}/DeleteCustomer", accounts_pb2.DeleteCustomerRequest(customer_id=""), "InvalidArgument"),
    (A, f"{ACC}/CreateCustomer", accounts_pb2.CreateCustomerRequest(customer_id="cust-a"), "ok"),
    (B, f"{ACC}/CreateCustomer", accounts_pb2.CreateCustomerRequest(customer_id="cust-a"), "PermissionDenied"),
    (STAFF, f"{ACC}/CreateCustomer", accounts_pb2.CreateCustomerRequest(), "PermissionDenied"),
    # orders
    (A, f"{ORD}/CreateOrder", orders_pb2.CreateOrderRequest(customer_id="cust-a"), "ok"),
    (A, f"{ORD}/CreateOrder", orders_pb2.CreateOrderRequest(customer_id="cust-b"), "NotFound"),
    (STAFF, f"{ORD}/CreateOrder", orders_pb2.CreateOrderRequest(customer_id="cust-b"), "PermissionDenied"),
    (A, f"{ORD}/GetOrder", orders_pb2.GetOrderRequest(order_id="order-a"), "ok"),
    (A, f"{ORD}/GetOrder", orders_pb2.GetOrderRequest(order_id="order-b"), "NotFound"),
    (A, f"{ORD}/GetOrder", orders_pb2.GetOrderRequest(order_id="no-such-order"), "NotFound"),
    (STAFF, f"{ORD}/GetOrder", orders_pb2.GetOrderRequest(order_id="order-b"), "ok"),
    (WAREHOUSE, f"{ORD}/GetOrder", orders_pb2.GetOrderRequest(order_id="order-b"), "PermissionDenied"),
    (A, f"{ORD}/ListOrders", orders_pb2.ListOrdersRequest(customer_id="cust-b"), "NotFound"),
    (STAFF, f"{ORD}/ListOrders", orders_pb2.ListOrdersRequest(), "ok"),
    (A, f"{ORD}/GetCustomerOrders", orders_pb2.GetCustomerOrdersRequest(customer_id="cust-b"), "NotFound"),
    (A, f"{ORD}/ApproveOrder", orders_pb2.ApproveOrderRequest(order_id="order-a"), "PermissionDenied"),
    (STAFF, f"{ORD}/ApproveOrder", orders_pb2.ApproveOrderRequest(order_id="order-a"), "ok"),
    (STAFF, f"{ORD}/RejectOrder", orders_pb2.RejectOrderRequest(order_id="order-a"), "ok"),
    (A, f"{ORD}/CancelOrder", orders_pb2.CancelOrderRequest(order_id="order-a"), "ok"),
    (B, f"{ORD}/CancelOrder", orders_pb2.CancelOrderRequest(order_id="order-a"), "NotFound"),
    (STAFF, f"{ORD}/CancelOrder", orders_pb2.CancelOrderRequest(order_id="order-b"), "ok"),
    # fulfillment
    (A, f"{FUL}/GetFulfillment", fulfillment_pb2.GetFulfillmentRequest(order_id="order-a"), "ok"),
    (B, f"{FUL}/GetFulfillment", fulfillment_pb2.GetFulfillmentRequest(order_id="order-a"), "NotFound"),
    (STAFF, f"{FUL}/GetFulfillment", fulfillment_pb2.GetFulfillmentRequest(order_id="order-a"), "PermissionDenied"),
    (WAREHOUSE, f"{FUL}/GetFulfillment", fulfillment_pb2.GetFulfillmentRequest(order_id="order-a"), "ok"),
    (A, f"{FUL}/ListFulfillments", fulfillment_pb2.ListFulfillmentsRequest(), "PermissionDenied"),
    (WAREHOUSE, f"{FUL}/ShipFulfillment", fulfillment_pb2.ShipFulfillmentRequest(order_id="x"), "ok"),
    (A, f"{FUL}/ShipFulfillment", fulfillment_pb2.ShipFulfillmentRequest(order_id="order-a"), "PermissionDenied"),
    (STAFF, f"{FUL}/ProcessFulfillment", fulfillment_pb2.ProcessFulfillmentRequest(order_id="x"), "PermissionDenied"),
    # the internal admin service: the operator alone; staff run the shop, not the system
    (STAFF, f"{ADM}/ReplayTopic", admin_pb2.ReplayTopicRequest(topic="t", rebuild=True), "PermissionDenied"),
    (STAFF, f"{ADM}/Republish", admin_pb2.RepublishRequest(ids=["x"]), "PermissionDenied"),
    (A, f"{ADM}/ReplayParked", admin_pb2.ReplayParkedRequest(topic="t"), "PermissionDenied"),
    (OPERATOR, f"{ADM}/ReplayTopic", admin_pb2.ReplayTopicRequest(topic="t", rebuild=True), "ok"),
    (OPERATOR, f"{ADM}/Republish", admin_pb2.RepublishRequest(ids=["x"]), "ok"),
    (OPERATOR, f"{ADM}/ReplayParked", admin_pb2.ReplayParkedRequest(topic="t"), "ok"),
    (OPERATOR, f"{ORD}/ListOrders", orders_pb2.ListOrdersRequest(), "PermissionDenied"),
    (OPERATOR, f"{ACC}/GetCustomer", accounts_pb2.GetCustomerRequest(customer_id="x"), "PermissionDenied"),
    # catalog: staff keep it, every signed-in role reads it
    (A, f"{CAT}/GetProduct", catalog_pb2.GetProductRequest(product_id="p"), "ok"),
    (WAREHOUSE, f"{CAT}/ListProducts", catalog_pb2.ListProductsRequest(), "ok"),
    (STAFF, f"{CAT}/CreateProduct", catalog_pb2.CreateProductRequest(), "ok"),
    (A, f"{CAT}/CreateProduct", catalog_pb2.CreateProductRequest(), "PermissionDenied"),
    (A, f"{CAT}/UpdateProduct", catalog_pb2.UpdateProductRequest(), "PermissionDenied"),
    (WAREHOUSE, f"{CAT}/DiscontinueProduct", catalog_pb2.DiscontinueProductRequest(product_id="p"), "PermissionDenied"),
    (STAFF, f"{CAT}/DiscontinueProduct", catalog_pb2.DiscontinueProductRequest(product_id="p"), "ok"),
    (NOBODY, f"{CAT}/ListProducts", catalog_pb2.ListProductsRequest(), "PermissionDenied"),
    (OPERATOR, f"{CAT}/GetProduct", catalog_pb2.GetProductRequest(product_id="p"), "PermissionDenied"),
    # no role at all, and an RPC nobody declared
    (NOBODY, f"{ORD}/ListOrders", orders_pb2.ListOrdersRequest(), "PermissionDenied"),
    (STAFF, f"{ORD}/ForgetEverything", orders_pb2.ListOrdersRequest(), "PermissionDenied"),
]


@pytest.mark.parametrize(("principal", "method", "request_", "expected"), CASES)
def test_the_policy_decides(
    principal: Principal, method: str, request_: Message, expected: str
) -> None:
    assert check(principal, method, request_) == expected


def test_a_customer_list_is_filtered_to_their_own_and_sign_up_takes_their_id() -> None:
    listing = orders_pb2.ListOrdersRequest()
    asyncio.run(AUTHORIZER.check(f"{ORD}/ListOrders", A, listing))
    assert listing.customer_id == "cust-a"
    sign_up = accounts_pb2.CreateCustomerRequest()
    asyncio.run(AUTHORIZER.check(f"{ACC}/CreateCustomer", A, sign_up))
    assert sign_up.customer_id == "cust-a"
    staff_listing = orders_pb2.ListOrdersRequest()
    asyncio.run(AUTHORIZER.check(f"{ORD}/ListOrders", STAFF, staff_listing))
    assert staff_listing.customer_id == ""  # staff see everyone's


def test_another_customers_resource_and_a_missing_one_look_the_same() -> None:
    messages = []
    for order_id in ("order-b", "order-c-does-not-exist"):
        with pytest.raises(NotFound) as err:
            asyncio.run(
                AUTHORIZER.check(f"{ORD}/GetOrder", A, orders_pb2.GetOrderRequest(order_id=order_id))
            )
        messages.append(err.value.to_status().message.replace(order_id, "ID"))
    assert messages[0] == messages[1]


def documented_matrix() -> str:
    text = SECURITY_DOC.read_text()
    found = re.search(r"<!-- matrix:begin -->\n(.*?)<!-- matrix:end -->", text, re.S)
    assert found, "docs/security.md has no generated matrix block"
    return found.group(1)


def test_docs_matrix_is_generated_from_the_policy() -> None:
    assert documented_matrix() == policy.matrix(), "run: uv run python -m svckit.policy"


# --- the interceptor, in a real (in-process) gRPC server ----------------------------------------


class Accounts(accounts_pb2_grpc.AccountsServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def GetCustomer(
        self, request: accounts_pb2.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        self.calls += 1
        return accounts_pb2.Customer(id=request.customer_id)


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Accounts, LocalIssuer]]:
    issuer = LocalIssuer.ensure(tempfile.mkdtemp(prefix="policy-unit-"))
    rules = {k: v for k, v in policy.POLICY.items() if not k.endswith("/ListCustomers")}
    gatekeeper = Gatekeeper(TokenVerifier(issuer.config()), Authorizer(rules))
    server = grpc.aio.server(interceptors=[ServerInterceptor("test", gatekeeper)])
    accounts = Accounts()  # type: ignore[abstract]  # the generated base answers the rest UNIMPLEMENTED
    accounts_pb2_grpc.add_AccountsServiceServicer_to_server(accounts, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", accounts, issuer
    finally:
        await server.stop(0)


async def code_of(target: str, method: str, request: Message, token: str | None) -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {token}")] if token else None
    async with grpc.aio.insecure_channel(target) as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        try:
            await getattr(stub, method)(request, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_interceptor_refuses_before_the_handler_and_logs_once(
    served: tuple[str, Accounts, LocalIssuer], caplog: pytest.LogCaptureFixture
) -> None:
    target, accounts, issuer = served
    get = accounts_pb2.GetCustomerRequest(customer_id="cust-a")
    caplog.set_level(logging.WARNING, logger="svckit.authz")
    bad = issuer.customer("cust-a", ttl=-3600)
    assert await code_of(target, "GetCustomer", get, None) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(target, "GetCustomer", get, bad) == grpc.StatusCode.UNAUTHENTICATED
    other = issuer.customer("cust-b")
    assert await code_of(target, "GetCustomer", get, other) == grpc.StatusCode.NOT_FOUND
    warehouse = issuer.role("warehouse", subject="wendy")
    assert await code_of(target, "GetCustomer", get, warehouse) == grpc.StatusCode.PERMISSION_DENIED
    assert accounts.calls == 0
    assert await code_of(target, "GetCustomer", get, issuer.customer("cust-a")) == grpc.StatusCode.OK
    assert accounts.calls == 1

    denials = [r.getMessage() for r in caplog.records if r.name == "svckit.authz"]
    assert len(denials) == 4
    assert "GetCustomer to anonymous: missing bearer token" in denials[0]
    assert "token expired" in denials[1]
    assert "to cust-b (customer): customer 'cust-a' not found" in denials[2]
    assert "to wendy (warehouse): not allowed" in denials[3]
    for token in (bad, other, warehouse):
        assert all(token not in d and token.split(".")[2] not in d for d in denials)


async def test_an_rpc_without_a_rule_is_refused_even_to_staff(
    served: tuple[str, Accounts, LocalIssuer],
) -> None:
    target, _, issuer = served
    staff = issuer.role("staff")
    code = await code_of(target, "ListCustomers", accounts_pb2.ListCustomersRequest(), staff)
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_health_needs_no_token(served: tuple[str, Accounts, LocalIssuer]) -> None:
    target, _, _ = served
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
