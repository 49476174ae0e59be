"""Who may call what, on the running system: the RPC x caller matrix of docs/security.md, cell
by cell, as JSON through Envoy and over direct gRPC; token attacks; one customer against another.

The expected outcome of every cell is read from the documented matrix (docs/security.md, which a
unit test keeps equal to svckit/policy.py), not from the policy itself. Callers: anonymous,
customer A (the owner of the resources the requests name), customer B, staff, warehouse. Every
refused request is checked to have stored nothing: the same document counts in the service's
own collection, the same addressed document, and no new outbox entry on it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message
from pymongo import AsyncMongoClient

import topology
from stack.issuer import LocalIssuer
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from storefront.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from storefront.orders.v1 import orders_pb2, orders_pb2_grpc
from storefront_cli.clients import eventually
from storefront_cli.demo import PEOPLE, PRODUCTS, customer_draft, order_draft, product_draft
from svckit import policy
from svckit.authz import get_field
from svckit.outbox import OUTBOX, PENDING
from tests.e2e.conftest import System
from tests.support import http_rules, issuer_of, unique
from tests.tokens import attacks
from tests.unit.test_policy import documented_matrix as matrix_block

pytestmark = pytest.mark.e2e

Status = common_pb2.OrderStatus
Code: TypeAlias = grpc.StatusCode
HTTP = {
    Code.OK: 200,
    Code.INVALID_ARGUMENT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
}
RULES = {rule.method: rule for rule in http_rules()}
STORED_IN = {  # the collection each service writes its aggregates to
    "accounts": topology.CUSTOMERS,
    "orders": topology.ORDER_DOCUMENTS,
    "fulfillment": topology.FULFILLMENTS,
    "catalog": topology.PRODUCTS,
}
CALLERS = ("anonymous", "customer B", "staff", "warehouse", "operator", "customer A")
"""Refusals first, the owner last: an allowed call may change the target."""


def documented_matrix() -> dict[str, dict[str, str]]:
    """RPC (full method name) -> caller column -> cell, from docs/security.md."""
    header, _, *rows = matrix_block().strip().splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    matrix = {}
    for row in rows:
        rpc, *cells = [c.strip() for c in row.strip("|").split("|")]
        matrix["/" + rpc.strip("`")] = dict(zip(columns, cells, strict=True))
    return matrix


MATRIX = documented_matrix()
BUSINESS_RPCS = [
    m for m in MATRIX if m.startswith("/storefront.") and not m.startswith(policy.ADMIN)
]
"""The public services' RPCs; the internal admin service's are in tests/e2e/test_admin.py."""


def expected(cell_of: dict[str, str], caller: str) -> Code:
    """What a cell means for each caller; the request names customer A's resource."""
    if caller == "anonymous":
        assert cell_of["anonymous"] == "401"
        return Code.UNAUTHENTICATED
    cell = cell_of["customer" if caller.startswith("customer") else caller]
    if cell == "all" or (cell in ("own", "self") and caller == "customer A"):
        return Code.OK
    if cell == "own":
        return Code.NOT_FOUND
    assert cell in ("403", "self"), cell
    return Code.PERMISSION_DENIED


# --- calling: direct gRPC and JSON through Envoy ---------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: Code
    body: Any = None
    www_authenticate: str | None = None


STUBS = {
    "accounts": accounts_pb2_grpc.AccountsServiceStub,
    "orders": orders_pb2_grpc.OrdersServiceStub,
    "fulfillment": fulfillment_pb2_grpc.FulfillmentServiceStub,
    "catalog": catalog_pb2_grpc.CatalogServiceStub,
}


def service_of(method: str) -> str:
    return method.split(".")[1]


async def call_grpc(
    system: System, method: str, request: Message, token: str | None, *, via_envoy: bool = False
) -> Outcome:
    metadata = [("authorization", f"Bearer {token}")] if token else None
    target = f"127.0.0.1:{system.ports.envoy}" if via_envoy else system.target(service_of(method))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = STUBS[service_of(method)](channel)
        try:
            reply = await getattr(stub, method.rsplit("/", 1)[1])(
                request, metadata=metadata, timeout=20
            )
        except grpc.aio.AioRpcError as exc:
            return Outcome(exc.code())
    return Outcome(Code.OK, reply)


def to_rest(method: str, request: Message) -> tuple[str, str, bytes | None]:
    """The REST call `request` is, by its RPC's google.api.http rule."""
    rule = RULES[method]
    fields = json_format.MessageToDict(request)
    path = rule.template
    for name in rule.fields:  # bound to the path, so neither in the body nor the query
        path = path.replace(f"{{{name}}}", urllib.parse.quote(get_field(request, name), safe=""))
        *parents, last = name.split(".")
        holder: Any = fields
        message: Any = request
        for part in parents:
            holder = holder.get(message.DESCRIPTOR.fields_by_name[part].json_name, {})
            message = getattr(message, part)
        holder.pop(message.DESCRIPTOR.fields_by_name[last].json_name, None)
    body: Any = None
    if rule.body == "*":
        body, fields = fields, {}
    elif rule.body:
        body = fields.pop(request.DESCRIPTOR.fields_by_name[rule.body].json_name, {})
    query = {k: str(v) for k, v in fields.items()}
    if query:
        path += "?" + urllib.parse.urlencode(query)
    data = None if body is None and rule.verb in ("GET", "DELETE") else json.dumps(body or {})
    return rule.verb, path, data.encode() if data is not None else None


def _send(url: str, verb: str, data: bytes | None, token: str | None) -> Outcome:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=verb, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return Outcome(Code.OK, json.loads(reply.read() or b"{}"))
    except urllib.error.HTTPError as error:
        with error:
            status = {v: k for k, v in HTTP.items()}.get(error.code)
            body = json.loads(error.read() or b"{}")
            return Outcome(status or Code.UNKNOWN, body, error.headers.get("www-authenticate"))


async def call_rest(system: System, method: str, request: Message, token: str | None) -> Outcome:
    verb, path, data = to_rest(method, request)
    return await asyncio.to_thread(_send, system.envoy_url + path, verb, data, token)


async def call_grpc_via_envoy(
    system: System, method: str, request: Message, token: str | None
) -> Outcome:
    return await call_grpc(system, method, request, token, via_envoy=True)


TRANSPORTS = {"grpc": call_grpc, "json": call_rest}
EVERY_PATH = {**TRANSPORTS, "grpc via envoy": call_grpc_via_envoy}
"""The matrix walks the two ways in; attacks and cross-customer tests take native gRPC through
Envoy's port too."""


# --- the world: customers A and B, orders and fulfilments of A --------------------------------


@dataclass
class World:
    system: System
    issuer: LocalIssuer
    mongo: AsyncMongoClient[dict[str, Any]]
    a: str = ""
    b: str = ""
    tokens: dict[str, str | None] = field(default_factory=dict)

    def token(self, caller: str, owner: str) -> str | None:
        """The caller's token; "customer A" is whoever owns the row's resource."""
        if caller == "customer A":
            return self.issuer.customer(owner)
        return self.tokens[caller]

    async def grpc(self, method: str, request: Message, token: str | None) -> Any:
        outcome = await call_grpc(self.system, method, request, token)
        assert outcome.code == Code.OK, (method, outcome)
        return outcome.body

    async def sign_up(self, prefix: str, person: int = 0) -> str:
        cid = unique(prefix)
        request = accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[person]))
        await self.grpc(ACCOUNTS + "CreateCustomer", request, self.issuer.customer(cid))
        await self.known_to_orders(cid)
        return cid

    async def known_to_orders(self, cid: str) -> None:
        find = self.mongo[self.system.database("orders")][topology.CUSTOMER_COPIES].find_one
        await eventually(lambda: find({"_id": cid}), what=f"orders' copy of {cid}")

    async def order(self, owner: str) -> str:
        request = orders_pb2.CreateOrderRequest(customer_id=owner, order=order_draft((0, 1)))
        token = self.issuer.customer(owner)
        outcome = await call_grpc(self.system, ORDERS + "CreateOrder", request, token)
        if outcome.code == Code.RESOURCE_EXHAUSTED:
            await self.make_room(owner)
            outcome = await call_grpc(self.system, ORDERS + "CreateOrder", request, token)
        assert outcome.code == Code.OK, outcome
        return str(outcome.body.order_id)

    async def make_room(self, owner: str, orders: int = 1) -> None:
        """The module's many rows leave A its quota of open orders (docs/api.md): staff
        cancels A's oldest waiting ones, so A may place `orders` more."""
        waiting = orders_pb2.ListOrdersRequest(
            customer_id=owner, status=Status.ORDER_STATUS_CREATED, page_size=orders
        )
        found = await self.grpc(ORDERS + "ListOrders", waiting, self.tokens["staff"])
        for oldest in found.orders:
            cancel = orders_pb2.CancelOrderRequest(order_id=oldest.order_id)
            await self.grpc(ORDERS + "CancelOrder", cancel, self.tokens["staff"])

    async def fulfilled(self, owner: str) -> str:
        oid = await self.order(owner)
        await self.grpc(
            ORDERS + "ApproveOrder",
            orders_pb2.ApproveOrderRequest(order_id=oid),
            self.tokens["staff"],
        )
        await self.fulfillment_exists(oid)
        return oid

    async def fulfillment_exists(self, oid: str) -> None:
        find = self.mongo[self.system.database("fulfillment")][topology.FULFILLMENTS].find_one
        await eventually(lambda: find({"_id": oid}), what=f"fulfillment of {oid}")

    async def snapshot(self, service: str, doc_id: str) -> tuple[int, Any, set[str]]:
        collection = self.mongo[self.system.database(service)][STORED_IN[service]]
        doc = await collection.find_one({"_id": doc_id})
        # The outbox and its marker are the relay's bookkeeping, drained asynchronously.
        outbox = {str(e.get("id")) for e in (doc or {}).pop(OUTBOX, [])}
        (doc or {}).pop(PENDING, None)
        return await collection.count_documents({}), doc, outbox


ACCOUNTS = "/storefront.accounts.v1.AccountsService/"
ORDERS = "/storefront.orders.v1.OrdersService/"
FULFILLMENT = "/storefront.fulfillment.v1.FulfillmentService/"
CATALOG = "/storefront.catalog.v1.CatalogService/"


@dataclass
class Target:
    """One call's request, the customer who owns what it names, and where that is stored."""

    request: Message
    owner: str
    service: str
    doc_id: str


Make = Callable[[World], Any]


def email_patch(cid: str) -> accounts_pb2.UpdateCustomerRequest:
    patch = accounts_pb2.Customer(id=cid)
    patch.contact.email = "moved@example.com"
    return accounts_pb2.UpdateCustomerRequest(
        customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["contact.email"])
    )


async def fresh_signup(w: World) -> Target:
    cid = unique("signup")
    draft = customer_draft(PEOPLE[2])
    return Target(
        accounts_pb2.CreateCustomerRequest(customer=draft, customer_id=cid), cid, "accounts", cid
    )


async def on_a(w: World, request: Message, service: str = "accounts") -> Target:
    return Target(request, w.a, service, w.a)


async def fresh_order(w: World, cls: type[Message]) -> Target:
    oid = await w.order(w.a)
    return Target(cls(order_id=oid), w.a, "orders", oid)


class Walk:
    """One fulfilment of A, walked by the shipping rows in order (each allowed call moves it)."""

    oid = ""


WALK = Walk()


async def walked(w: World, cls: type[Message]) -> Target:
    if not WALK.oid:
        WALK.oid = await w.fulfilled(w.a)
    return Target(cls(order_id=WALK.oid), w.a, "fulfillment", WALK.oid)


async def fresh_product(w: World, request: Callable[[str], Message]) -> Target:
    """A product of the row's own (staff create it), so no call changes the demo catalog the
    other tests order from."""
    pid = unique("sku")
    create = catalog_pb2.CreateProductRequest(product=product_draft(0), product_id=pid)
    await w.grpc(CATALOG + "CreateProduct", create, w.tokens["staff"])
    return Target(request(pid), w.a, "catalog", pid)


def title_patch(pid: str) -> catalog_pb2.UpdateProductRequest:
    return catalog_pb2.UpdateProductRequest(
        product=catalog_pb2.Product(id=pid, title="Renamed"),
        update_mask=field_mask_pb2.FieldMask(paths=["title"]),
    )


async def new_product(w: World) -> Target:
    pid = unique("sku")
    request = catalog_pb2.CreateProductRequest(product=product_draft(1), product_id=pid)
    return Target(request, w.a, "catalog", pid)


SOLD = PRODUCTS[0][0]

TARGETS: dict[str, Callable[[World], Any]] = {
    ACCOUNTS + "CreateCustomer": fresh_signup,
    ACCOUNTS + "GetCustomer": lambda w: on_a(w, accounts_pb2.GetCustomerRequest(customer_id=w.a)),
    ACCOUNTS + "ListCustomers": lambda w: on_a(w, accounts_pb2.ListCustomersRequest(page_size=1)),
    ACCOUNTS + "UpdateCustomer": lambda w: on_a(w, email_patch(w.a)),
    ACCOUNTS + "DeleteCustomer": lambda w: victim(w),
    ORDERS + "CreateOrder": lambda w: on_a(
        w, orders_pb2.CreateOrderRequest(customer_id=w.a, order=order_draft((1, 2))), "orders"
    ),
    ORDERS + "GetOrder": lambda w: fresh_order(w, orders_pb2.GetOrderRequest),
    ORDERS + "ListOrders": lambda w: on_a(
        w, orders_pb2.ListOrdersRequest(customer_id=w.a), "orders"
    ),
    ORDERS + "GetCustomerOrders": lambda w: on_a(
        w, orders_pb2.GetCustomerOrdersRequest(customer_id=w.a), "orders"
    ),
    ORDERS + "ApproveOrder": lambda w: fresh_order(w, orders_pb2.ApproveOrderRequest),
    ORDERS + "RejectOrder": lambda w: fresh_order(w, orders_pb2.RejectOrderRequest),
    ORDERS + "CancelOrder": lambda w: fresh_order(w, orders_pb2.CancelOrderRequest),
    FULFILLMENT + "GetFulfillment": lambda w: walked(w, fulfillment_pb2.GetFulfillmentRequest),
    FULFILLMENT + "ListFulfillments": lambda w: on_a(
        w, fulfillment_pb2.ListFulfillmentsRequest(page_size=1), "fulfillment"
    ),
    FULFILLMENT + "ProcessFulfillment": lambda w: walked(
        w, fulfillment_pb2.ProcessFulfillmentRequest
    ),
    FULFILLMENT + "ShipFulfillment": lambda w: walked(w, fulfillment_pb2.ShipFulfillmentRequest),
    FULFILLMENT + "MarkFulfillmentInTransit": lambda w: walked(
        w, fulfillment_pb2.MarkFulfillmentInTransitRequest
    ),
    FULFILLMENT + "ConfirmFulfillmentReceived": lambda w: walked(
        w, fulfillment_pb2.ConfirmFulfillmentReceivedRequest
    ),
    CATALOG + "CreateProduct": new_product,
    CATALOG + "GetProduct": lambda w: on_a(
        w, catalog_pb2.GetProductRequest(product_id=SOLD), "catalog"
    ),
    CATALOG + "ListProducts": lambda w: on_a(
        w, catalog_pb2.ListProductsRequest(page_size=1), "catalog"
    ),
    CATALOG + "UpdateProduct": lambda w: fresh_product(w, title_patch),
    CATALOG + "DiscontinueProduct": lambda w: fresh_product(
        w, lambda pid: catalog_pb2.DiscontinueProductRequest(product_id=pid)
    ),
}


async def victim(w: World) -> Target:
    """DeleteCustomer gets a customer of its own: the owner's call deletes it."""
    cid = await w.sign_up("victim", 1)
    return Target(accounts_pb2.DeleteCustomerRequest(customer_id=cid), cid, "accounts", cid)


async def settle(w: World, method: str, target: Target) -> None:
    """Wait for what an allowed call sets off elsewhere, so the next refusal's snapshot is not
    mistaken: a sign-up's copy in orders, an approval's fulfilment."""
    if method.endswith("/CreateCustomer"):
        await w.known_to_orders(target.owner)
    elif method.endswith("/ApproveOrder"):
        await w.fulfillment_exists(target.doc_id)


@pytest.fixture(scope="module")
async def world(running_system: System) -> AsyncIterator[World]:
    issuer = issuer_of(running_system.stack)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        running_system.stack.mongodb_uri, serverSelectionTimeoutMS=10_000
    )
    w = World(running_system, issuer, client)
    w.tokens = {
        "anonymous": None,
        "staff": issuer.role("staff", subject="staff-e2e"),
        "warehouse": issuer.role("warehouse", subject="warehouse-e2e"),
        "operator": issuer.role("operator", subject="operator-e2e"),
    }
    w.a = await w.sign_up("cust-a", 0)
    w.b = await w.sign_up("cust-b", 1)
    w.tokens["customer B"] = issuer.customer(w.b)
    try:
        yield w
    finally:
        await client.close()


def test_the_matrix_has_every_business_rpc_and_the_test_a_target_for_each() -> None:
    assert set(BUSINESS_RPCS) == set(TARGETS) == {r.method for r in http_rules()}


@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_every_cell_of_the_matrix(world: World, transport: str) -> None:
    call = TRANSPORTS[transport]
    WALK.oid = ""  # each transport walks its own fulfilment
    seen: list[str] = []
    for method in BUSINESS_RPCS:
        target: Target | None = None
        for caller in CALLERS:
            want = expected(MATRIX[method], caller)
            if target is None or want == Code.OK:
                target = await TARGETS[method](world)  # an allowed call gets a fresh target
            assert target is not None
            token = world.token(caller, target.owner)
            before = await world.snapshot(target.service, target.doc_id)
            outcome = await call(world.system, method, target.request, token)
            cell = f"{transport} {method.rsplit('/', 1)[1]} as {caller}: {outcome.code.name}"
            seen.append(cell)
            assert outcome.code == want, f"{cell}, documented {want.name}: {outcome.body}"
            if want == Code.OK:
                await settle(world, method, target)
                continue
            after = await world.snapshot(target.service, target.doc_id)
            assert after[0] == before[0] and after[1] == before[1], f"{cell} stored something"
            assert after[2] <= before[2], f"{cell} queued an event"
            if transport == "json" and want == Code.UNAUTHENTICATED:
                assert (outcome.www_authenticate or "").startswith("Bearer"), cell
    assert len(seen) == len(BUSINESS_RPCS) * len(CALLERS)


# --- token attacks -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", list(EVERY_PATH))
async def test_token_attacks_are_unauthenticated_and_change_nothing(
    world: World, transport: str
) -> None:
    call = EVERY_PATH[transport]
    oid = await world.order(world.a)
    signup = unique("forged-signup")
    staff_forgeries = attacks(world.issuer, "staff-e2e", ["staff"])
    customer_forgeries = attacks(world.issuer, signup, ["customer"])
    assert set(staff_forgeries) >= {
        "expired", "not yet valid", "wrong issuer", "wrong audience", "alg none",
        "HS256 with the public key", "tampered payload", "unknown kid", "garbage",
    }  # fmt: skip
    approve = orders_pb2.ApproveOrderRequest(order_id=oid)
    create = accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[0]))
    for name in staff_forgeries:
        before = await world.snapshot("orders", oid)
        outcome = await call(world.system, ORDERS + "ApproveOrder", approve, staff_forgeries[name])
        assert outcome.code == Code.UNAUTHENTICATED, (name, outcome)
        if transport == "json":
            assert (outcome.www_authenticate or "").startswith("Bearer"), name
        after = await world.snapshot("orders", oid)
        assert (after[0], after[1]) == (before[0], before[1]) and after[2] <= before[2], name

        before = await world.snapshot("accounts", signup)
        outcome = await call(
            world.system, ACCOUNTS + "CreateCustomer", create, customer_forgeries[name]
        )
        assert outcome.code == Code.UNAUTHENTICATED, (name, outcome)
        assert await world.snapshot("accounts", signup) == before, name
    # The same calls with genuine tokens go through: the refusals were the tokens' doing.
    assert (
        await call(world.system, ORDERS + "ApproveOrder", approve, world.tokens["staff"])
    ).code == Code.OK
    await world.fulfillment_exists(oid)
    outcome = await call(
        world.system, ACCOUNTS + "CreateCustomer", create, world.issuer.customer(signup)
    )
    assert outcome.code == Code.OK
    await world.known_to_orders(signup)


# --- one customer against another, by every path ---------------------------------------------------


@pytest.mark.parametrize("transport", list(EVERY_PATH))
async def test_a_customer_sees_and_touches_only_their_own(world: World, transport: str) -> None:
    call = EVERY_PATH[transport]
    mine, theirs = await world.order(world.b), await world.order(world.a)
    b = world.tokens["customer B"]

    listed = await call(world.system, ORDERS + "ListOrders", orders_pb2.ListOrdersRequest(), b)
    assert listed.code == Code.OK
    orders = (
        listed.body.orders
        if transport != "json"
        else [json_format.ParseDict(o, orders_pb2.Order()) for o in listed.body["orders"]]
    )
    ids = {o.order_id for o in orders}
    assert mine in ids and theirs not in ids
    assert {o.customer_id for o in orders} == {world.b}

    same_as_missing = {}
    for label, oid in (("A's", theirs), ("nobody's", unique("no-such-order"))):
        got = await call(
            world.system, ORDERS + "GetOrder", orders_pb2.GetOrderRequest(order_id=oid), b
        )
        assert got.code == Code.NOT_FOUND, label
        if transport == "json":
            same_as_missing[label] = got.body["message"].replace(oid, "ID")
    if transport == "json":
        assert same_as_missing["A's"] == same_as_missing["nobody's"]  # nothing to probe

    for method, request, service, doc_id in [
        (ORDERS + "CancelOrder", orders_pb2.CancelOrderRequest(order_id=theirs), "orders", theirs),
        (
            ORDERS + "CreateOrder",
            orders_pb2.CreateOrderRequest(customer_id=world.a, order=order_draft((0, 1))),
            "orders",
            theirs,
        ),
        (ACCOUNTS + "UpdateCustomer", email_patch(world.a), "accounts", world.a),
        (
            ACCOUNTS + "DeleteCustomer",
            accounts_pb2.DeleteCustomerRequest(customer_id=world.a),
            "accounts",
            world.a,
        ),
        (
            ACCOUNTS + "CreateCustomer",
            accounts_pb2.CreateCustomerRequest(
                customer=customer_draft(PEOPLE[1]), customer_id=world.a
            ),
            "accounts",
            world.a,
        ),
    ]:
        before = await world.snapshot(service, doc_id)
        got = await call(world.system, method, request, b)
        assert got.code in (Code.NOT_FOUND, Code.PERMISSION_DENIED), (method, got)
        after = await world.snapshot(service, doc_id)
        assert (after[0], after[1]) == (before[0], before[1]) and after[2] <= before[2], method

    status = await world.grpc(
        ORDERS + "GetOrder", orders_pb2.GetOrderRequest(order_id=theirs), world.tokens["staff"]
    )
    assert status.status == Status.ORDER_STATUS_CREATED  # A's order, untouched


# --- client-chosen order ids ---------------------------------------------------------------


@pytest.mark.parametrize("transport", list(EVERY_PATH))
async def test_a_chosen_order_id_is_scoped_to_its_customer(world: World, transport: str) -> None:
    """Issue 25, finding 8. Order ids were global: B could take the id A would choose (A's
    create then failed), and ALREADY_EXISTS told B which ids A had used, while GetOrder said
    NOT_FOUND. A chosen id now names `<customer id>.<chosen id>` (docs/api.md)."""
    call = EVERY_PATH[transport]
    a, b = world.issuer.customer(world.a), world.tokens["customer B"]
    chosen = unique("retry-key")

    def create(customer: str, order_id: str) -> orders_pb2.CreateOrderRequest:
        return orders_pb2.CreateOrderRequest(
            customer_id=customer, order=order_draft((0, 1)), order_id=order_id
        )

    def order_id(outcome: Outcome) -> str:
        body = outcome.body
        return str(body["orderId"] if transport == "json" else body.order_id)

    await world.make_room(world.a, 2)  # A's order and its retry, not refused by the quota
    squatted = await call(world.system, ORDERS + "CreateOrder", create(world.b, chosen), b)
    assert squatted.code == Code.OK and order_id(squatted) == f"{world.b}.{chosen}"
    mine = await call(world.system, ORDERS + "CreateOrder", create(world.a, chosen), a)
    assert mine.code == Code.OK, mine  # B used the same id first: no matter
    assert order_id(mine) == f"{world.a}.{chosen}"
    before = await world.snapshot("orders", order_id(mine))
    retried = await call(world.system, ORDERS + "CreateOrder", create(world.a, chosen), a)
    assert retried.code == Code.ALREADY_EXISTS  # one's own retry is still safe
    after = await world.snapshot("orders", order_id(mine))
    assert (after[0], after[1]) == (before[0], before[1]) and after[2] <= before[2]

    # What B can learn of A's ids by creating: nothing (its own namespace), nor reach into A's.
    probe = await call(world.system, ORDERS + "CreateOrder", create(world.b, chosen), b)
    assert probe.code == Code.ALREADY_EXISTS  # B's own, from above
    reach = f"{world.a}.{unique('next')}"
    into = await call(world.system, ORDERS + "CreateOrder", create(world.b, reach), b)
    assert into.code == Code.INVALID_ARGUMENT
    assert (await world.snapshot("orders", reach))[1] is None
    got = await call(
        world.system, ORDERS + "GetOrder", orders_pb2.GetOrderRequest(order_id=order_id(mine)), b
    )
    assert got.code == Code.NOT_FOUND
