"""Customer rules. Pure: no I/O, no clock, no ids made here; callers pass them in."""

from __future__ import annotations

import re
from datetime import datetime

from google.protobuf import field_mask_pb2

from storefront.accounts.v1 import accounts_pb2, events_pb2
from storefront.common.v1 import common_pb2
from svckit import etags
from svckit.errors import FieldViolation, InvalidArgument, Violations
from svckit.etags import etag_of

Customer = accounts_pb2.Customer

# Matched whole (fullmatch): a `$` anchor also accepts a trailing newline.
EMAIL = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
PHONE = re.compile(r"\+?[0-9][0-9 ().-]{5,22}[0-9]")
POSTAL_CODE = re.compile(r"\d{5}(-\d{4})?")
EXPIRATION = re.compile(r"(0?[1-9]|1[0-2])/(\d{2}|\d{4})")
CARD_SEPARATORS = re.compile(r"[ -]")
MAX_TEXT = 200
MAX_ADDRESSES = 10
MAX_CARDS = 10
MASK_CHAR = "*"

# Paths UpdateCustomer accepts; an empty mask means the top-level ones the patch populates.
TOP_LEVEL_FIELDS = ("name", "contact", "addresses", "credit_cards")
NESTED_FIELDS = {
    "name": ("title", "first_name", "middle_name", "last_name", "suffix"),
    "contact": ("primary_phone", "secondary_phone", "email"),
}


def _text(v: Violations, path: str, value: str, *, required: bool = False) -> bool:
    """Is `value` present (if required) and within MAX_TEXT? Only then may a pattern look at
    it: a regex over a megabyte string blocks the loop (issue 25 finding 3)."""
    if required and not value.strip():
        v.add(path, "is required")
        return False
    if len(value) > MAX_TEXT:
        v.add(path, f"must be at most {MAX_TEXT} characters")
        return False
    return True


def _pattern(
    v: Violations, path: str, value: str, pattern: re.Pattern[str], rule: str, *, required: bool
) -> None:
    """A text field that must match `pattern` whole, checked only once its length is fine."""
    if _text(v, path, value, required=required) and value and not pattern.fullmatch(value):
        v.add(path, rule)


def validate_name(name: common_pb2.PersonName, v: Violations, path: str) -> None:
    for field in NESTED_FIELDS["name"]:
        _text(
            v,
            f"{path}.{field}",
            getattr(name, field),
            required=field in ("first_name", "last_name"),
        )


def validate_contact(contact: common_pb2.Contact, v: Violations, path: str) -> None:
    phone = "must be a phone number, e.g. 555-666-7777"
    _pattern(v, f"{path}.primary_phone", contact.primary_phone, PHONE, phone, required=True)
    _pattern(v, f"{path}.secondary_phone", contact.secondary_phone, PHONE, phone, required=False)
    _pattern(v, f"{path}.email", contact.email, EMAIL, "must be an e-mail address", required=True)


def validate_addresses(addresses: list[common_pb2.Address], v: Violations, path: str) -> None:
    if len(addresses) > MAX_ADDRESSES:
        v.add(path, f"at most {MAX_ADDRESSES} addresses")
    for i, a in enumerate(addresses):
        p = f"{path}[{i}]"
        if a.type == common_pb2.ADDRESS_TYPE_UNSPECIFIED:
            v.add(f"{p}.type", "must be ADDRESS_TYPE_BILLING or ADDRESS_TYPE_SHIPPING")
        elif a.type not in common_pb2.AddressType.values():
            v.add(f"{p}.type", "is not a known address type")
        for field in ("address1", "city", "state"):
            _text(v, f"{p}.{field}", getattr(a, field), required=True)
        _text(v, f"{p}.description", a.description)
        _text(v, f"{p}.address2", a.address2)
        zip_rule = "must be a ZIP code: 12345 or 12345-6789"
        _pattern(v, f"{p}.postal_code", a.postal_code, POSTAL_CODE, zip_rule, required=True)


def card_digits(number: str) -> str:
    return CARD_SEPARATORS.sub("", number)


def is_masked(number: str) -> bool:
    return MASK_CHAR in number


def validate_cards(cards: list[accounts_pb2.CreditCard], v: Violations, path: str) -> None:
    if len(cards) > MAX_CARDS:
        v.add(path, f"at most {MAX_CARDS} cards")
    for i, c in enumerate(cards):
        p = f"{path}[{i}]"
        if c.type == accounts_pb2.CREDIT_CARD_TYPE_UNSPECIFIED:
            v.add(f"{p}.type", "must be CREDIT_CARD_TYPE_PRIMARY or CREDIT_CARD_TYPE_ALTERNATE")
        elif c.type not in accounts_pb2.CreditCardType.values():
            v.add(f"{p}.type", "is not a known card type")
        digits = card_digits(c.number[:MAX_TEXT])
        if len(c.number) > MAX_TEXT or (
            not is_masked(c.number) and not (digits.isdigit() and 12 <= len(digits) <= 19)
        ):
            v.add(f"{p}.number", "must be 12 to 19 digits")
        if len(c.expiration) > MAX_TEXT or not EXPIRATION.fullmatch(c.expiration):
            v.add(f"{p}.expiration", "must be MM/YY or MM/YYYY")
        _text(v, f"{p}.name_on_card", c.name_on_card, required=True)
        _text(v, f"{p}.description", c.description)


def validate_customer(c: Customer, v: Violations, path: str = "customer") -> None:
    if not c.HasField("name"):
        v.add(f"{path}.name", "is required")
    else:
        validate_name(c.name, v, f"{path}.name")
    if not c.HasField("contact"):
        v.add(f"{path}.contact", "is required")
    else:
        validate_contact(c.contact, v, f"{path}.contact")
    validate_addresses(list(c.addresses), v, f"{path}.addresses")
    validate_cards(list(c.credit_cards), v, f"{path}.credit_cards")


def mask_number(digits: str) -> str:
    return MASK_CHAR * max(0, len(digits) - 4) + digits[-4:]


def masked(c: Customer) -> Customer:
    """The customer as every response shows it: card numbers reduced to the last four. One
    already shown so (as the repository reads customers) is returned itself, not copied: the
    result is for reading only."""
    if all(card.number == mask_number(card_digits(card.number)) for card in c.credit_cards):
        return c
    out = Customer()
    out.CopyFrom(c)
    for card in out.credit_cards:
        card.number = mask_number(card_digits(card.number))
    return out


def check_etag(current: Customer, etag: str) -> None:
    etags.check_etag("customer", current.id, current.etag, etag)


def _stamp(c: Customer, version: int, now: datetime) -> None:
    c.version = version
    c.etag = etag_of(version)
    c.update_time.FromDatetime(now)


def new_customer(draft: Customer, customer_id: str, now: datetime) -> Customer:
    """Validate a create request's customer and make it version 1."""
    v = Violations()
    validate_customer(draft, v)
    for i, card in enumerate(draft.credit_cards):
        if is_masked(card.number):
            v.add(f"customer.credit_cards[{i}].number", "must be the full number")
    v.raise_if_any()
    c = Customer()
    c.CopyFrom(draft)
    c.id = customer_id
    for card in c.credit_cards:
        card.number = card_digits(card.number)
        card.card_id = ""  # the store gives each card its id
    c.create_time.FromDatetime(now)
    _stamp(c, 1, now)
    return c


def _mask_paths(mask: field_mask_pb2.FieldMask, patch: Customer) -> list[str]:
    populated = [f.name for f, _ in patch.ListFields() if f.name in TOP_LEVEL_FIELDS]
    paths = list(mask.paths) or populated
    if not paths:
        raise InvalidArgument([FieldViolation("update_mask", "names no field to update")])
    bad = []
    for path in paths:
        head, _, tail = path.partition(".")
        if not (
            (head in TOP_LEVEL_FIELDS and not tail)
            or (head in NESTED_FIELDS and tail in NESTED_FIELDS[head])
        ):
            bad.append(FieldViolation("update_mask", f"cannot update {path!r}"))
    if bad:
        raise InvalidArgument(bad)
    return paths


def changes_cards(patch: Customer, mask: field_mask_pb2.FieldMask) -> bool:
    """Whether an update may change the cards: its paths name them. Only then are the stored
    numbers needed (to keep the cards sent back masked)."""
    return "credit_cards" in _mask_paths(mask, patch)


def updated_customer(
    current: Customer, patch: Customer, mask: field_mask_pb2.FieldMask, now: datetime
) -> Customer:
    """Apply the masked fields of `patch`, validate the result, bump the version.

    A card sent back masked, as responses show it, keeps the stored card it names: by its
    `card_id` (the stored card's id), or, from a client that does not send card ids,
    by its last four digits when exactly one stored card ends in them. That lets clients
    round-trip a customer without ever holding card numbers, and two cards with the same last
    four never take each other's number.
    """
    check_etag(current, patch.etag)
    paths = _mask_paths(mask, patch)
    result = Customer()
    result.CopyFrom(current)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        patch, result, replace_message_field=True, replace_repeated_field=True
    )
    v = Violations()
    sent_cards = result.credit_cards if "credit_cards" in paths else []
    for i, card in enumerate(sent_cards):  # cards outside the mask stay as stored, ids and all
        if is_masked(card.number):
            kept = stored_card(current, card)
            if isinstance(kept, str):
                v.add(f"customer.credit_cards[{i}].number", kept)
            else:
                card.number, card.card_id = kept.number, kept.card_id
        else:
            card.number = card_digits(card.number)
            card.card_id = ""  # a new number is a new card; the store gives it its id
    validate_customer(result, v)
    v.raise_if_any()
    _stamp(result, current.version + 1, now)
    return result


def stored_card(
    current: Customer, masked_card: accounts_pb2.CreditCard
) -> accounts_pb2.CreditCard | str:
    """The stored card a masked card sent back refers to, or why none can be chosen."""
    last4 = card_digits(masked_card.number)[-4:]
    if masked_card.card_id:
        by_id = [c for c in current.credit_cards if c.card_id == masked_card.card_id]
        if not by_id:
            return "card_id matches no stored card"
        if card_digits(by_id[0].number)[-4:] != last4:
            return "masked number does not end like the stored card its card_id names"
        return by_id[0]
    by_last4 = [c for c in current.credit_cards if card_digits(c.number)[-4:] == last4]
    if not by_last4:
        return "masked number matches no stored card"
    if len({c.card_id or c.number for c in by_last4}) > 1:
        return "masked number matches several stored cards; send the card_id it was read with"
    return by_last4[0]


def customer_changed(c: Customer) -> events_pb2.CustomerChanged:
    """The event orders copies from: everything but the cards."""
    event = events_pb2.CustomerChanged(customer_id=c.id, version=c.version)
    event.name.CopyFrom(c.name)
    event.contact.CopyFrom(c.contact)
    event.addresses.extend(c.addresses)
    event.change_time.CopyFrom(c.update_time)
    return event


def _deletion(customer_id: str, version: int, now: datetime) -> events_pb2.CustomerDeleted:
    event = events_pb2.CustomerDeleted(customer_id=customer_id, version=version)
    event.delete_time.FromDatetime(now)
    return event


def customer_deleted(c: Customer, now: datetime) -> events_pb2.CustomerDeleted:
    return _deletion(c.id, c.version + 1, now)


def tombstone(c: Customer) -> Customer:
    """What stays of a deleted customer: its id and the deletion's version, nothing personal.
    It stays so a late retry of a create with the same id cannot bring the customer back."""
    return Customer(id=c.id, version=c.version + 1)


def current_state(
    c: Customer, *, deleted: bool, now: datetime
) -> events_pb2.CustomerChanged | events_pb2.CustomerDeleted:
    """The event that tells the others what the customer is now (repairs): its state, or, for
    a tombstone (which already carries the deletion's version), the deletion."""
    return _deletion(c.id, c.version, now) if deleted else customer_changed(c)
