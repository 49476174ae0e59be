"""Property-based fuzzing of every write RPC over gRPC, straight to the services.

Two kinds of input per RPC:

- generic: any request message built from its descriptor (`message_of`): strings empty,
  unicode, long or hostile; ints negative and huge; enums with unknown numbers; nested
  messages; bounded repeated fields; google.type.Money, FieldMask and Timestamp values that
  are valid or just outside what is valid;
- targeted: a request that is valid all the way down (a real customer, order or fulfillment
  in a chosen state, demo-style drafts, a current etag) with at most one field mutated
  (`mutated`), so validation's every branch and the state machines' every edge are reached.

The property, for every request: the status is never a server fault (INTERNAL, UNKNOWN,
DATA_LOSS, nor UNAVAILABLE / DEADLINE_EXCEEDED / UNIMPLEMENTED from a crash or hang), and a
rejected request (any non-OK status) changes nothing: every service's collections keep their
document counts, the documents it names are unchanged (version included) and gained no outbox
entry, and no event topic gained a record.

STOREFRONT_FUZZ_EXAMPLES sets the examples per targeted test (default 60; the generic tests
run half as many).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from storefront.accounts.v1 import accounts_pb2
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.demo import PEOPLE, PRODUCTS, customer_draft, order_draft
from tests.fuzz.conftest import (
    EXAMPLES,
    FUZZ_SETTINGS,
    HALF_SETTINGS,
    REPORT,
    SERVER_FAULTS,
    Harness,
    unique_id,
)

pytestmark = pytest.mark.e2e

Status = common_pb2.OrderStatus
FD = FieldDescriptor
AnyDescriptor = Any
"""A message or field descriptor: the stubs split them between protobuf's Python and upb
classes, and either arrives here."""

# --- values ------------------------------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

HOSTILE_STRINGS = [
    "",
    " ",
    "\t\n\r",
    "\x00",
    "a\x00b",
    "\u202e\u200b\ufeff",
    "é",
    "名前",
    "🙂" * 3,
    "$gt",
    "$where",
    '{"$ne": null}',
    "a.b",
    "_id",
    "../../etc/passwd",
    "%00%ff",
    "%s%n%x",
    "' OR '1'='1",
    "<script>alert(1)</script>",
    "\\",
    "*",
    "null",
    "-1",
    "NaN",
    "9" * 40,
    "x" * 63,
    "x" * 64,
    "x" * 200,
    "x" * 201,
    "x" * 501,
    "x" * 2001,
    "x" * 100_000,
    "customers/1",
    'W/"1"',
    'W/"999999999999999999999"',
    'W/"-1"',
]

# Near-valid values for fields whose names say what they hold, so validation's finer
# branches get reached, not just "is required".
HINTS: dict[str, list[str]] = {
    "email": ["a@b.co", "raj.iyer@example.com", "a@b", "@b.co", "a b@c.de", "a@-.x", "a@b.c" * 40],
    "primary_phone": ["555-666-7777", "+1 (555) 666-7777", "555", "phone", "5" * 30],
    "secondary_phone": ["555-666-7777", "12", "+", "555-666-777a"],
    "postal_code": ["12345", "12345-6789", "1234", "123456", "12345-", "ABCDE"],
    "number": [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "************1111",
        "41111111111",
        "41111111111111111111",
        "4111x11111111111",
    ],
    "expiration": ["06/29", "6/2029", "13/29", "00/29", "06-29", "06/2", "06/29 "],
    "currency_code": ["USD", "EUR", "JPY", "usd", "US", "USDD", "€€€"],
    "etag": ['W/"1"', 'W/"2"', '"1"', "1", 'W/""'],
    "customer_id": ["c-1", "retry-me-1", "A", "_x", "-x", "a" * 63, "a" * 64, "a b", "ä"],
    "order_id": ["o-1", "A", "_x", "-x", "a" * 63, "a" * 64, "a/b"],
    "id": ["sku-100", "c-1", "A"],
    "state": ["CA", "TX", "C", "California"],
}


def strings(name: str = "") -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HINTS.get(name, []) + HOSTILE_STRINGS),
        st.text(max_size=30),
        st.text(alphabet=st.characters(codec="utf-8", min_codepoint=0x80), max_size=12),
        st.text(min_size=195, max_size=210),
        st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,70}\Z"),
    )


def ints(lo: int, hi: int, favourites: tuple[int, ...] = ()) -> st.SearchStrategy[int]:
    edges = [
        v for v in (0, 1, -1, 2, 1000, 1001, 10**9, 10**9 + 1, lo, hi, *favourites) if lo <= v <= hi
    ]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def enums(field: AnyDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in field.enum_type.values]
    return st.one_of(st.sampled_from(known), st.integers(*INT32))  # proto3 enums are open


def _mask_vocabulary() -> list[str]:
    customer = accounts_pb2.Customer.DESCRIPTOR
    paths: list[str] = []
    for f in customer.fields:
        paths += [f.name, f.json_name]
        if f.message_type is not None:
            paths += [f"{f.name}.{g.name}" for g in f.message_type.fields]
    return paths + ["", "*", ".", "name.", ".name", "name..first_name", "nope", "name.nope"]


MASK_PATHS = _mask_vocabulary()


MONEY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "currency_code": strings("currency_code"),
    "units": ints(*INT64, favourites=(24, -24, 10**9 * 1000)),
    "nanos": ints(*INT32, favourites=(999_999_999, -999_999_999, -(10**9), 500_000_000)),
}
VALID_SECONDS = (-62135596800, 253402300799)  # 0001-01-01 .. 9999-12-31
TIMESTAMP_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "seconds": ints(
        *INT64,
        favourites=(*VALID_SECONDS, VALID_SECONDS[0] - 1, VALID_SECONDS[1] + 1, 1_800_000_000),
    ),
    "nanos": ints(*INT32, favourites=(999_999_999, 10**9)),
}
MASK_PATH = st.one_of(st.sampled_from(MASK_PATHS), strings())
SPECIAL_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "google.type.Money": MONEY_FIELDS,
    "google.protobuf.Timestamp": TIMESTAMP_FIELDS,
    "google.protobuf.FieldMask": {"paths": MASK_PATH},
}
"""Per-field values for the well-known types: near their valid ranges and just outside."""


def special_message(descriptor: AnyDescriptor) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    fields = SPECIAL_FIELDS[descriptor.full_name]
    if descriptor.full_name == "google.protobuf.FieldMask":
        return st.builds(cls, paths=st.lists(MASK_PATH, max_size=4))
    return st.builds(cls, **fields)


def scalar(field: AnyDescriptor) -> st.SearchStrategy[Any]:
    special = SPECIAL_FIELDS.get(field.containing_type.full_name)
    if special is not None:
        return special[field.name]
    t = field.type
    if t == FD.TYPE_STRING:
        return strings(field.name)
    if t == FD.TYPE_ENUM:
        return enums(field)
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return ints(*INT32)
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return ints(*INT64)
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return ints(*UINT32)
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return ints(*UINT64)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats(width=64 if t == FD.TYPE_DOUBLE else 32)
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    raise NotImplementedError(f"no strategy for {field.full_name} (type {t})")


def single_value(field: AnyDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FD.TYPE_MESSAGE:
        return message_of(field.message_type, depth + 1)
    return scalar(field)


def field_value(field: AnyDescriptor, depth: int) -> st.SearchStrategy[Any]:
    one = single_value(field, depth)
    if not field.is_repeated:
        return one
    return st.one_of(
        st.lists(one, max_size=3),
        one.map(lambda v: [v] * 11),  # one past the services' limits on addresses and cards
    )


def message_of(descriptor: AnyDescriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of this type: each field independently unset or set to a fuzzed value."""
    if descriptor.full_name in SPECIAL_FIELDS:
        return special_message(descriptor)
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 4:
        return st.just(cls())
    optional = {f.name: field_value(f, depth) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: build(cls, values))


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        assign(msg, msg.DESCRIPTOR.fields_by_name[name], value)
    return msg


def assign(msg: Message, field: AnyDescriptor, value: Any) -> None:
    target = getattr(msg, field.name)
    if field.is_repeated:
        msg.ClearField(field.name)
        if field.type == FD.TYPE_MESSAGE:
            for v in value:
                target.add().CopyFrom(v)
        else:
            target.extend(value)
    elif field.type == FD.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(msg, field.name, value)


# --- one-field mutations of a valid request ----------------------------------------------

Slot = tuple[Message, AnyDescriptor, int | None]


def slots(msg: Message, prefix: str = "") -> dict[str, Slot]:
    """Every place one mutation can hit: each field (set or not), and each list element."""
    out: dict[str, Slot] = {}
    for f in msg.DESCRIPTOR.fields:
        path = prefix + f.name
        out[path] = (msg, f, None)
        value = getattr(msg, f.name)
        if f.is_repeated:
            for i, element in enumerate(value):
                out[f"{path}[{i}]"] = (msg, f, i)
                if f.type == FD.TYPE_MESSAGE:
                    out.update(slots(element, f"{path}[{i}]."))
        elif f.type == FD.TYPE_MESSAGE and msg.HasField(f.name):
            out.update(slots(value, path + "."))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Message) -> Message:
    """`base` itself (1 in 4), or `base` with exactly one field, list or element changed."""
    msg = type(base)()
    msg.CopyFrom(base)
    if draw(st.integers(0, 3)) == 0:
        return msg
    places = slots(msg)
    parent, field, index = places[draw(st.sampled_from(sorted(places)))]
    if index is not None:  # one element of a list
        container = getattr(parent, field.name)
        new = draw(single_value(field, 0))
        if field.type == FD.TYPE_MESSAGE:
            container[index].CopyFrom(new)
        else:
            container[index] = new
    elif field.is_repeated:
        container = getattr(parent, field.name)
        op = draw(st.sampled_from(["clear", "append", "duplicate", "flood", "replace"]))
        if op == "clear":
            parent.ClearField(field.name)
        elif op == "append":
            assign(parent, field, [*container, draw(single_value(field, 0))])
        elif op in ("duplicate", "flood") and len(container):
            assign(
                parent, field, [*container, *([container[0]] * (1 if op == "duplicate" else 11))]
            )
        else:
            assign(parent, field, draw(field_value(field, 0)))
    elif field.type == FD.TYPE_MESSAGE:
        if draw(st.booleans()):
            parent.ClearField(field.name)
        else:
            assign(parent, field, draw(single_value(field, 0)))
    else:
        assign(parent, field, draw(scalar(field)))
    return msg


# --- the property --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    service: str
    method: str
    request: type[Message]
    targets: Callable[[Any], dict[str, list[str]]]
    """Which documents (service -> ids) the request names, to compare before and after."""


def _ids(*values: str) -> list[str]:
    return sorted({v for v in values if v})


def _order_targets(r: Any) -> dict[str, list[str]]:
    return {"orders": _ids(r.order_id), "fulfillment": _ids(r.order_id)}


RPCS = [
    Rpc(
        "accounts",
        "CreateCustomer",
        accounts_pb2.CreateCustomerRequest,
        lambda r: {"accounts": _ids(r.customer_id), "orders": _ids(r.customer_id)},
    ),
    Rpc(
        "accounts",
        "UpdateCustomer",
        accounts_pb2.UpdateCustomerRequest,
        lambda r: {"accounts": _ids(r.customer.id), "orders": _ids(r.customer.id)},
    ),
    Rpc(
        "accounts",
        "DeleteCustomer",
        accounts_pb2.DeleteCustomerRequest,
        lambda r: {"accounts": _ids(r.customer_id), "orders": _ids(r.customer_id)},
    ),
    Rpc(
        "orders",
        "CreateOrder",
        orders_pb2.CreateOrderRequest,
        lambda r: {"orders": _ids(r.customer_id, r.order_id), "fulfillment": _ids(r.order_id)},
    ),
    Rpc("orders", "ApproveOrder", orders_pb2.ApproveOrderRequest, _order_targets),
    Rpc("orders", "RejectOrder", orders_pb2.RejectOrderRequest, _order_targets),
    Rpc("orders", "CancelOrder", orders_pb2.CancelOrderRequest, _order_targets),
    Rpc(
        "fulfillment",
        "ProcessFulfillment",
        fulfillment_pb2.ProcessFulfillmentRequest,
        _order_targets,
    ),
    Rpc("fulfillment", "ShipFulfillment", fulfillment_pb2.ShipFulfillmentRequest, _order_targets),
    Rpc(
        "fulfillment",
        "MarkFulfillmentInTransit",
        fulfillment_pb2.MarkFulfillmentInTransitRequest,
        _order_targets,
    ),
    Rpc(
        "fulfillment",
        "ConfirmFulfillmentReceived",
        fulfillment_pb2.ConfirmFulfillmentReceivedRequest,
        _order_targets,
    ),
]
BY_METHOD = {rpc.method: rpc for rpc in RPCS}


def check(h: Harness, rpc: Rpc, request: Message) -> grpc.StatusCode:
    """Send `request`; no server fault, and if rejected, nothing stored anywhere."""
    targets = rpc.targets(request)
    before = h.before(targets)
    outcome = h.call(rpc.service, rpc.method, request)
    assert outcome.code not in SERVER_FAULTS, (
        f"{rpc.method} answered {outcome.code.name}: {outcome.details}\nrequest: {request!r}"
    )
    if outcome.code != grpc.StatusCode.OK:
        changed = h.changes_since(before, targets)
        assert not changed, (
            f"{rpc.method} was rejected with {outcome.code.name} ({outcome.details}) "
            f"but the database changed: {changed}\nrequest: {request!r}"
        )
    return outcome.code


def test_the_snapshot_sees_what_a_request_stores_and_publishes(harness: Harness) -> None:
    """The checker itself: an accepted create shows up in accounts, in orders' copy and on
    the topic, so "no difference" below means something."""
    customer_id = unique_id("probe")
    targets = {"accounts": [customer_id], "orders": [customer_id]}
    before = harness.before(targets)
    harness.ok(
        "accounts",
        "CreateCustomer",
        accounts_pb2.CreateCustomerRequest(
            customer=customer_draft(PEOPLE[0]), customer_id=customer_id
        ),
    )
    harness.quiet()
    changed = "\n".join(before.diff(harness.snapshot(targets)))
    for expected in (
        "accounts/customer.accounts: ",
        "orders/customers: ",
        f"accounts/customer.accounts/{customer_id!r}: None -> ",
        "topic accounts.customer.change: ",
    ):
        assert expected in changed, f"{expected!r} not in:\n{changed}"


# --- generic: any message from the descriptor ----------------------------------------------


@pytest.mark.parametrize("method", [rpc.method for rpc in RPCS])
def test_any_request_is_answered_without_fault_or_side_effect(
    harness: Harness, method: str
) -> None:
    rpc = BY_METHOD[method]
    seen = REPORT.setdefault(f"gRPC generic {method}", {})

    @HALF_SETTINGS
    @given(request=message_of(rpc.request.DESCRIPTOR))
    def run(request: Message) -> None:
        code = check(harness, rpc, request)
        seen[code.name] = seen.get(code.name, 0) + 1

    run()


# --- targeted: valid requests with one field mutated ---------------------------------------

Draw = Callable[[st.SearchStrategy[Any]], Any]

ORDER_STATES = [
    Status.ORDER_STATUS_CREATED,
    Status.ORDER_STATUS_APPROVED,
    Status.ORDER_STATUS_REJECTED,
    Status.ORDER_STATUS_CANCELLED,
    Status.ORDER_STATUS_PROCESSING,
]
FULFILLMENT_STATES = [
    Status.ORDER_STATUS_APPROVED,
    Status.ORDER_STATUS_PROCESSING,
    Status.ORDER_STATUS_SHIPPED,
    Status.ORDER_STATUS_IN_TRANSIT,
    Status.ORDER_STATUS_RECEIVED,
    Status.ORDER_STATUS_CANCELLED,
]
NOTES = st.sampled_from(["", "payment declined", "UPS 1Z999AA10123456784", "é🙂"])


def customer_id_choice(h: Harness, draw: Draw, kinds: tuple[str, ...] = ()) -> str:
    kind = draw(st.sampled_from(kinds or ("fresh", "pool", "missing", "deleted")))
    if kind == "fresh":
        return str(h.new_customer(draw(st.integers(0, len(PEOPLE) - 1))).id)
    if kind == "pool":
        return h.known_customer(draw(st.integers(0, 2)))
    if kind == "deleted":
        gone = h.new_customer()
        h.ok("accounts", "DeleteCustomer", accounts_pb2.DeleteCustomerRequest(customer_id=gone.id))
        return str(gone.id)
    return unique_id("missing")


def create_customer_base(h: Harness, draw: Draw) -> Message:
    person = PEOPLE[draw(st.integers(0, len(PEOPLE) - 1))]
    kind = draw(st.sampled_from(["server", "client", "existing"]))
    customer_id = {"server": "", "client": unique_id("c"), "existing": h.known_customer(0)}[kind]
    return accounts_pb2.CreateCustomerRequest(
        customer=customer_draft(person), customer_id=customer_id
    )


def update_customer_base(h: Harness, draw: Draw) -> Message:
    customer_id = customer_id_choice(h, draw)
    current = h.get_customer(customer_id)
    patch = customer_draft(PEOPLE[draw(st.integers(0, len(PEOPLE) - 1))])
    patch.id = customer_id
    send_etag = draw(st.booleans())  # drawn whatever the state, so draws stay replayable
    if current is not None and send_etag:
        patch.etag = current.etag
    mask = draw(
        st.sampled_from(
            [
                [],
                ["name"],
                ["contact"],
                ["addresses"],
                ["credit_cards"],
                ["name.first_name"],
                ["contact.email", "addresses"],
                ["name", "contact", "addresses", "credit_cards"],
            ]
        )
    )
    return accounts_pb2.UpdateCustomerRequest(
        customer=patch, update_mask=field_mask_pb2.FieldMask(paths=mask)
    )


def delete_customer_base(h: Harness, draw: Draw) -> Message:
    # Never the pool: later tests place orders for those customers.
    customer_id = customer_id_choice(h, draw, ("fresh", "fresh", "missing", "deleted"))
    current = h.get_customer(customer_id)
    send_etag = draw(st.booleans())
    etag = current.etag if current is not None and send_etag else ""
    return accounts_pb2.DeleteCustomerRequest(customer_id=customer_id, etag=etag)


def create_order_base(h: Harness, draw: Draw) -> Message:
    customer_id = customer_id_choice(h, draw, ("pool", "pool", "pool", "missing", "deleted"))
    lines = draw(
        st.lists(
            st.tuples(st.integers(0, len(PRODUCTS) - 1), st.integers(1, 3)), min_size=1, max_size=3
        )
    )
    order_id = draw(st.sampled_from(["", "fresh", "existing"]))
    if order_id == "fresh":
        order_id = unique_id("o")
    elif order_id == "existing":
        order_id = h.order_in(Status.ORDER_STATUS_CREATED)
    return orders_pb2.CreateOrderRequest(
        customer_id=customer_id, order=order_draft(*lines), order_id=order_id
    )


def order_id_choice(
    h: Harness,
    draw: Draw,
    states: Sequence[int],
    sources: Sequence[int],
    finder: Callable[[int], str],
) -> str:
    """Mostly an order (or fulfillment) in a state the RPC can leave, else in any state,
    else one that does not exist."""
    kind = draw(st.sampled_from(["source", "source", "any", "any", "missing"]))
    if kind == "missing":
        return unique_id("missing")
    return finder(draw(st.sampled_from(sources if kind == "source" else states)))


def order_step_base(
    request_cls: type[Message], note_field: str, *sources: int
) -> Callable[[Harness, Draw], Message]:
    def base(h: Harness, draw: Draw) -> Message:
        order_id = order_id_choice(h, draw, ORDER_STATES, list(sources), h.order_in)
        return request_cls(order_id=order_id, **{note_field: draw(NOTES)})

    return base


def fulfillment_step_base(
    request_cls: type[Message], source: int
) -> Callable[[Harness, Draw], Message]:
    def base(h: Harness, draw: Draw) -> Message:
        order_id = order_id_choice(h, draw, FULFILLMENT_STATES, [source], h.fulfillment_in)
        return request_cls(order_id=order_id, note=draw(NOTES))

    return base


BASES: dict[str, Callable[[Harness, Draw], Message]] = {
    "CreateCustomer": create_customer_base,
    "UpdateCustomer": update_customer_base,
    "DeleteCustomer": delete_customer_base,
    "CreateOrder": create_order_base,
    "ApproveOrder": order_step_base(
        orders_pb2.ApproveOrderRequest, "note", Status.ORDER_STATUS_CREATED
    ),
    "RejectOrder": order_step_base(
        orders_pb2.RejectOrderRequest, "reason", Status.ORDER_STATUS_CREATED
    ),
    "CancelOrder": order_step_base(
        orders_pb2.CancelOrderRequest,
        "reason",
        Status.ORDER_STATUS_CREATED,
        Status.ORDER_STATUS_APPROVED,
        Status.ORDER_STATUS_PROCESSING,
    ),
    "ProcessFulfillment": fulfillment_step_base(
        fulfillment_pb2.ProcessFulfillmentRequest, Status.ORDER_STATUS_APPROVED
    ),
    "ShipFulfillment": fulfillment_step_base(
        fulfillment_pb2.ShipFulfillmentRequest, Status.ORDER_STATUS_PROCESSING
    ),
    "MarkFulfillmentInTransit": fulfillment_step_base(
        fulfillment_pb2.MarkFulfillmentInTransitRequest, Status.ORDER_STATUS_SHIPPED
    ),
    "ConfirmFulfillmentReceived": fulfillment_step_base(
        fulfillment_pb2.ConfirmFulfillmentReceivedRequest, Status.ORDER_STATUS_IN_TRANSIT
    ),
}


@pytest.mark.parametrize("method", [rpc.method for rpc in RPCS])
def test_valid_request_with_one_field_mutated(harness: Harness, method: str) -> None:
    rpc = BY_METHOD[method]
    seen = REPORT.setdefault(f"gRPC targeted {method}", {})

    @FUZZ_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        base = BASES[method](harness, data.draw)
        request = data.draw(mutated(base), label="request")
        code = check(harness, rpc, request)
        seen[code.name] = seen.get(code.name, 0) + 1

    run()
    # The targeted strategies exist to reach the deep paths: some requests must get through.
    if EXAMPLES >= 30:
        assert seen.get("OK", 0) > 0, f"no {method} request was accepted: {seen}"


# --- found by fuzzing, fixed: error messages are bounded (svckit.errors.bounded) ---------------

LONG_ID = "x" * 8000


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("DeleteCustomer", accounts_pb2.DeleteCustomerRequest(customer_id=LONG_ID)),
        ("ApproveOrder", orders_pb2.ApproveOrderRequest(order_id=LONG_ID)),
        ("ShipFulfillment", fulfillment_pb2.ShipFulfillmentRequest(order_id=LONG_ID)),
    ],
)
def test_unknown_long_id_gets_a_readable_rejection(
    harness: Harness, method: str, request_: Message
) -> None:
    code = check(harness, BY_METHOD[method], request_)
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
