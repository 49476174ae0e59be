"""Product rules. Pure: no I/O, no clock, no ids made here; callers pass them in."""

from __future__ import annotations

import re
from datetime import datetime

from google.protobuf import field_mask_pb2
from google.type import money_pb2

from storefront.catalog.v1 import catalog_pb2, events_pb2
from svckit import etags
from svckit.errors import FieldViolation, InvalidArgument, Violations
from svckit.etags import etag_of

Product = catalog_pb2.Product
State = catalog_pb2.ProductState

MAX_TITLE = 200
MAX_DESCRIPTION = 2000
NANOS = 1_000_000_000
MAX_UNITS = 10**9
CURRENCY = re.compile(r"[A-Z]{3}")  # fullmatch: `$` also accepts a trailing newline
UPDATABLE = ("title", "description", "price")
"""The paths UpdateProduct accepts; an empty mask means the ones the patch populates."""


def validate_price(price: money_pb2.Money, v: Violations, path: str) -> None:
    """A unit price: an ISO 4217 currency, positive, units and nanos agreeing in sign."""
    if not CURRENCY.fullmatch(price.currency_code):
        v.add(f"{path}.currency_code", "must be an ISO 4217 code, e.g. USD")
    if not -NANOS < price.nanos < NANOS or (price.units > 0 and price.nanos < 0):
        v.add(f"{path}.nanos", "must be within (-1e9, 1e9) and agree with units' sign")
    elif price.units * NANOS + price.nanos <= 0:
        v.add(path, "must be positive")
    elif price.units > MAX_UNITS:
        v.add(f"{path}.units", "is too large")


def validate_product(p: Product, v: Violations, path: str = "product") -> None:
    if not p.title.strip():
        v.add(f"{path}.title", "is required")
    elif len(p.title) > MAX_TITLE:
        v.add(f"{path}.title", f"must be at most {MAX_TITLE} characters")
    if len(p.description) > MAX_DESCRIPTION:
        v.add(f"{path}.description", f"must be at most {MAX_DESCRIPTION} characters")
    if not p.HasField("price"):
        v.add(f"{path}.price", "is required")
    else:
        validate_price(p.price, v, f"{path}.price")


def check_etag(current: Product, etag: str) -> None:
    etags.check_etag("product", current.id, current.etag, etag)


def _stamped(p: Product, version: int, now: datetime) -> Product:
    p.version = version
    p.etag = etag_of(version)
    p.update_time.FromDatetime(now)
    return p


def new_product(draft: Product, product_id: str, now: datetime) -> Product:
    """Validate a create request's product and make it version 1, active."""
    v = Violations()
    validate_product(draft, v)
    v.raise_if_any()
    p = Product(id=product_id, title=draft.title, description=draft.description)
    p.price.CopyFrom(draft.price)
    p.state = State.PRODUCT_STATE_ACTIVE
    p.create_time.FromDatetime(now)
    return _stamped(p, 1, now)


def _mask_paths(mask: field_mask_pb2.FieldMask, patch: Product) -> list[str]:
    populated = [f.name for f, _ in patch.ListFields() if f.name in UPDATABLE]
    paths = list(mask.paths) or populated
    if not paths:
        raise InvalidArgument([FieldViolation("update_mask", "names no field to update")])
    bad = [
        FieldViolation("update_mask", f"cannot update {path!r}")
        for path in paths
        if path not in UPDATABLE
    ]
    if bad:
        raise InvalidArgument(bad)
    return paths


def updated_product(
    current: Product, patch: Product, mask: field_mask_pb2.FieldMask, now: datetime
) -> Product:
    """Apply the masked fields of `patch`, validate the result, bump the version. A
    discontinued product can still be corrected (title, description, price): it stays
    discontinued."""
    check_etag(current, patch.etag)
    paths = _mask_paths(mask, patch)
    result = Product()
    result.CopyFrom(current)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        patch, result, replace_message_field=True, replace_repeated_field=True
    )
    v = Violations()
    validate_product(result, v)
    v.raise_if_any()
    return _stamped(result, current.version + 1, now)


def discontinued(current: Product, etag: str, now: datetime) -> Product | None:
    """The product no longer for sale; None when it already is not (nothing to change)."""
    check_etag(current, etag)
    if current.state == State.PRODUCT_STATE_DISCONTINUED:
        return None
    result = Product()
    result.CopyFrom(current)
    result.state = State.PRODUCT_STATE_DISCONTINUED
    return _stamped(result, current.version + 1, now)


def product_changed(p: Product) -> events_pb2.ProductChanged:
    """The event the catalog's copies are kept from: the product's whole current state."""
    event = events_pb2.ProductChanged(
        product_id=p.id, version=p.version, title=p.title, description=p.description, state=p.state
    )
    event.price.CopyFrom(p.price)
    event.change_time.CopyFrom(p.update_time)
    return event
