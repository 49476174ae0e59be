"""The three flows and the error contract in JSON, through the real Envoy and the real services.

Every request here is plain HTTP/1.1 + JSON to Envoy's listener, transcoded by its
`grpc_json_transcoder` (docs/api.md is the contract being checked). Every rejected request is
also checked to have stored nothing: the document counts of every collection of the three
services, the addressed document byte for byte (outbox included), and the events on Kafka
under the addressed key are the same after the request as before it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from pymongo import AsyncMongoClient

import topology
from storefront_cli.clients import TokenFor, eventually
from svckit.outbox import OUTBOX, PENDING
from tests.e2e.conftest import System
from tests.support import partition_ids, rest_authorization, tokens_of, wait_for_copies

pytestmark = pytest.mark.e2e

CUSTOMER_CHANGES = topology.CUSTOMER_CHANGES  # key: customer id
FULFILLMENT_REQUESTS = topology.ORDER_FULFILLMENT  # key: order id
STATUS_CHANGES = topology.ORDER_STATUS  # key: order id
# (service, collection): where each service keeps what the tests look at.
ACCOUNT = ("accounts", topology.CUSTOMERS)
ORDER = ("orders", topology.ORDER_DOCUMENTS)
ORDERS_COPY = ("orders", topology.CUSTOMER_COPIES)
FULFILLMENT = ("fulfillment", topology.FULFILLMENTS)
COLLECTIONS = (ACCOUNT, ORDER, ORDERS_COPY, FULFILLMENT)
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
PRECONDITION_FAILURE = "type.googleapis.com/google.rpc.PreconditionFailure"
LIFECYCLE = [
    f"ORDER_STATUS_{s}"
    for s in ("CREATED", "APPROVED", "PROCESSING", "SHIPPED", "IN_TRANSIT", "RECEIVED")
]

Json = dict[str, Any]


def new_id(prefix: str) -> str:
    """A client-chosen id nobody has used, so Kafka holds no event under it yet."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- request bodies -------------------------------------------------------------------------


def seed_customer(email: str = "rajesh.iyer@example.com") -> Json:
    """The seed posts' example customer, in the documented JSON form (full enum names)."""
    return {
        "name": {
            "title": "Mr.",
            "firstName": "Rajesh",
            "middleName": "V.",
            "lastName": "Iyer",
            "suffix": "Jr.",
        },
        "contact": {
            "primaryPhone": "555-666-7777",
            "secondaryPhone": "555-444-9898",
            "email": email,
        },
        "addresses": [
            {
                "type": "ADDRESS_TYPE_BILLING",
                "description": "My cc billing address",
                "address1": "123 Oak Street",
                "city": "Sunrise",
                "state": "CA",
                "postalCode": "12345-6789",
            },
            {
                "type": "ADDRESS_TYPE_SHIPPING",
                "description": "My home address",
                "address1": "123 Oak Street",
                "address2": None,
                "city": "Sunrise",
                "state": "CA",
                "postalCode": "12345-6789",
            },
        ],
        "creditCards": [
            {
                "type": "CREDIT_CARD_TYPE_PRIMARY",
                "description": "VISA",
                "number": "4111-1111-1111-1111",
                "expiration": "06/29",
                "nameOnCard": "Rajesh V. Iyer",
            }
        ],
    }


def with_short_enum() -> Json:
    """The seed's short enum form ("SHIPPING"), which the JSON mapping does not accept."""
    body = seed_customer()
    body["addresses"][1]["type"] = "SHIPPING"
    return body


BEANS_ID = "sku-1001"
BEANS: Json = {
    "id": BEANS_ID,
    "title": "Espresso beans 1 kg",
    "price": {"currencyCode": "USD", "units": "24", "nanos": 500_000_000},
}
"""A catalog product (`beans_in_the_catalog`): an order names it, the catalog prices it."""


def an_order(quantity: int = 2) -> Json:
    return {"items": [{"product": {"id": BEANS_ID}, "quantity": quantity}]}


# --- HTTP through Envoy ---------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Json

    @property
    def code(self) -> int:
        """The google.rpc.Code of an error answer."""
        return int(self.body["code"])

    def detail(self, type_url: str) -> Json:
        [found] = [d for d in self.body.get("details", []) if d["@type"] == type_url]
        return found

    def violations(self) -> dict[str, str]:
        """BadRequest field violations as {field: description}."""
        return {v["field"]: v["description"] for v in self.detail(BAD_REQUEST)["fieldViolations"]}


@dataclass
class Rest:
    base_url: str
    tokens: TokenFor

    async def call(self, method: str, path: str, body: Json | None = None, **query: str) -> Reply:
        url = self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = rest_authorization(self.tokens, method, path, query)
        return await asyncio.to_thread(_send, method, url, data, headers)

    async def get(self, path: str, **query: str) -> Reply:
        return await self.call("GET", path, None, **query)

    async def post(self, path: str, body: Json | None = None, **query: str) -> Reply:
        return await self.call("POST", path, {} if body is None else body, **query)

    async def patch(self, path: str, body: Json, **query: str) -> Reply:
        return await self.call("PATCH", path, body, **query)


def _send(method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Reply:
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return Reply(response.status, json.loads(response.read() or b"{}"))
    except urllib.error.HTTPError as error:  # 4xx/5xx: the body is a google.rpc.Status
        with error:
            return Reply(error.code, json.loads(error.read() or b"{}"))


def ok(reply: Reply) -> Json:
    assert reply.status == 200, reply
    return reply.body


def all_keys(value: object) -> set[str]:
    """Every object key at any depth of a JSON value (or a BSON document)."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


# --- what is stored: MongoDB and Kafka ------------------------------------------------------


@dataclass
class Stored:
    system: System
    mongo: AsyncMongoClient[Json]

    def collection(self, service: str, name: str) -> Any:
        return self.mongo[self.system.database(service)][name]

    async def counts(self) -> dict[str, int]:
        return {
            f"{service}/{name}": await self.collection(service, name).count_documents({})
            for service, name in COLLECTIONS
        }

    async def document(self, service: str, name: str, doc_id: str) -> Json | None:
        """The raw document, outbox included."""
        return await self.collection(service, name).find_one({"_id": doc_id})

    async def settled(self, service: str, name: str, doc_id: str) -> Json:
        """The document once its outbox relay has published every pending event and its
        sweep has cleared the pending mark (the relay's last write to it)."""

        async def published() -> Json | None:
            doc = await self.document(service, name, doc_id)
            done = doc is not None and not doc.get(OUTBOX) and PENDING not in doc
            return doc if done else None

        return await eventually(published, what=f"{service}/{name}/{doc_id} published")

    async def events(self, topic: str) -> Counter[str]:
        """How many records each key has on `topic`, from the beginning to the current end."""
        kafka = self.system.stack.kafka
        consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
        await consumer.start()
        keys: Counter[str] = Counter()
        try:
            partitions = [TopicPartition(topic, p) for p in await partition_ids(kafka, topic)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                while await consumer.position(tp) < ends[tp]:
                    for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                        if record.offset < ends[tp]:
                            keys[(record.key or b"").decode()] += 1
        finally:
            await consumer.stop()
        return keys

    async def events_for(self, topic: str, key: str, count: int) -> None:
        """Wait until `topic` holds exactly `count` events under `key`."""

        async def reached() -> bool | None:
            return True if (await self.events(topic))[key] == count else None

        await eventually(reached, what=f"{count} event(s) for {key} on {topic}")

    @asynccontextmanager
    async def unchanged(
        self,
        *,
        document: tuple[str, str, str] | None = None,
        events: tuple[str, str] | None = None,
    ) -> AsyncIterator[None]:
        """Assert that the block stores nothing: same document counts in every collection,
        the same raw `document` (service, collection, id; or still absent), and no new
        event under `events` (topic, key). Pending outbox entries are in the raw document,
        so an unchanged document with an empty outbox also means no event is on its way."""
        counts = await self.counts()
        doc = await self.document(*document) if document else None
        assert doc is None or not doc.get("_outbox"), "settle the document first"
        before = (await self.events(events[0]))[events[1]] if events else 0
        yield
        assert await self.counts() == counts
        if document:
            assert await self.document(*document) == doc
        if events:
            assert (await self.events(events[0]))[events[1]] == before


@pytest.fixture
def rest(running_system: System) -> Rest:
    return Rest(running_system.envoy_url, tokens_of(running_system.stack))


@pytest.fixture(autouse=True)
async def beans_in_the_catalog(running_system: System, rest: Rest) -> None:
    """The product `an_order` names, put in the catalog by staff (docs/api.md's example),
    and in orders' copy of it."""
    product = {k: v for k, v in BEANS.items() if k != "id"}
    reply = await rest.post("/v1/products", product, productId=BEANS_ID)
    assert reply.status in (200, 409), reply
    await asyncio.to_thread(wait_for_copies, running_system, {BEANS_ID})


@pytest.fixture
async def stored(running_system: System) -> AsyncIterator[Stored]:
    client: AsyncMongoClient[Json] = AsyncMongoClient(
        running_system.stack.mongodb_uri, serverSelectionTimeoutMS=10_000
    )
    try:
        yield Stored(running_system, client)
    finally:
        await client.close()


# --- flow steps -----------------------------------------------------------------------------


async def orders_copy(rest: Rest, customer_id: str, version: int) -> Json | None:
    """Orders' copy of the customer once it has reached `version` (None until then)."""
    reply = await rest.get(f"/v1/customers/{customer_id}/orders")
    if reply.status == 404:
        return None
    copy = ok(reply)
    return copy if int(copy["customerVersion"]) >= version else None


async def customer_known_to_orders(rest: Rest, body: Json | None = None, **query: str) -> Json:
    customer = ok(await rest.post("/v1/customers", body or seed_customer(), **query))
    await eventually(lambda: orders_copy(rest, customer["id"], 1), what="orders' copy")
    return customer


async def fulfillment_of(rest: Rest, order_id: str) -> Json:
    async def exists() -> Json | None:
        reply = await rest.get(f"/v1/fulfillments/{order_id}")
        return None if reply.status == 404 else ok(reply)

    return await eventually(exists, what=f"fulfillment of {order_id}")


async def approved_order(rest: Rest) -> tuple[Json, Json]:
    """A customer and an order of theirs that is approved and known to fulfillment."""
    customer = await customer_known_to_orders(rest)
    order = ok(await rest.post(f"/v1/customers/{customer['id']}/orders", an_order()))
    ok(await rest.post(f"/v1/orders/{order['orderId']}:approve", {"note": "paid"}))
    await fulfillment_of(rest, order["orderId"])
    return customer, order


# --- the flows ------------------------------------------------------------------------------


async def test_customer_order_and_fulfillment_flows_in_json(rest: Rest) -> None:
    # Flow 1: a customer is created and changed in accounts; orders' copy follows.
    customer = ok(await rest.post("/v1/customers", seed_customer()))
    cid = customer["id"]
    assert customer["name"]["firstName"] == "Rajesh" and customer["version"] == "1"
    assert customer["contact"]["primaryPhone"] == "555-666-7777"
    assert customer["creditCards"][0]["number"] == "************1111"
    assert customer["creditCards"][0]["nameOnCard"] == "Rajesh V. Iyer"
    assert customer["addresses"][1]["address2"] == ""  # null in, the default out
    assert {"createTime", "updateTime", "postalCode", "creditCards"} <= all_keys(customer)
    assert not [k for k in all_keys(customer) if "_" in k], "responses use camelCase only"
    assert ok(await rest.get(f"/v1/customers/{cid}")) == customer

    copy = await eventually(lambda: orders_copy(rest, cid, 1), what="orders' copy v1")
    assert copy["addresses"] == customer["addresses"] and "creditCards" not in copy

    addresses = [dict(a) for a in customer["addresses"]]
    addresses[1].update(address1="500 Congress Avenue", city="Austin", state="TX")
    addresses[1].update(postalCode="73301", description="New home")
    patch = {"etag": customer["etag"], "addresses": addresses}
    updated = ok(await rest.patch(f"/v1/customers/{cid}", patch, updateMask="addresses"))
    assert updated["version"] == "2" and updated["addresses"] == addresses
    assert updated["name"] == customer["name"]  # outside the mask: untouched
    assert updated["creditCards"] == customer["creditCards"]

    copy = await eventually(lambda: orders_copy(rest, cid, 2), what="orders' copy v2")
    assert copy["customerVersion"] == "2"
    assert (copy["name"], copy["contact"], copy["addresses"]) == (
        updated["name"],
        updated["contact"],
        updated["addresses"],
    )

    # Flow 2: an order is placed and approved; fulfillment gets it with the new address.
    order = ok(await rest.post(f"/v1/customers/{cid}/orders", an_order(quantity=2)))
    oid = order["orderId"]
    assert (order["customerId"], order["status"]) == (cid, "ORDER_STATUS_CREATED")
    assert order["total"] == {"currencyCode": "USD", "units": "49", "nanos": 0}
    approved = ok(await rest.post(f"/v1/orders/{oid}:approve", {"note": "paid"}))
    assert approved["status"] == "ORDER_STATUS_APPROVED"

    fulfillment = await fulfillment_of(rest, oid)
    assert fulfillment["status"] == "ORDER_STATUS_APPROVED"
    assert fulfillment["shippingAddress"] == updated["addresses"][1]
    assert fulfillment["name"] == updated["name"] and fulfillment["items"] == order["items"]

    # Flow 3: fulfillment walks the shipping statuses; orders' history follows.
    for verb, note, status in [
        ("process", "", "PROCESSING"),
        ("ship", "UPS 1Z999AA10123456784", "SHIPPED"),
        ("markInTransit", "", "IN_TRANSIT"),
        ("confirmReceived", "signed by R. Iyer", "RECEIVED"),
    ]:
        stepped = ok(await rest.post(f"/v1/fulfillments/{oid}:{verb}", {"note": note}))
        assert stepped["status"] == f"ORDER_STATUS_{status}"

    async def received() -> Json | None:
        got = ok(await rest.get(f"/v1/orders/{oid}"))
        return got if got["status"] == "ORDER_STATUS_RECEIVED" else None

    final = await eventually(received, what="RECEIVED in orders")
    assert [e["status"] for e in final["statusEvents"]] == LIFECYCLE
    notes = {e["status"]: e["note"] for e in final["statusEvents"]}
    assert notes["ORDER_STATUS_APPROVED"] == "paid"
    assert notes["ORDER_STATUS_SHIPPED"] == "UPS 1Z999AA10123456784"

    history = ok(await rest.get(f"/v1/customers/{cid}/orders"))
    assert [o["orderId"] for o in history["orders"]] == [oid]
    assert history["orders"][0]["statusEvents"] == final["statusEvents"]
    listed = ok(await rest.get("/v1/orders", customerId=cid, status="ORDER_STATUS_RECEIVED"))
    assert [o["orderId"] for o in listed["orders"]] == [oid]


# --- errors: each one stores nothing --------------------------------------------------------


async def test_bad_customer_input_is_400_with_field_violations(rest: Rest, stored: Stored) -> None:
    cid = new_id("bad-email")
    with_bad_email = seed_customer(email="not-an-email")
    async with stored.unchanged(document=(*ACCOUNT, cid), events=(CUSTOMER_CHANGES, cid)):
        reply = await rest.post("/v1/customers", with_bad_email, customerId=cid)
    assert (reply.status, reply.code) == (400, 3)
    assert reply.violations() == {"customer.contact.email": "must be an e-mail address"}

    cid = (await customer_known_to_orders(rest))["id"]
    await stored.settled(*ACCOUNT, cid)
    await stored.events_for(CUSTOMER_CHANGES, cid, 1)
    async with stored.unchanged(document=(*ACCOUNT, cid), events=(CUSTOMER_CHANGES, cid)):
        reply = await rest.patch(
            f"/v1/customers/{cid}",
            {"contact": {"email": "still@not@an-email"}},
            updateMask="contact.email",
        )
    assert (reply.status, reply.code) == (400, 3)
    assert list(reply.violations()) == ["customer.contact.email"]


async def test_zero_quantity_is_400_with_field_violations(rest: Rest, stored: Stored) -> None:
    customer = await customer_known_to_orders(rest)
    chosen = new_id("zero")
    oid = f"{customer['id']}.{chosen}"  # a chosen id names the customer's order (docs/api.md)
    async with stored.unchanged(document=(*ORDER, oid), events=(FULFILLMENT_REQUESTS, oid)):
        reply = await rest.post(
            f"/v1/customers/{customer['id']}/orders", an_order(quantity=0), orderId=chosen
        )
    assert (reply.status, reply.code) == (400, 3)
    assert reply.violations() == {"order.items[0].quantity": "must be between 1 and 1000"}


PATCH_EMAIL = {"contact": {"email": "a@example.com"}}


@pytest.mark.parametrize(
    ("method", "path", "body", "stored_in", "topic"),
    [
        ("GET", "/v1/customers/{id}", None, ACCOUNT, None),
        ("GET", "/v1/customers/{id}/orders", None, ORDERS_COPY, None),
        ("PATCH", "/v1/customers/{id}", PATCH_EMAIL, ACCOUNT, CUSTOMER_CHANGES),
        ("GET", "/v1/orders/{id}", None, ORDER, None),
        ("POST", "/v1/orders/{id}:approve", {"note": "paid"}, ORDER, FULFILLMENT_REQUESTS),
        ("POST", "/v1/orders/{id}:cancel", {}, ORDER, FULFILLMENT_REQUESTS),
        ("GET", "/v1/fulfillments/{id}", None, FULFILLMENT, None),
        ("POST", "/v1/fulfillments/{id}:process", {}, FULFILLMENT, STATUS_CHANGES),
    ],
)
async def test_unknown_ids_are_404(
    rest: Rest,
    stored: Stored,
    method: str,
    path: str,
    body: Json | None,
    stored_in: tuple[str, str],
    topic: str | None,
) -> None:
    unknown = new_id("unknown")
    query = {"updateMask": "contact.email"} if method == "PATCH" else {}
    async with stored.unchanged(
        document=(*stored_in, unknown), events=(topic, unknown) if topic else None
    ):
        reply = await rest.call(method, path.format(id=unknown), body, **query)
    assert (reply.status, reply.code) == (404, 5)
    assert unknown in reply.body["message"]


async def test_stale_etag_is_409_aborted(rest: Rest, stored: Stored) -> None:
    customer = await customer_known_to_orders(rest)
    cid, stale_etag = customer["id"], customer["etag"]
    first = {"etag": stale_etag, "contact": {"email": "first@example.com"}}
    ok(await rest.patch(f"/v1/customers/{cid}", first, updateMask="contact.email"))
    await stored.settled(*ACCOUNT, cid)
    await stored.events_for(CUSTOMER_CHANGES, cid, 2)

    second = {"etag": stale_etag, "contact": {"email": "second@example.com"}}
    async with stored.unchanged(document=(*ACCOUNT, cid), events=(CUSTOMER_CHANGES, cid)):
        reply = await rest.patch(f"/v1/customers/{cid}", second, updateMask="contact.email")
    assert (reply.status, reply.code) == (409, 10)
    assert ok(await rest.get(f"/v1/customers/{cid}"))["contact"]["email"] == "first@example.com"


async def test_client_chosen_id_taken_is_409_already_exists(rest: Rest, stored: Stored) -> None:
    cid = new_id("taken")
    await customer_known_to_orders(rest, seed_customer("first@example.com"), customerId=cid)
    await stored.settled(*ACCOUNT, cid)
    await stored.events_for(CUSTOMER_CHANGES, cid, 1)
    async with stored.unchanged(document=(*ACCOUNT, cid), events=(CUSTOMER_CHANGES, cid)):
        reply = await rest.post(
            "/v1/customers", seed_customer("second@example.com"), customerId=cid
        )
    assert (reply.status, reply.code) == (409, 6)

    chosen = new_id("taken-order")
    created = ok(
        await rest.post(f"/v1/customers/{cid}/orders", an_order(quantity=1), orderId=chosen)
    )
    assert created["orderId"] == f"{cid}.{chosen}"
    async with stored.unchanged(document=(*ORDER, created["orderId"])):
        reply = await rest.post(
            f"/v1/customers/{cid}/orders", an_order(quantity=5), orderId=chosen
        )
    assert (reply.status, reply.code) == (409, 6)


async def test_illegal_transitions_are_400_failed_precondition(rest: Rest, stored: Stored) -> None:
    _, order = await approved_order(rest)
    oid = order["orderId"]
    await stored.settled(*FULFILLMENT, oid)
    async with stored.unchanged(document=(*FULFILLMENT, oid), events=(STATUS_CHANGES, oid)):
        reply = await rest.post(f"/v1/fulfillments/{oid}:ship", {"note": "too early"})
    assert (reply.status, reply.code) == (400, 9)  # FAILED_PRECONDITION is 400, not 412
    [violation] = reply.detail(PRECONDITION_FAILURE)["violations"]
    assert violation["subject"] == f"fulfillments/{oid}"

    await stored.settled(*ORDER, oid)
    await stored.events_for(FULFILLMENT_REQUESTS, oid, 1)
    async with stored.unchanged(document=(*ORDER, oid), events=(FULFILLMENT_REQUESTS, oid)):
        reply = await rest.post(f"/v1/orders/{oid}:reject", {"reason": "changed my mind"})
    assert (reply.status, reply.code) == (400, 9)
    [violation] = reply.detail(PRECONDITION_FAILURE)["violations"]
    assert violation["subject"] == f"orders/{oid}"


async def test_order_for_a_customer_orders_does_not_know_is_400_failed_precondition(
    rest: Rest, stored: Stored
) -> None:
    chosen, nobody = new_id("orphan"), new_id("nobody")
    async with stored.unchanged(document=(*ORDER, f"{nobody}.{chosen}")):
        reply = await rest.post(f"/v1/customers/{nobody}/orders", an_order(), orderId=chosen)
    assert (reply.status, reply.code) == (400, 9)


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "query"),
    [
        ("unknown query parameter", "GET", "/v1/customers", None, {"colour": "red"}),
        ("unknown query parameter", "POST", "/v1/customers", seed_customer(), {"colour": "red"}),
        ("short enum name", "POST", "/v1/customers", with_short_enum(), {}),
        ("path/body conflict", "POST", "/v1/orders/{id}:approve", {"order_id": "other"}, {}),
    ],
)
async def test_envoy_rejects_before_any_service_with_400(
    rest: Rest,
    stored: Stored,
    case: str,
    method: str,
    path: str,
    body: Json | None,
    query: dict[str, str],
) -> None:
    async with stored.unchanged():
        reply = await rest.call(method, path.format(id=new_id("any")), body, **query)
    assert (reply.status, reply.code) == (400, 3), case
    assert reply.body["details"] == []  # Envoy's own answer, not a service's
    if "colour" in query:
        assert 'Could not find field "colour"' in reply.body["message"]


@pytest.mark.parametrize(
    ("where", "method", "path", "mutate", "field"),
    [
        ("top level", "POST", "/v1/customers", lambda b: b.update(nickname="Ziggy"), "nickname"),
        (
            "nested",
            "POST",
            "/v1/customers",
            lambda b: b["contact"].update(fax="555-000-0000"),
            "contact.fax",
        ),
        (
            "in a list",
            "POST",
            "/v1/customers",
            lambda b: b["addresses"][0].update(geo={"lat": 37.7}),
            "addresses.geo",
        ),
        (
            "custom method",
            "POST",
            "/v1/orders/{id}:approve",
            lambda b: b.update(approver="me"),
            "approver",
        ),
    ],
)
async def test_unknown_json_fields_are_400_and_nothing_stored(
    rest: Rest, stored: Stored, where: str, method: str, path: str, mutate: Any, field: str
) -> None:
    """Envoy's transcoder would drop them silently (envoyproxy/envoy#46623): the strict-JSON
    Lua filter in front of it (envoy/strict_json.lua, schema from the descriptor set) refuses."""
    body: Json = seed_customer() if path == "/v1/customers" else {"note": "ok"}
    mutate(body)
    async with stored.unchanged():
        reply = await rest.call(method, path.format(id=new_id("any")), body)
    assert (reply.status, reply.code) == (400, 3), where
    assert f'unknown field "{field}"' in reply.body["message"]


async def test_known_fields_in_both_spellings_pass_the_strict_filter(rest: Rest) -> None:
    body = seed_customer()
    body["contact"]["primary_phone"] = body["contact"].pop("primaryPhone")
    customer = await customer_known_to_orders(rest, body)
    assert customer["contact"]["primaryPhone"]
