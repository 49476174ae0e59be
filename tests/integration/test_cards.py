"""Card numbers at rest, against the real database: sealed with client-side field-level
encryption, matched by fingerprint on update, migrated from clear, and rotated to a new key
while requests run."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import random
import time
from collections.abc import AsyncIterator

import bson
import grpc
import pytest
from google.protobuf import field_mask_pb2
from pymongo.errors import EncryptionError

import topology
from accounts_svc import cards, repository
from accounts_svc.cards import CardKeyConfig, CardVault
from accounts_svc.main import build
from stack.embedded import EmbeddedStack
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from storefront_cli import keys
from storefront_cli.clients import channel
from svckit.app import ServiceApp
from tests.integration.test_fulfillment_svc import field_violations
from tests.leaks import card_encodings
from tests.support import eventually, running, settings_for, tokens_of
from tests.unit.test_accounts_domain import draft

pytestmark = pytest.mark.integration
Stub = accounts_pb2_grpc.AccountsServiceStub


def card(
    number: str,
    type_: accounts_pb2.CreditCardType.ValueType = accounts_pb2.CREDIT_CARD_TYPE_PRIMARY,
) -> accounts_pb2.CreditCard:
    return accounts_pb2.CreditCard(
        type=type_, number=number, expiration="6/29", name_on_card="Rajesh Iyer"
    )


def customer_with(*numbers: str) -> accounts_pb2.Customer:
    c = draft()
    del c.credit_cards[:]
    c.credit_cards.extend(card(n) for n in numbers)
    return c


def config_for(database: str) -> CardKeyConfig:
    return CardKeyConfig.from_env(database)


@pytest.fixture
async def accounts(stack: EmbeddedStack, mongo_db_name: str) -> AsyncIterator[ServiceApp]:
    async with running(build, settings_for(stack, "accounts", mongo_db_name)) as app:
        yield app


@pytest.fixture
async def stub(stack: EmbeddedStack, accounts: ServiceApp) -> AsyncIterator[Stub]:
    async with channel(f"127.0.0.1:{accounts.bound_port}", tokens_of(stack)) as channel_:
        yield Stub(channel_)


async def opened(app: ServiceApp, customer_id: str) -> list[str]:
    """The stored numbers, decrypted with the service's keys: what the vault really holds."""
    vault = CardVault(config_for(app.settings.mongodb_database), app.mongo)
    try:
        doc = await app.db[topology.CUSTOMERS].find_one({"_id": customer_id})
        assert doc is not None
        return [(await vault.open(c))["number"] for c in doc.get("credit_cards", [])]
    finally:
        await vault.close()


async def test_a_stored_card_is_ciphertext_last_four_and_fingerprint(
    accounts: ServiceApp, stub: Stub
) -> None:
    number = "4000 0566 5566 5556"
    created = await stub.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_with(number))
    )
    assert created.credit_cards[0].number == "************5556"
    assert len(created.credit_cards[0].card_id) == cards.CARD_ID_CHARS
    doc = await accounts.db[topology.CUSTOMERS].find_one({"_id": created.id})
    assert doc is not None
    raw = bson.encode(doc)
    for needle in card_encodings(number):
        assert needle not in raw
    [stored] = doc["credit_cards"]
    ciphertext = stored[cards.CIPHERTEXT]
    assert isinstance(ciphertext, bson.Binary) and ciphertext.subtype == 6
    assert bytes(ciphertext[1:17]) == bytes(stored[cards.KEY_ID])  # the key id travels with it
    assert await accounts.db["__keyVault"].find_one({"_id": stored[cards.KEY_ID]}) is not None
    assert (stored[cards.LAST4], stored[cards.LENGTH]) == ("5556", 16)
    assert created.credit_cards[0].card_id == stored[cards.CARD_ID]
    assert created.credit_cards[0].card_id not in stored[cards.FINGERPRINT]
    assert "number" not in stored
    assert await opened(accounts, created.id) == ["4000056655665556"]
    got = await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=created.id))
    assert got.credit_cards[0] == created.credit_cards[0]


async def test_a_card_id_says_nothing_about_the_number(accounts: ServiceApp, stub: Stub) -> None:
    """Issue 25, finding 6: ids derived from the digits were equal across customers, so a
    customer could add guessed numbers to their own account and compare ids with another's.
    The same number now gets a new random id each time it is stored, and the fingerprint
    never leaves the service."""
    number = "4111 1111 1111 1111"
    first = await stub.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_with(number))
    )
    second = await stub.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_with(number))
    )
    ids = {first.credit_cards[0].card_id, second.credit_cards[0].card_id}
    patch = accounts_pb2.Customer(id=second.id, etag=second.etag)
    patch.credit_cards.append(card(number))  # the same number sent again in full: a new card
    again = await stub.UpdateCustomer(
        accounts_pb2.UpdateCustomerRequest(
            customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["credit_cards"])
        )
    )
    ids.add(again.credit_cards[0].card_id)
    assert len(ids) == 3 and all(len(i) == cards.CARD_ID_CHARS for i in ids)
    both = {"_id": {"$in": [first.id, second.id]}}
    docs = await accounts.db[topology.CUSTOMERS].find(both).to_list()
    fingerprints = {c[cards.FINGERPRINT] for d in docs for c in d["credit_cards"]}
    assert len(fingerprints) == 1  # still the same number to the service, for matching
    [fingerprint] = fingerprints
    for read in (first, second, again):
        assert fingerprint[: cards.CARD_ID_CHARS] not in str(read)


async def test_two_cards_with_the_same_last_four_round_trip_by_card_id(
    accounts: ServiceApp, stub: Stub
) -> None:
    """Read, reorder and send back masked: each card keeps its own number (by last four, both
    became one of them)."""
    created = await stub.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(
            customer=customer_with("4000 0000 1111 4242", "5500-0000-2222-4242")
        )
    )
    read = await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=created.id))
    assert [c.number for c in read.credit_cards] == ["************4242"] * 2
    patch = accounts_pb2.Customer(id=read.id, etag=read.etag)
    patch.credit_cards.extend(reversed(read.credit_cards))
    mask = field_mask_pb2.FieldMask(paths=["credit_cards"])
    updated = await stub.UpdateCustomer(
        accounts_pb2.UpdateCustomerRequest(customer=patch, update_mask=mask)
    )
    assert [c.card_id for c in updated.credit_cards] == [
        c.card_id for c in reversed(read.credit_cards)
    ]
    assert await opened(accounts, created.id) == ["5500000022224242", "4000000011114242"]
    for c in patch.credit_cards:
        c.card_id = ""
    patch.etag = updated.etag
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateCustomer(
            accounts_pb2.UpdateCustomerRequest(customer=patch, update_mask=mask)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await opened(accounts, created.id) == ["5500000022224242", "4000000011114242"]


async def test_an_update_that_leaves_the_cards_alone_neither_opens_nor_seals_them(
    accounts: ServiceApp, stub: Stub
) -> None:
    """Issue 24: an e-mail change decrypted every card and sealed it again. An update whose
    paths do not name the cards now leaves them byte for byte as stored (a seal is randomised:
    it never gives the same ciphertext twice); one that names them seals them anew."""
    created = await stub.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(
            customer=customer_with("4000 0566 5566 5556", "5500 0000 2222 4242")
        )
    )

    async def stored() -> list[dict[str, object]]:
        doc = await accounts.db[topology.CUSTOMERS].find_one({"_id": created.id})
        assert doc is not None
        return list(doc["credit_cards"])

    before = await stored()
    patch = accounts_pb2.Customer(id=created.id, etag=created.etag)
    patch.contact.email = "new@example.com"
    updated = await stub.UpdateCustomer(
        accounts_pb2.UpdateCustomerRequest(
            customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["contact.email"])
        )
    )
    assert (updated.version, updated.contact.email) == (2, "new@example.com")
    assert list(updated.credit_cards) == list(created.credit_cards)
    assert await stored() == before

    patch = accounts_pb2.Customer(id=created.id, etag=updated.etag)
    patch.credit_cards.extend(updated.credit_cards)
    again = await stub.UpdateCustomer(
        accounts_pb2.UpdateCustomerRequest(
            customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["credit_cards"])
        )
    )
    assert [c.card_id for c in again.credit_cards] == [c.card_id for c in created.credit_cards]
    after = await stored()
    assert all(
        a[cards.CIPHERTEXT] != b[cards.CIPHERTEXT] for a, b in zip(after, before, strict=True)
    )
    assert await opened(accounts, created.id) == ["4000056655665556", "5500000022224242"]


async def test_cards_stored_in_clear_are_encrypted_when_accounts_starts(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """A database from before encryption: plaintext numbers, sealed by the start-up sweep."""
    settings = settings_for(stack, "accounts", mongo_db_name)
    async with running(build, settings) as app:
        await app.db[topology.CUSTOMERS].insert_one(
            {
                "_id": "legacy-1",
                "name": {"first_name": "Old", "last_name": "Timer"},
                "contact": {"primary_phone": "555-666-7777", "email": "old@example.com"},
                "credit_cards": [
                    {
                        "type": "CREDIT_CARD_TYPE_PRIMARY",
                        "number": "6011000990139424",
                        "expiration": "6/29",
                        "name_on_card": "Old Timer",
                    }
                ],
                "version": 4,
                "etag": 'W/"4"',
            }
        )
    async with running(build, settings) as app:

        async def sealed() -> dict[str, object] | None:
            doc = await app.db[topology.CUSTOMERS].find_one({"_id": "legacy-1"})
            return doc if doc and cards.CIPHERTEXT in doc["credit_cards"][0] else None

        doc = await eventually(sealed, timeout=30, what="legacy card encrypted")
        assert b"6011000990139424" not in bson.encode(doc) and doc["version"] == 4
        assert await opened(app, "legacy-1") == ["6011000990139424"]


async def test_cards_stored_with_derived_ids_get_random_ones_when_accounts_starts(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """A database from before random card ids: sealed cards with no card_id of their own (their
    id was the start of the fingerprint). The start-up sweep gives each a random one, in place,
    keeping the version; the old id no longer names the card."""
    settings = settings_for(stack, "accounts", mongo_db_name)
    async with running(build, settings) as app:
        vault = CardVault(config_for(app.settings.mongodb_database), app.mongo)
        try:
            sealed = await vault.seal(
                {
                    "type": "CREDIT_CARD_TYPE_PRIMARY",
                    "number": "5555555555554444",
                    "expiration": "6/29",
                    "name_on_card": "Old Timer",
                }
            )
        finally:
            await vault.close()
        old_id = sealed.pop(cards.CARD_ID) and sealed[cards.FINGERPRINT][: cards.CARD_ID_CHARS]
        await app.db[topology.CUSTOMERS].insert_one(
            {
                "_id": "derived-ids-1",
                "name": {"first_name": "Old", "last_name": "Timer"},
                "contact": {"primary_phone": "555-666-7777", "email": "old@example.com"},
                "credit_cards": [sealed],
                "version": 3,
                "etag": 'W/"3"',
            }
        )
    async with running(build, settings) as app:

        async def given_an_id() -> dict[str, object] | None:
            doc = await app.db[topology.CUSTOMERS].find_one({"_id": "derived-ids-1"})
            return doc if doc and doc["credit_cards"][0].get(cards.CARD_ID) else None

        doc = await eventually(given_an_id, timeout=30, what="legacy card given a random id")
        new_id = doc["credit_cards"][0][cards.CARD_ID]  # type: ignore[index]
        assert new_id != old_id and len(new_id) == cards.CARD_ID_CHARS and doc["version"] == 3
        assert await opened(app, "derived-ids-1") == ["5555555555554444"]
        async with channel(f"127.0.0.1:{app.bound_port}", tokens_of(stack)) as channel_:
            stub = Stub(channel_)
            read = await stub.GetCustomer(
                accounts_pb2.GetCustomerRequest(customer_id="derived-ids-1")
            )
            assert read.credit_cards[0].card_id == new_id
            patch = accounts_pb2.Customer(id=read.id, etag=read.etag)
            patch.credit_cards.append(read.credit_cards[0])
            patch.credit_cards[0].card_id = old_id
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.UpdateCustomer(
                    accounts_pb2.UpdateCustomerRequest(
                        customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["credit_cards"])
                    )
                )
            assert field_violations(err.value) == {
                "customer.credit_cards[0].number": "card_id matches no stored card"
            }


async def test_rotation_while_requests_run_loses_no_write_and_every_card_reads(
    stack: EmbeddedStack, accounts: ServiceApp, stub: Stub
) -> None:
    """`storefront keys rotate` while clients update the same customers: afterwards every card
    is under the new key, every acknowledged write is there, and cards written before, during
    and after the rotation all decrypt to what was sent."""
    rng = random.Random(14)
    n = int(os.environ.get("STOREFRONT_ROTATION_CUSTOMERS", "40"))
    expected: dict[str, list[str]] = {}
    emails: dict[str, str] = {}

    def numbers() -> list[str]:
        return [f"4{rng.randrange(10**14, 10**15)}" for _ in range(rng.randint(1, 2))]

    async def create() -> str:
        nums = numbers()
        c = await stub.CreateCustomer(
            accounts_pb2.CreateCustomerRequest(customer=customer_with(*nums))
        )
        expected[c.id], emails[c.id] = nums, c.contact.email
        return c.id

    ids = [await create() for _ in range(n)]
    before = await accounts.db[topology.CUSTOMERS].find_one({"_id": ids[0]})
    assert before is not None
    old_key = before["credit_cards"][0][cards.KEY_ID]
    stop = asyncio.Event()
    writes = 0

    async def traffic(mine: list[str]) -> None:
        """Updates of this worker's own customers: its ledger is exact because nobody else
        writes them, while the rotation re-seals the same documents underneath."""
        nonlocal writes
        while not stop.is_set():
            cid = rng.choice(mine)
            read = await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=cid))
            patch = accounts_pb2.Customer(id=cid)
            if rng.random() < 0.5:  # keep the last card (sent back masked), add a new one
                new = f"5{rng.randrange(10**14, 10**15)}"
                patch.credit_cards.extend([read.credit_cards[-1], card(new)])
                paths, result = ["credit_cards"], [expected[cid][-1], new]
            else:
                patch.contact.CopyFrom(read.contact)
                patch.contact.email = f"{cid}.{rng.randrange(10**9)}@example.com"
                paths, result = ["contact"], None
            await stub.UpdateCustomer(
                accounts_pb2.UpdateCustomerRequest(
                    customer=patch, update_mask=field_mask_pb2.FieldMask(paths=paths)
                )
            )
            if result is None:
                emails[cid] = patch.contact.email
            else:
                expected[cid] = result
            writes += 1
            if rng.random() < 0.1:
                mine.append(await create())
                ids.append(mine[-1])

    workers = [asyncio.create_task(traffic(ids[i::4])) for i in range(4)]
    try:
        await asyncio.sleep(1.0)
        started = time.monotonic()
        lines: list[str] = []
        database = accounts.settings.mongodb_database
        code = await keys.rotate(
            stack.mongodb_uri, database, config_for(database), wait=120, out=lines.append
        )
        took = time.monotonic() - started
        assert code == 0, lines
        await asyncio.sleep(1.0)  # traffic after the rotation, under the new key
    finally:
        stop.set()
        await asyncio.gather(*workers)
    print(f"rotation: {len(ids)} customers, {writes} concurrent updates, {took:.1f}s")
    assert writes > 10
    docs = {d["_id"]: d async for d in accounts.db[topology.CUSTOMERS].find({})}
    key_ids = {c[cards.KEY_ID] for d in docs.values() for c in d.get("credit_cards", [])}
    assert len(key_ids) == 1 and old_key not in key_ids
    for cid in ids:
        assert await opened(accounts, cid) == expected[cid], cid
        assert docs[cid]["contact"]["email"] == emails[cid]
    got = await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=ids[0]))
    assert [c.number[-4:] for c in got.credit_cards] == [x[-4:] for x in expected[ids[0]]]


async def test_rotation_in_one_call_for_an_operator_rpc(accounts: ServiceApp, stub: Stub) -> None:
    """The use case an admin RPC would call: new key, every card re-sealed, numbers intact."""
    created = await stub.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_with("3400 0000 0000 009"))
    )
    handlers = accounts._services[0][1].h
    key, resealed = await handlers.rotate_card_key()
    assert resealed == 1
    doc = await accounts.db[topology.CUSTOMERS].find_one({"_id": created.id})
    assert doc is not None and cards.key_name(doc["credit_cards"][0][cards.KEY_ID]) == key
    assert await opened(accounts, created.id) == ["340000000000009"]


async def test_master_key_change_by_rewrap_while_accounts_runs(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """The local master key is replaced: accounts runs with both, `rewrap` wraps every data
    key with the new one, and accounts restarted with the new key alone reads and updates
    every card (with only the old one it could no longer open them)."""
    new_key = base64.b64encode(os.urandom(96)).decode()
    old = config_for(mongo_db_name)
    both = dataclasses.replace(
        old, provider="local:2", kms_providers={**old.kms_providers, "local:2": {"key": new_key}}
    )
    only_new = dataclasses.replace(both, kms_providers={"local:2": {"key": new_key}})
    settings = settings_for(stack, "accounts", mongo_db_name)
    async with running(lambda s: build(s, old), settings) as app:
        async with channel(f"127.0.0.1:{app.bound_port}", tokens_of(stack)) as ch:
            created = await Stub(ch).CreateCustomer(
                accounts_pb2.CreateCustomerRequest(customer=customer_with("5555 5555 5555 4444"))
            )
    async with running(lambda s: build(s, both), settings) as app:
        lines: list[str] = []
        assert await keys.rewrap(stack.mongodb_uri, mongo_db_name, both, out=lines.append) == 0
        assert lines == ["1 data keys now wrapped by provider local:2"], lines
        masters = [k["masterKey"]["provider"] async for k in app.db["__keyVault"].find({})]
        assert masters == ["local:2"]
    async with running(lambda s: build(s, only_new), settings) as app:
        async with channel(f"127.0.0.1:{app.bound_port}", tokens_of(stack)) as ch:
            read = await Stub(ch).GetCustomer(
                accounts_pb2.GetCustomerRequest(customer_id=created.id)
            )
            patch = accounts_pb2.Customer(id=read.id, etag=read.etag)
            patch.credit_cards.extend(read.credit_cards)
            patch.credit_cards.add().CopyFrom(card("4000 0000 0000 0002"))
            await Stub(ch).UpdateCustomer(
                accounts_pb2.UpdateCustomerRequest(
                    customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["credit_cards"])
                )
            )
        vault = CardVault(only_new, app.mongo)
        doc = await app.db[topology.CUSTOMERS].find_one({"_id": created.id})
        assert doc is not None
        assert [(await vault.open(c))["number"] for c in doc["credit_cards"]] == [
            "5555555555554444",
            "4000000000000002",
        ]
        await vault.close()
        stale = CardVault(old, app.mongo)
        with pytest.raises(EncryptionError):
            await stale.open(doc["credit_cards"][0])
        await stale.close()


async def test_rotation_finds_customers_by_their_key_a_keyset_page_at_a_time(
    stack: EmbeddedStack, accounts: ServiceApp, stub: Stub
) -> None:
    """Issue 24 item 5: `ids_to_reseal` read the whole collection for every page (a rotation at
    100,000 customers was ~1,000 full scans). Each page is now an equality on the key stored
    with the customer plus a range on `_id`, answered from the (key, _id) index."""
    with_cards = [
        (
            await stub.CreateCustomer(accounts_pb2.CreateCustomerRequest(customer=customer_with(n)))
        ).id
        for n in ("4111111111111111", "5500000000000004", "340000000000009", "4012888888881881")
    ]
    await stub.CreateCustomer(accounts_pb2.CreateCustomerRequest(customer=customer_with()))
    customers = accounts._services[0][1].h.customers
    vault = customers.vault
    await vault.create_key()
    await vault.refresh()
    found: list[str] = []
    after = None
    while True:
        due, after = await customers.ids_to_reseal(vault.current, after, 3)
        found += due
        if after is None:
            break
    assert sorted(found) == sorted(with_cards)
    if stack.external_mongodb:
        return  # the plan below is PostgreSQL's, behind the embedded FerretDB
    collection = accounts.db[topology.CUSTOMERS]
    await collection.insert_many(
        [{"_id": f"z{i:05d}", "version": 1, repository.CARDS_KEY: f"k{i % 4}"} for i in range(4000)]
    )
    await accounts.db.command("compact", topology.CUSTOMERS)  # fresh statistics
    flt = repository.reseal_query("k1", "z02000")
    explained = await accounts.db.command(
        "explain", {"find": topology.CUSTOMERS, "filter": flt, "sort": {"_id": 1}, "limit": 3}
    )
    plan = explained["queryPlanner"]["Plan"]

    def nodes(p: dict[str, object]) -> list[object]:
        return [p["Node Type"], *(n for sub in p.get("Plans", []) for n in nodes(sub))]  # type: ignore[attr-defined]

    assert "Seq Scan" not in nodes(plan), plan
