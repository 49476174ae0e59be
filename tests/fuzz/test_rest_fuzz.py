"""Property-based fuzzing of the REST surface through Envoy, driven by the OpenAPI document.

Schemathesis (4.x, which reads Swagger 2.0 as protoc-gen-openapiv2 writes it) generates
requests for every operation in docs/openapi/storefront.swagger.json: schema-valid ones and,
in its negative mode, ones that break the schema (wrong types, missing required fields,
out-of-range values, unexpected parameters). Each request goes to Envoy's JSON transcoder in
front of the running services.

The properties:

- no 5xx, ever (schemathesis' `not_a_server_error` check);
- a rejected write (POST / PATCH / DELETE answered 4xx) changes nothing: every service's
  collections keep their document counts, the documents the request names are unchanged and
  no event topic gained a record (the same snapshot as the gRPC tests).

Random path parameters would only ever reach "not found", so about half the examples point
them at real resources (customers known to orders; orders and fulfillments in a state their
custom method leaves, or any state), and about half the customer and order bodies are the
demo's valid drafts with one field mutated (schema-driven bodies almost never pass the
services' validation of e-mails, phones, ZIP codes, prices), so requests reach the handlers.

The document's one quirk for schemathesis is handled in `load_document`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import reject
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from storefront.common.v1 import common_pb2
from storefront_cli.demo import PEOPLE, PRODUCTS, customer_draft, order_draft
from tests.fuzz.conftest import HALF_SETTINGS, REPORT, Harness
from tests.fuzz.test_grpc_fuzz import mutated
from tests.support import rest_authorization

pytestmark = pytest.mark.e2e

Status = common_pb2.OrderStatus
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "storefront.swagger.json"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TIMEOUT = 20.0


def load_document() -> dict[str, Any]:
    """The OpenAPI document, with dotted path parameters renamed.

    protoc-gen-openapiv2 names the parameter of `PATCH /v1/customers/{customer.id}` after the
    request field it fills, `customer.id`. Schemathesis fills path templates with
    `str.format`, which reads `{customer.id}` as attribute `id` of a parameter `customer`
    and gives up on the operation ("InvalidSchema"). Renaming the placeholder (and the
    parameter) to `customer_id_` changes nothing on the wire: the URL is the same.
    """
    document = json.loads(OPENAPI.read_text())
    paths: dict[str, Any] = {}
    for template, item in document["paths"].items():
        for dotted in re.findall(r"{([^}]*\.[^}]*)}", template):
            plain = dotted.replace(".", "_") + "_"
            template = template.replace(f"{{{dotted}}}", f"{{{plain}}}")
            for operation in item.values():
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path" and parameter["name"] == dotted:
                        parameter["name"] = plain
        paths[template] = item
    document["paths"] = paths
    return document


schema = schemathesis.openapi.from_dict(load_document())

SOURCES = {
    ":approve": [Status.ORDER_STATUS_CREATED],
    ":reject": [Status.ORDER_STATUS_CREATED],
    ":cancel": [
        Status.ORDER_STATUS_CREATED,
        Status.ORDER_STATUS_APPROVED,
        Status.ORDER_STATUS_PROCESSING,
    ],
    ":process": [Status.ORDER_STATUS_APPROVED],
    ":ship": [Status.ORDER_STATUS_PROCESSING],
    ":markInTransit": [Status.ORDER_STATUS_SHIPPED],
    ":confirmReceived": [Status.ORDER_STATUS_IN_TRANSIT],
}
"""The states each custom method moves an order or fulfillment out of."""
ORDER_STATES = [
    Status.ORDER_STATUS_CREATED,
    Status.ORDER_STATUS_APPROVED,
    Status.ORDER_STATUS_REJECTED,
    Status.ORDER_STATUS_CANCELLED,
]
FULFILLMENT_STATES = [
    Status.ORDER_STATUS_APPROVED,
    Status.ORDER_STATUS_PROCESSING,
    Status.ORDER_STATUS_SHIPPED,
    Status.ORDER_STATUS_IN_TRANSIT,
    Status.ORDER_STATUS_RECEIVED,
    Status.ORDER_STATUS_CANCELLED,
]


def customer_body(draw: Any) -> Message:
    return customer_draft(PEOPLE[draw(st.integers(0, len(PEOPLE) - 1))])


def order_body(draw: Any) -> Message:
    line = st.tuples(st.integers(0, len(PRODUCTS) - 1), st.integers(1, 3))
    return order_draft(*draw(st.lists(line, min_size=1, max_size=3)))


VALID_BODIES = {
    ("POST", "/v1/customers"): customer_body,
    ("PATCH", "/v1/customers/{customer_id_}"): customer_body,
    ("POST", "/v1/customers/{customerId}/orders"): order_body,
}


def real_id(h: Harness, path: str, name: str, draw: Any) -> str:
    """An id of an existing resource for path parameter `name` of `path`."""
    if name in ("customerId", "customer_id_"):
        if path.endswith("/orders"):
            return h.known_customer(draw(st.integers(0, 2)))
        # Accounts writes: a fresh customer, so deletes and updates cannot starve the pool.
        return str(h.new_customer(draw(st.integers(0, 2))).id)
    fulfillments = path.startswith("/v1/fulfillments")
    states = FULFILLMENT_STATES if fulfillments else ORDER_STATES
    sources = SOURCES.get(":" + path.rpartition(":")[2], states) if ":" in path else states
    state = draw(st.sampled_from(sources if draw(st.booleans()) else states))
    return h.fulfillment_in(state) if fulfillments else h.order_in(state)


def targets(path: str, params: dict[str, Any]) -> dict[str, list[str]]:
    """The documents a request names, per service (the path parameters' ids)."""
    ids = sorted({str(v) for v in params.values() if v not in (None, "")})
    if path.startswith("/v1/fulfillments") or path.startswith("/v1/orders"):
        return {"orders": ids, "fulfillment": ids}
    if path.endswith("/orders"):
        return {"orders": ids}
    return {"accounts": ids, "orders": ids}


def service_of(path: str) -> str:
    if path.startswith("/v1/fulfillments"):
        return "fulfillment"
    if path.startswith("/v1/orders") or path.endswith("/orders"):
        return "orders"
    return "accounts"


def ids_in_json(response: Any) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    if not isinstance(body, dict):
        return []
    return [str(body[k]) for k in ("id", "customerId", "orderId") if body.get(k)]


@schema.parametrize()
@schema.given(data=st.data())
@HALF_SETTINGS
def test_rest_requests_never_fail_on_the_server_nor_store_when_rejected(
    case: schemathesis.Case, data: st.DataObject, harness: Harness
) -> None:
    path = case.operation.path
    method = case.method.upper()
    params = case.path_parameters if case.path_parameters is not None else {}
    for name in sorted(params):
        if data.draw(st.booleans(), label=f"real {name}"):
            params[name] = real_id(harness, path, name, data.draw)

    body = VALID_BODIES.get((method, path))
    if body is not None and data.draw(st.booleans(), label="valid body"):
        # A body that is valid all the way down (the demo's drafts), then one field mutated,
        # as the gRPC targeted tests do: schema-driven bodies almost never pass validation.
        draft = data.draw(mutated(body(data.draw)), label="body")
        try:
            case.body = json_format.MessageToDict(draft)
        except json_format.SerializeToJsonError:
            reject()  # e.g. a Timestamp out of range, which proto JSON cannot even spell
        if data.draw(st.booleans(), label="no query"):
            case.query = {}  # generated ids and masks are mostly invalid: leave them out

    write = method in WRITES
    named = targets(path, params)
    before = harness.before(named) if write else None
    query = {k: str(v) for k, v in (case.query or {}).items()}
    auth = rest_authorization(harness.tokens, method, case.formatted_path, query)
    response = case.call(base_url=harness.system.envoy_url, timeout=TIMEOUT, headers=auth)
    seen = REPORT.setdefault(f"REST {method} {path}", {})
    seen[str(response.status_code)] = seen.get(str(response.status_code), 0) + 1
    case.validate_response(response, checks=[not_a_server_error])
    if not write:
        return
    if response.status_code < 400:
        harness.accepted(service_of(path), *map(str, params.values()), *ids_in_json(response))
    elif response.status_code < 500:
        assert before is not None
        changed = harness.changes_since(before, named)
        assert not changed, (
            f"{method} {path} answered {response.status_code} ({response.text[:300]}) "
            f"but the database changed: {changed}\n{case.as_curl_command()}"
        )
