"""The bench's payloads: one realistic customer (the demo's shape), built once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from storefront.accounts.v1 import accounts_pb2, events_pb2
from storefront_cli import demo


def customer_body(i: int = 0) -> dict[str, Any]:
    """The demo's first customer (storefront_cli.demo) with every optional field filled, the
    `i`th of its kind (own street number and e-mail): about 0.5 KiB."""
    body = demo.customer_body(demo.PEOPLE[0])
    body["name"]["middleName"] = "K"
    body["contact"]["secondaryPhone"] = "555-666-8888"
    body["contact"]["email"] = f"rajesh.iyer{i}@example.com"
    for address in body["addresses"]:
        address["address1"] = f"{100 + i % 900} Oak Street"
        address["address2"] = "Apartment 4B"
    return body


def customer_draft(i: int = 0) -> accounts_pb2.Customer:
    return json_format.ParseDict(customer_body(i), accounts_pb2.Customer())


def fixed_customer() -> accounts_pb2.Customer:
    """What GetCustomer returns for a stored customer: id, version, etag, times, masked card."""
    c = customer_draft()
    c.id = "0" * 26
    c.version = 3
    c.etag = 'W/"3"'
    now = datetime.now(UTC)
    c.create_time.FromDatetime(now)
    c.update_time.FromDatetime(now)
    for card in c.credit_cards:
        card.number = "*" * 12 + card.number[-4:]
    return c


def customer_changed(customer_id: str, version: int, i: int = 0) -> events_pb2.CustomerChanged:
    """The event accounts publishes for `customer_draft(i)` at `version`."""
    c = customer_draft(i)
    event = events_pb2.CustomerChanged(customer_id=customer_id, version=version)
    event.name.CopyFrom(c.name)
    event.contact.CopyFrom(c.contact)
    event.addresses.extend(c.addresses)
    event.change_time.FromDatetime(datetime.now(UTC))
    return event
