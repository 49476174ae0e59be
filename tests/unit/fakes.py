"""In-memory stand-ins for the ports the handlers depend on (svckit.store.Store, the services'
own store Protocols, svckit.outbox.Notifier), so each handler class is unit tested with no
server. Storage only: the same version guard and outbox cap as the real stores, plus a switch
that makes the next writes lose to "another writer"; every rule stays in the domain."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from accounts_svc.cards import CardVault
from accounts_svc.domain import Customer
from fulfillment_svc.domain import Fulfillment, Status
from orders_svc import domain as orders_domain
from orders_svc.domain import HeldCopy
from orders_svc.repository import CustomerCopy, Order, ProductCopy
from svckit import paging
from svckit.envelope import Envelope, decode
from svckit.errors import AlreadyExists, Unavailable
from svckit.store import MAX_PENDING_EVENTS

M = TypeVar("M", bound=Message)
VERSION = "version"  # every aggregate has one; Message does not declare it
Document = dict[str, Any]


class FakeStore(Generic[M]):
    """Aggregates by id, each with its outbox, behind a version guard."""

    def __init__(self, id_field: str) -> None:
        self.id_field = id_field
        self.state: dict[str, M] = {}
        self.outbox: dict[str, list[Document]] = {}
        self.lose_next = 0
        """How many of the next guarded writes lose to another writer (return False)."""
        self.writes = 0

    def _id(self, aggregate: M) -> str:
        return str(getattr(aggregate, self.id_field))

    def _copy(self, aggregate: M) -> M:
        clone = type(aggregate)()
        clone.CopyFrom(aggregate)
        return clone

    async def get(self, aggregate_id: str) -> M | None:
        found = self.state.get(aggregate_id)
        return self._copy(found) if found is not None else None

    async def insert(self, aggregate: M, events: Iterable[Document]) -> None:
        aggregate_id = self._id(aggregate)
        if aggregate_id in self.state:
            raise AlreadyExists(f"{self.id_field} {aggregate_id} already exists")
        self.state[aggregate_id] = self._copy(aggregate)
        self.outbox[aggregate_id] = list(events)
        self.writes += 1

    def _guard(self, aggregate_id: str, expected_version: int, events: list[Document]) -> bool:
        current = self.state.get(aggregate_id)
        if current is None or getattr(current, VERSION) != expected_version:
            return False
        if self.lose_next:
            self.lose_next -= 1
            return False
        if events and len(self.outbox[aggregate_id]) + len(events) > MAX_PENDING_EVENTS:
            raise Unavailable(f"{aggregate_id} has events waiting to be published")
        return True

    async def update(self, aggregate: M, expected_version: int, events: Iterable[Document]) -> bool:
        aggregate_id, events = self._id(aggregate), list(events)
        if not self._guard(aggregate_id, expected_version, events):
            return False
        self.state[aggregate_id] = self._copy(aggregate)
        self.outbox[aggregate_id] += events
        self.writes += 1
        return True

    async def republish(
        self, aggregate_id: str, expected_version: int, events: list[Document]
    ) -> bool:
        if not self._guard(aggregate_id, expected_version, events):
            return False
        self.outbox[aggregate_id] += events
        return True

    def events(self, aggregate_id: str, accepted: Iterable[str]) -> list[Envelope]:
        """The aggregate's queued events of the `accepted` types, decoded as a consumer of
        them would (a consumer of one topic never sees the others' types)."""
        accepted = list(accepted)
        return [
            decode(
                e["value"],
                [(k, v.encode()) for k, v in e["headers"].items()],
                key=e["key"].encode(),
                accepted_types=accepted,
            )
            for e in self.outbox.get(aggregate_id, [])
            if e["headers"]["ce_type"] in accepted
        ]

    def _page(self, matching: list[M], after: str | None, limit: int) -> tuple[list[M], str | None]:
        ordered = sorted(
            (a for a in matching if after is None or self._id(a) > after), key=self._id
        )
        budget = paging.PageBudget(limit)
        page: list[M] = []
        for item in ordered:
            if not budget.take(item):
                return page, self._id(page[-1])
            page.append(self._copy(item))
        return page, None


class FakeFulfillments(FakeStore[Fulfillment]):
    def __init__(self) -> None:
        super().__init__("order_id")

    async def page_by_status(
        self, status: Status | None, after: str | None, limit: int
    ) -> tuple[list[Fulfillment], str | None]:
        wanted = [f for f in self.state.values() if not status or f.status == status]
        return self._page(wanted, after, limit)


class FakeOrders(FakeStore[Order]):
    def __init__(self) -> None:
        super().__init__("order_id")
        self.applied: dict[str, list[int]] = {}

    async def page(
        self, query: dict[str, Any], *, after: str | None, limit: int
    ) -> tuple[list[Order], str | None]:
        def matches(order: Order) -> bool:
            for name, value in query.items():
                got = getattr(order, name)
                if name == "status":
                    got = orders_domain.Status.Name(got)
                if got != value:
                    return False
            return True

        return self._page([o for o in self.state.values() if matches(o)], after, limit)

    async def count_open(self, customer_id: str) -> int:
        return sum(
            o.customer_id == customer_id and o.status in orders_domain.OPEN
            for o in self.state.values()
        )

    async def get_with_applied(self, order_id: str) -> tuple[Order, list[int]] | None:
        order = await self.get(order_id)
        return None if order is None else (order, list(self.applied.get(order_id, [])))

    async def save_applied(
        self, order: Order, expected_version: int, applied: list[int], events: list[Document]
    ) -> bool:
        if not await self.update(order, expected_version, events):
            return False
        self.applied[order.order_id] = list(applied)
        return True

    async def ids_with_applied(self) -> list[str]:
        return [i for i, applied in self.applied.items() if applied]


C = TypeVar("C", CustomerCopy, ProductCopy)


class FakeVersionedCopies(Generic[C]):
    """Copies by id: (version, content or None for a tombstone). A write is refused where a
    newer version is stored, the real store's guard."""

    def __init__(self) -> None:
        self.copies: dict[str, HeldCopy[C]] = {}

    async def held(self, ids: list[str]) -> dict[str, HeldCopy[C]]:
        return {i: self.copies[i] for i in ids if i in self.copies}

    async def put(self, writes: dict[str, HeldCopy[C]], *, newer_only: bool = False) -> set[str]:
        def refuses(held: HeldCopy[C], write: HeldCopy[C]) -> bool:
            return held.version > write.version or (newer_only and held.version == write.version)

        refused = {i for i, w in writes.items() if i in self.copies and refuses(self.copies[i], w)}
        self.copies.update((i, w) for i, w in writes.items() if i not in refused)
        return refused

    async def clear(self) -> int:
        n = len(self.copies)
        self.copies.clear()
        return n


class FakeCopies(FakeVersionedCopies[CustomerCopy]):
    """Orders' copies of customers."""

    async def get(self, customer_id: str) -> CustomerCopy | None:
        held = self.copies.get(customer_id)
        content = held.content if held is not None else None
        if content is None:
            return None
        copy = CustomerCopy()
        copy.CopyFrom(content)
        return copy


class FakeCatalog(FakeVersionedCopies[ProductCopy]):
    """Orders' copy of the catalog by product id."""

    def __init__(self, products: dict[str, ProductCopy] | None = None) -> None:
        super().__init__()
        self.copies = {i: HeldCopy(p.version, p) for i, p in (products or {}).items()}

    async def get_many(self, product_ids: list[str]) -> dict[str, ProductCopy]:
        found = {i: self.copies[i].content for i in product_ids if i in self.copies}
        return {i: p for i, p in found.items() if p is not None}


class FakeCustomers(FakeStore[Customer]):
    """Customers without a card vault: numbers are kept as given (sealing is the real
    repository's and has its own tests)."""

    vault: CardVault | None = None

    def __init__(self) -> None:
        super().__init__("id")
        self.deleted: set[str] = set()

    async def get_live(self, customer_id: str) -> Customer | None:
        return None if customer_id in self.deleted else await self.get(customer_id)

    async def get_revealed(self, customer_id: str) -> Customer | None:
        return await self.get_live(customer_id)

    async def get_any(self, customer_id: str) -> tuple[Customer, bool] | None:
        found = await self.get(customer_id)
        return None if found is None else (found, customer_id in self.deleted)

    async def page_live(self, after: str | None, limit: int) -> tuple[list[Customer], str | None]:
        live = [c for i, c in self.state.items() if i not in self.deleted]
        return self._page(live, after, limit)

    async def tombstone(
        self, gone: Customer, expected_version: int, events: list[Document]
    ) -> bool:
        if not await self.update(gone, expected_version, events):
            return False
        self.deleted.add(gone.id)
        return True

    async def ids_to_reseal(
        self, current_key: Any, after: Any, limit: int
    ) -> tuple[list[str], Any]:
        return [], None

    async def update_keeping_cards(
        self, customer: Customer, expected_version: int, events: list[Document]
    ) -> bool:
        written = Customer()
        written.CopyFrom(customer)
        stored = self.state.get(customer.id)
        del written.credit_cards[:]
        written.credit_cards.extend(stored.credit_cards if stored is not None else [])
        return await self.update(written, expected_version, events)

    async def reseal(self, customer: Customer) -> bool:
        return False


class RecordingNotifier:
    def __init__(self) -> None:
        self.notified: list[Any] = []

    def notify(self, aggregate_id: Any) -> None:
        self.notified.append(aggregate_id)


__all__ = [
    "FakeCatalog",
    "FakeCopies",
    "FakeCustomers",
    "FakeFulfillments",
    "FakeOrders",
    "FakeStore",
    "FakeVersionedCopies",
    "RecordingNotifier",
]
