from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import field_mask_pb2, json_format

from accounts_svc import domain
from storefront.accounts.v1 import accounts_pb2
from svckit.errors import Aborted, InvalidArgument

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def draft(**overrides: object) -> accounts_pb2.Customer:
    body: dict[str, Any] = {
        "name": {"title": "Mr.", "firstName": "Rajesh", "lastName": "Iyer"},
        "contact": {"primaryPhone": "555-666-7777", "email": "rajesh@example.com"},
        "addresses": [
            {
                "type": "ADDRESS_TYPE_SHIPPING",
                "address1": "123 Oak Street",
                "city": "Sunrise",
                "state": "CA",
                "postalCode": "12345-6789",
            }
        ],
        "creditCards": [
            {
                "type": "CREDIT_CARD_TYPE_PRIMARY",
                "number": "1234-6789-0000-4242",
                "expiration": "6/29",
                "nameOnCard": "Rajesh Iyer",
            }
        ],
    }
    body.update(overrides)
    return json_format.ParseDict(body, accounts_pb2.Customer())


def violations(exc: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in exc.value.violations}


def test_new_customer_is_version_1_with_plain_digits() -> None:
    c = domain.new_customer(draft(), "c1", NOW)
    assert (c.id, c.version, c.etag) == ("c1", 1, 'W/"1"')
    assert c.credit_cards[0].number == "1234678900004242"


def test_every_bad_field_is_reported_at_once() -> None:
    bad = draft(
        contact={"primaryPhone": "x", "email": "not-an-email"},
        addresses=[{"type": "ADDRESS_TYPE_UNSPECIFIED", "postalCode": "ABC"}],
        creditCards=[{"type": "CREDIT_CARD_TYPE_PRIMARY", "number": "12", "expiration": "13/29"}],
    )
    with pytest.raises(InvalidArgument) as exc:
        domain.new_customer(bad, "c1", NOW)
    assert {
        "customer.contact.primary_phone",
        "customer.contact.email",
        "customer.addresses[0].type",
        "customer.addresses[0].postal_code",
        "customer.addresses[0].city",
        "customer.credit_cards[0].number",
        "customer.credit_cards[0].expiration",
        "customer.credit_cards[0].name_on_card",
    } <= violations(exc)


def test_masked_shows_last_four_only() -> None:
    c = domain.masked(domain.new_customer(draft(), "c1", NOW))
    assert c.credit_cards[0].number == "************4242"


def test_event_never_carries_cards() -> None:
    event = domain.customer_changed(domain.new_customer(draft(), "c1", NOW))
    assert "4242" not in str(event) and "credit" not in str(event)
    assert event.version == 1 and event.name.first_name == "Rajesh"


def test_update_applies_mask_and_bumps_version() -> None:
    current = domain.new_customer(draft(), "c1", NOW)
    patch = accounts_pb2.Customer(id="c1", etag=current.etag)
    patch.contact.email = "new@example.com"
    mask = field_mask_pb2.FieldMask(paths=["contact.email"])
    updated = domain.updated_customer(current, patch, mask, NOW)
    assert updated.contact.email == "new@example.com"
    assert updated.contact.primary_phone == "555-666-7777"
    assert updated.version == 2


def test_stale_etag_is_aborted() -> None:
    current = domain.new_customer(draft(), "c1", NOW)
    patch = accounts_pb2.Customer(id="c1", etag='W/"0"')
    with pytest.raises(Aborted):
        domain.updated_customer(current, patch, field_mask_pb2.FieldMask(paths=["name"]), NOW)


def test_unknown_mask_path_is_invalid() -> None:
    current = domain.new_customer(draft(), "c1", NOW)
    with pytest.raises(InvalidArgument):
        domain.updated_customer(
            current, accounts_pb2.Customer(id="c1"), field_mask_pb2.FieldMask(paths=["id"]), NOW
        )


def test_only_an_update_whose_paths_name_the_cards_changes_them() -> None:
    patch = accounts_pb2.Customer(id="c1")
    patch.contact.email = "new@example.com"
    assert not domain.changes_cards(patch, field_mask_pb2.FieldMask(paths=["contact.email"]))
    assert not domain.changes_cards(patch, field_mask_pb2.FieldMask())  # the populated fields
    assert domain.changes_cards(patch, field_mask_pb2.FieldMask(paths=["credit_cards"]))
    patch.credit_cards.add()
    assert domain.changes_cards(patch, field_mask_pb2.FieldMask())
    with pytest.raises(InvalidArgument):
        domain.changes_cards(patch, field_mask_pb2.FieldMask(paths=["credit_cards.number"]))


def test_masked_copies_only_a_customer_whose_numbers_are_not_masked_yet() -> None:
    stored = domain.new_customer(draft(), "c1", NOW)
    plain = stored.credit_cards[0].number
    shown = domain.masked(stored)
    assert shown is not stored and stored.credit_cards[0].number == plain
    assert shown.credit_cards[0].number == "************4242"
    assert domain.masked(shown) is shown  # as the repository reads it: no second copy
    spaced = accounts_pb2.Customer()
    spaced.CopyFrom(shown)
    spaced.credit_cards[0].number = "1234 6789 0000 4242"
    assert domain.masked(spaced).credit_cards[0].number == "************4242"


def test_masked_card_round_trips_to_stored_number() -> None:
    current = domain.new_customer(draft(), "c1", NOW)
    patch = domain.masked(current)
    mask = field_mask_pb2.FieldMask(paths=["credit_cards"])
    updated = domain.updated_customer(current, patch, mask, NOW)
    assert updated.credit_cards[0].number == "1234678900004242"


def two_cards_ending_alike() -> accounts_pb2.Customer:
    """A stored customer as the repository hands it over: each card with its card_id."""
    current = domain.new_customer(
        draft(
            creditCards=[
                {"type": t, "number": n, "expiration": "6/29", "nameOnCard": "Rajesh Iyer"}
                for t, n in (
                    ("CREDIT_CARD_TYPE_PRIMARY", "4000 0000 1111 4242"),
                    ("CREDIT_CARD_TYPE_ALTERNATE", "5500-0000-2222-4242"),
                )
            ]
        ),
        "c1",
        NOW,
    )
    for card, card_id in zip(current.credit_cards, ("id-visa", "id-master"), strict=True):
        card.card_id = card_id
    return current


def test_masked_cards_with_the_same_last_four_keep_their_own_numbers() -> None:
    """Sent back as read (masked, with card_id) in the other order, neither card takes the
    other's number (matching by last four did: both became the same card)."""
    current = two_cards_ending_alike()
    patch = domain.masked(current)
    patch.credit_cards[0].type, patch.credit_cards[1].type = (
        patch.credit_cards[1].type,
        patch.credit_cards[0].type,
    )
    patch.credit_cards.reverse()
    mask = field_mask_pb2.FieldMask(paths=["credit_cards"])
    updated = domain.updated_customer(current, patch, mask, NOW)
    assert [(c.card_id, c.number) for c in updated.credit_cards] == [
        ("id-master", "5500000022224242"),
        ("id-visa", "4000000011114242"),
    ]


def test_masked_card_without_card_id_matching_several_cards_is_refused() -> None:
    """An old client that sends no card_id: unambiguous last four still work, ambiguous ones
    are an error naming the card, never a guess."""
    current = two_cards_ending_alike()
    patch = domain.masked(current)
    for card in patch.credit_cards:
        card.card_id = ""
    with pytest.raises(InvalidArgument) as exc:
        domain.updated_customer(
            current, patch, field_mask_pb2.FieldMask(paths=["credit_cards"]), NOW
        )
    assert violations(exc) == {"customer.credit_cards[0].number", "customer.credit_cards[1].number"}
    assert "card_id" in exc.value.violations[0].description


def test_card_id_of_another_card_or_wrong_last_four_is_refused() -> None:
    current = two_cards_ending_alike()
    for card_id, number in (("id-nope", "************4242"), ("id-visa", "************9999")):
        patch = accounts_pb2.Customer(id="c1")
        patch.credit_cards.add().CopyFrom(domain.masked(current).credit_cards[0])
        patch.credit_cards[0].card_id, patch.credit_cards[0].number = card_id, number
        with pytest.raises(InvalidArgument):
            domain.updated_customer(
                current, patch, field_mask_pb2.FieldMask(paths=["credit_cards"]), NOW
            )


def test_an_update_outside_the_cards_keeps_their_ids() -> None:
    """Card ids are random (issue 25, finding 6), so only the store can give one: an update
    whose mask leaves the cards out must keep each card's id, not take it for a new card."""
    current = two_cards_ending_alike()
    patch = accounts_pb2.Customer(etag=current.etag)
    patch.contact.email = "moved@example.com"
    mask = field_mask_pb2.FieldMask(paths=["contact.email"])
    updated = domain.updated_customer(current, patch, mask, NOW)
    assert [(c.card_id, c.number) for c in updated.credit_cards] == [
        (c.card_id, c.number) for c in current.credit_cards
    ]


def test_a_new_number_is_a_new_card_whatever_card_id_it_claims() -> None:
    current = two_cards_ending_alike()
    patch = accounts_pb2.Customer(id="c1")
    patch.credit_cards.add().CopyFrom(current.credit_cards[0])
    patch.credit_cards[0].number = "4000 0000 3333 1881"
    updated = domain.updated_customer(
        current, patch, field_mask_pb2.FieldMask(paths=["credit_cards"]), NOW
    )
    assert (updated.credit_cards[0].number, updated.credit_cards[0].card_id) == (
        "4000000033331881",
        "",
    )


def test_a_tombstone_keeps_the_id_and_the_deletions_version_and_nothing_personal() -> None:
    live = domain.new_customer(draft(), "c-1", datetime(2026, 5, 1, tzinfo=UTC))
    gone = domain.tombstone(live)
    assert gone == accounts_pb2.Customer(id="c-1", version=live.version + 1)
    assert gone.version == domain.customer_deleted(live, datetime(2026, 5, 2, tzinfo=UTC)).version
