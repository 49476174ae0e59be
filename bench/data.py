"""The bench's payloads: one realistic customer (the demo's shape), built once."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import json_format

from storefront.accounts.v1 import accounts_pb2, events_pb2


def customer_body(i: int = 0) -> dict[str, object]:
    """A create request's customer as proto JSON: 2 addresses, 1 card (about 0.5 KiB)."""
    address = {
        "address1": f"{100 + i % 900} Oak Street",
        "address2": "Apartment 4B",
        "city": "Sunrise",
        "state": "CA",
        "postalCode": "12345-6789",
    }
    return {
        "name": {"title": "Mr.", "firstName": "Rajesh", "middleName": "K", "lastName": "Iyer"},
        "contact": {
            "primaryPhone": "555-666-7777",
            "secondaryPhone": "555-666-8888",
            "email": f"rajesh.iyer{i}@example.com",
        },
        "addresses": [
            {"type": "ADDRESS_TYPE_BILLING", "description": "Card statements", **address},
            {"type": "ADDRESS_TYPE_SHIPPING", "description": "Home", **address},
        ],
        "creditCards": [
            {
                "type": "CREDIT_CARD_TYPE_PRIMARY",
                "description": "VISA",
                "number": "4111111111111111",
                "expiration": "06/29",
                "nameOnCard": "Rajesh Iyer",
            }
        ],
    }


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
