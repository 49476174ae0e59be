"""Customers in MongoDB (`accounts` / `customer.accounts`), with their outbox.

Card numbers are sealed on the way in and never opened on the way out (accounts_svc.cards):
a loaded customer's cards carry masked numbers and their card_id; only `get_revealed`, for
use cases that write the cards back, decrypts them. An update that leaves the cards alone
writes all but them (`update_keeping_cards`).
"""

from __future__ import annotations

from typing import Any

from bson.binary import Binary
from pymongo.asynchronous.database import AsyncDatabase

import topology
from accounts_svc import cards
from accounts_svc.cards import CardVault
from accounts_svc.domain import Customer
from svckit.documents import from_document, to_document
from svckit.outbox import OUTBOX
from svckit.store import AggregateStore

Document = dict[str, Any]
CARDS = "credit_cards"
# Deleted customers stay as tombstones: their CustomerDeleted is still in the
# outbox, and a late retry of a create with the same id must not resurrect them.
LIVE = {"deleted": {"$ne": True}}
CARDS_KEY = "_cards_key"
"""The data key (by `cards.key_name`) every card of the customer is sealed under: what a key
rotation looks customers up by, a keyset page at a time in the index (CARDS_KEY, _id). "" for
a customer without cards; null for cards under several keys, and missing on documents written
before the field (rotation looks those up by null equality, which MongoDB answers from the
index; FerretDB does not push null down, so there it costs one scan per rotation, not one per
page)."""
ResealFrom = tuple[tuple[str | None, ...], int, str | None]
"""Where a rotation's walk stands: the stale keys, which one it pages through, the last id."""


class CustomerRepository(AggregateStore[Customer]):
    def __init__(self, db: AsyncDatabase[dict[str, Any]], vault: CardVault | None = None) -> None:
        """Without a vault (operator tools) customers can be read and republished, not written."""
        super().__init__(db[topology.CUSTOMERS], Customer, "id")
        self.vault = vault

    def load(self, doc: Document) -> Customer:
        if CARDS not in doc:
            return super().load(doc)
        return super().load({**doc, CARDS: [cards.view(c) for c in doc[CARDS]]})

    async def document(self, aggregate: Customer) -> Document:
        """Seals every card, and gives each its card_id on `aggregate`, so the response of the
        write that stored it can be sent back on the next update."""
        doc = to_document(aggregate, id_field="id")
        if not doc.get(CARDS):
            return {**doc, CARDS_KEY: ""}
        if self.vault is None:
            raise RuntimeError("writing cards needs the card vault")
        doc[CARDS] = [await self.vault.seal(card) for card in doc[CARDS]]
        for card, sealed in zip(aggregate.credit_cards, doc[CARDS], strict=True):
            card.card_id = sealed[cards.CARD_ID]
        keys = {cards.key_name(card[cards.KEY_ID]) for card in doc[CARDS]}
        doc[CARDS_KEY] = keys.pop() if len(keys) == 1 else None
        return doc

    async def update_keeping_cards(
        self, customer: Customer, expected_version: int, events: list[dict[str, Any]]
    ) -> bool:
        """Write `customer` but its cards, which stay as stored: neither opened nor sealed
        again, for an update that leaves them alone (`customer` was loaded by `get_live`, its
        cards masked). The version guard makes them the cards of the version read."""
        doc = to_document(customer, id_field="id")
        doc.pop(CARDS, None)
        return await self.write_fields(doc, expected_version, events, kept=(CARDS,))

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([(CARDS_KEY, 1), ("_id", 1)])  # key rotation's pages
        # the live customers' pages (`LIVE`, by `_id`): an index led by the filtered field is
        # what lets the embedded database push the page down (patch 0003); on MongoDB it serves
        # the same filter
        await self.collection.create_index([("deleted", 1), ("_id", 1)])

    async def get_revealed(self, customer_id: str) -> Customer | None:
        """A live customer with the card numbers decrypted, to be written back."""
        doc = await self.collection.find_one({"_id": customer_id, **LIVE}, {OUTBOX: 0})
        if doc is None:
            return None
        if doc.get(CARDS):
            if self.vault is None:
                raise RuntimeError("reading card numbers needs the card vault")
            doc[CARDS] = [await self.vault.open(card) for card in doc[CARDS]]
        return from_document(doc, Customer, id_field="id")

    async def get_live(self, customer_id: str) -> Customer | None:
        return await self.get(customer_id, extra_filter=LIVE)

    async def get_any(self, customer_id: str) -> tuple[Customer, bool] | None:
        """The customer, live or a tombstone, and whether it is deleted."""
        doc = await self.collection.find_one({"_id": customer_id}, {OUTBOX: 0})
        return None if doc is None else (self.load(doc), bool(doc.get("deleted")))

    async def page_live(self, after: str | None, limit: int) -> tuple[list[Customer], str | None]:
        return await self.page(dict(LIVE), after=after, limit=limit)

    async def tombstone(
        self, gone: Customer, expected_version: int, events: list[dict[str, Any]]
    ) -> bool:
        """Store what stays of a deleted customer, marked deleted, and queue its events, in one
        write."""
        return await self.update(gone, expected_version, events, extra={"deleted": True})

    async def ids_to_reseal(
        self, current_key: Binary, after: ResealFrom | None, limit: int
    ) -> tuple[list[str], ResealFrom | None]:
        """One page of the customers with a card in clear or under another key than
        `current_key`, and where to continue (None at the end): a keyset page on (CARDS_KEY,
        _id) for each key the customers' cards are under but the current one, after those
        stored before CARDS_KEY existed. The keys are read once per walk (`distinct`, which
        MongoDB answers from the index) and carried in the continuation."""
        if after is None:
            current = cards.key_name(current_key)
            held = await self.collection.distinct(CARDS_KEY)
            keys = sorted(k for k in held if isinstance(k, str) and k and k != current)
            after = ((None, *keys), 0, None)
        stale, position, last = after
        query = reseal_query(stale[position], last)
        docs = await self.collection.find(query, {CARDS: 1}).sort("_id", 1).limit(limit).to_list()
        due = [
            d["_id"]
            for d in docs
            if any(cards.needs_reseal(c, current_key) for c in d.get(CARDS) or [])
        ]
        if len(docs) == limit:
            return due, (stale, position, docs[-1]["_id"])
        return due, ((stale, position + 1, None) if position + 1 < len(stale) else None)

    async def reseal(self, customer: Customer) -> bool:
        """Store `customer`'s cards sealed anew with the current key: same version, no event
        (the customer did not change, only how its cards are stored). False: it changed
        since it was read."""
        doc = await self.document(customer)
        update = {"$set": {CARDS: doc.get(CARDS, []), CARDS_KEY: doc[CARDS_KEY]}}
        return await self._guarded(customer.id, customer.version, update, queues=False)


def reseal_query(key_name: str | None, after: str | None) -> Document:
    """The live customers whose CARDS_KEY is `key_name` (None: missing or null), after an id."""
    query: Document = {CARDS_KEY: key_name, **LIVE}
    if after is not None:
        query["_id"] = {"$gt": after}
    return query
