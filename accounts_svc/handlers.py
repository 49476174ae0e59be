"""Accounts use cases: one function each, reading like the use case."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

import topology
from accounts_svc import cards, domain
from accounts_svc.cards import CardVault
from accounts_svc.domain import Customer
from svckit import logs, names
from svckit.admin import Republished, Verdict, republish_each
from svckit.errors import NotFound
from svckit.ids import new_id
from svckit.outbox import Notifier, outbox_entry
from svckit.saving import Change, Lost, Updates, change, saved, until_saved
from svckit.shape import Page
from svckit.store import Store

log = logging.getLogger(__name__)

TOPIC = topology.CUSTOMER_CHANGES
SOURCE = names.source(topology.ACCOUNTS)


class Customers(Store[Customer], Protocol):
    """Accounts' store of customers (`CustomerRepository`, which seals cards through its
    `vault`; a fake without one in unit tests). Deleted customers stay as tombstones."""

    vault: CardVault | None

    async def get_live(self, customer_id: str) -> Customer | None:
        """The customer unless deleted; card numbers masked."""

    async def get_revealed(self, customer_id: str) -> Customer | None:
        """The live customer with its card numbers decrypted, to be written back."""

    async def get_any(self, customer_id: str) -> tuple[Customer, bool] | None:
        """The customer, live or a tombstone, and whether it is deleted."""

    async def page_live(
        self, after: str | None, limit: int
    ) -> tuple[list[Customer], str | None]: ...

    async def tombstone(
        self, gone: Customer, expected_version: int, events: list[dict[str, Any]]
    ) -> bool:
        """Store `gone` (domain.tombstone) marked deleted, guarded by the version."""

    async def ids_to_reseal(
        self, current_key: Any, after: Any, limit: int
    ) -> tuple[list[str], Any]:
        """One page of the customers whose cards need re-sealing under `current_key`, and
        where to continue (None: done)."""

    async def reseal(self, customer: Customer) -> bool: ...

    async def update_keeping_cards(
        self, customer: Customer, expected_version: int, events: list[dict[str, Any]]
    ) -> bool:
        """The version-guarded write of all but the cards, which stay as stored."""


class CardsKept:
    """The customers' store for an update that leaves the cards alone: they are neither
    opened nor sealed again, and stay as stored."""

    def __init__(self, customers: Customers) -> None:
        self.customers = customers

    async def update(
        self, customer: Customer, expected_version: int, events: list[dict[str, Any]]
    ) -> bool:
        return await self.customers.update_keeping_cards(customer, expected_version, events)


class AccountsHandlers:
    def __init__(
        self,
        customers: Customers,
        relay: Notifier,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.customers = customers
        self.relay = relay
        self.clock = clock

    def _event(self, customer_id: str, message: Message, seq: int) -> dict[str, Any]:
        return outbox_entry(TOPIC, customer_id, message, source=SOURCE, seq=seq)

    def _changed(self, customer: Customer) -> dict[str, Any]:
        return self._event(customer.id, domain.customer_changed(customer), customer.version)

    async def create_customer(self, draft: Customer, customer_id: str = "") -> Customer:
        customer = domain.new_customer(draft, customer_id or new_id(), self.clock())
        await self.customers.insert(customer, [self._changed(customer)])
        self.relay.notify(customer.id)
        return customer

    async def get_customer(self, customer_id: str) -> Customer:
        customer = await self.customers.get_live(customer_id)
        if customer is None:
            raise NotFound(f"customer {customer_id!r} not found")
        return customer

    async def _revealed(self, customer_id: str) -> Customer:
        customer = await self.customers.get_revealed(customer_id)
        if customer is None:
            raise NotFound(f"customer {customer_id!r} not found")
        return customer

    async def list_customers(self, page: Page) -> tuple[list[Customer], str | None]:
        """One page of live customers and the id the next one starts after (None: the end)."""
        return await self.customers.page_live(page.after, page.limit)

    async def update_customer(self, patch: Customer, mask: field_mask_pb2.FieldMask) -> Customer:
        def decide(current: Customer) -> Change:
            customer = domain.updated_customer(current, patch, mask, self.clock())
            return Change(customer, [self._changed(customer)])

        store: Updates[Customer] = self.customers
        load = self._revealed
        if not domain.changes_cards(patch, mask):  # the cards stay as stored: not even read
            store, load = CardsKept(self.customers), self.get_customer
        customer = await change(
            store,
            lambda: load(patch.id),
            decide,
            what=f"customer {patch.id}",
            retry=not patch.etag,
        )
        self.relay.notify(customer.id)
        return customer

    async def delete_customer(self, customer_id: str, etag: str = "") -> None:
        async def attempt() -> bool | Lost:
            current = await self.get_customer(customer_id)
            domain.check_etag(current, etag)
            deleted = domain.customer_deleted(current, self.clock())
            event = self._event(customer_id, deleted, deleted.version)
            gone = domain.tombstone(current)
            return saved(await self.customers.tombstone(gone, current.version, [event]), True)

        await until_saved(attempt, what=f"customer {customer_id}", retry=not etag)
        self.relay.notify(customer_id)

    # --- Operator use cases (svckit.admin) ---------------------------------------------

    async def republish(self, ids: Sequence[str]) -> Republished:
        """Repairs: queue each customer's current state, or its deletion, again."""
        return await republish_each(ids, self._republish, self.relay.notify)

    async def _republish(self, customer_id: str) -> Verdict | Lost:
        found = await self.customers.get_any(customer_id)
        if found is None:
            return Verdict.NOT_FOUND
        customer, deleted = found
        event = domain.current_state(customer, deleted=deleted, now=self.clock())
        entry = self._event(customer_id, event, customer.version)
        landed = await self.customers.republish(customer_id, customer.version, [entry])
        return saved(landed, Verdict.QUEUED)

    async def reseal_cards(self, customer_id: str) -> bool:
        """Store one customer's cards under the current card key (or encrypt them at all, in a
        database from before encryption). Same version, no event. False: the customer is gone.
        A write that lands first (the version moved) is re-read and its cards re-sealed."""
        vault = self.customers.vault
        assert vault is not None and vault.current is not None

        async def attempt() -> bool | Lost:
            current = await self.customers.get_revealed(customer_id)
            if current is None:
                return False  # deleted meanwhile: a tombstone keeps no cards
            return saved(await self.customers.reseal(current), True)

        return await until_saved(attempt, what=f"customer {customer_id}")

    async def reseal_all(self, page: int = 100) -> int:
        """Rotation's use case: every card not under the newest key of the card key vault is
        re-encrypted with it, while requests run (each customer through the save step and its
        version guard, like any write). Returns how many customers were re-sealed."""
        vault = self.customers.vault
        assert vault is not None
        await vault.refresh()
        key = vault.current
        assert key is not None
        done = 0
        after: Any = None
        while True:
            due, after = await self.customers.ids_to_reseal(key, after, page)
            for customer_id in due:
                done += await self.reseal_cards(customer_id)
            if after is None:
                return done

    async def rotate_card_key(self) -> tuple[str, int]:
        """Rotation in one call, for an operator RPC: a new data key becomes the current one
        and every card is re-sealed with it. Returns the key's id and the customers re-sealed.
        (`storefront keys rotate` adds the key itself and lets `follow_card_keys` re-seal.)"""
        vault = self.customers.vault
        assert vault is not None
        key = await vault.create_key()
        return cards.key_name(key), await self.reseal_all()

    async def follow_card_keys(self, every: float = 5.0) -> None:
        """While serving: re-seal everything once at start (which encrypts the cards of a
        database from before encryption), then again each time `storefront keys rotate` adds
        a newer key to the vault."""
        vault = self.customers.vault
        assert vault is not None
        pending, indexed = True, False
        try:
            while True:
                try:
                    if not indexed:
                        await vault.ensure_index()
                        indexed = True
                    pending = await vault.refresh() or pending
                    if pending:
                        started = asyncio.get_running_loop().time()
                        n = await self.reseal_all()
                        pending = False
                        took = asyncio.get_running_loop().time() - started
                        log.info(
                            "card key %s: %d customers re-sealed in %.1fs",
                            cards.key_name(vault.current),  # type: ignore[arg-type]
                            n,
                            took,
                        )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the database is away: try again
                    log.warning("re-sealing cards failed (%s); retrying", logs.describe(exc))
                await asyncio.sleep(every)
        finally:
            await vault.close()
