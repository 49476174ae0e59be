"""Orders use cases: RPC commands and the events orders consumes."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

import topology
from orders_svc import domain
from orders_svc.domain import CopyChange, CopyOutcome, HeldCopy
from orders_svc.repository import CustomerCopy, Order, ProductCopy
from storefront.accounts.v1 import events_pb2 as accounts_events
from storefront.catalog.v1 import events_pb2 as catalog_events
from storefront.fulfillment.v1 import events_pb2 as fulfillment_events
from storefront.orders.v1 import orders_pb2
from svckit import names, statuses
from svckit.admin import Republished, Verdict, republish_each
from svckit.consumer import BatchHandler, EventHandler, Outcome
from svckit.envelope import Envelope, PoisonEvent
from svckit.errors import FailedPrecondition, NotFound
from svckit.ids import new_id
from svckit.outbox import Notifier, outbox_entry
from svckit.saving import Change, Lost, change, saved, until_saved
from svckit.shape import Page
from svckit.store import Store

log = logging.getLogger(__name__)

TO_FULFILLMENT = topology.ORDER_FULFILLMENT
FACTS = topology.ORDER_CHANGES
SOURCE = names.source(topology.ORDERS)
MAX_CUSTOMER_ORDERS = 1000
Document = dict[str, Any]


class Orders(Store[Order], Protocol):
    """Orders' store of orders (`OrderRepository`; a fake in unit tests)."""

    async def page(
        self, query: dict[str, Any], *, after: str | None, limit: int
    ) -> tuple[list[Order], str | None]:
        """A keyset page in id order of the orders whose fields equal `query`'s."""

    async def count_open(self, customer_id: str) -> int:
        """How many of the customer's orders are in one of `domain.OPEN`."""

    async def get_with_applied(self, order_id: str) -> tuple[Order, list[int]] | None:
        """The order and the fulfillment versions applied to it."""

    async def save_applied(
        self, order: Order, expected_version: int, applied: list[int], events: list[Document]
    ) -> bool: ...

    async def ids_with_applied(self) -> list[str]:
        """The orders that may hold some of fulfillment's status changes."""


C = TypeVar("C", CustomerCopy, ProductCopy)


class Copies(Protocol[C]):
    """Orders' copies of another service's aggregates (`VersionedCopies`; fakes in unit
    tests): storage only, what an event does to them is `domain.copy_outcomes`'s."""

    async def held(self, ids: list[str]) -> dict[str, HeldCopy[C]]: ...

    async def put(self, writes: dict[str, HeldCopy[C]], *, newer_only: bool = False) -> set[str]:
        """Write each, unless a newer version is stored (`newer_only`: unless the same or a
        newer one is): the ids whose write was refused."""

    async def clear(self) -> int: ...


class CustomerCopies(Copies[CustomerCopy], Protocol):
    """Orders' copies of the customers (`repository.CustomerCopies`)."""

    async def get(self, customer_id: str) -> CustomerCopy | None:
        """The live copy (None: unknown or deleted)."""


class Catalog(Copies[ProductCopy], Protocol):
    """Orders' copy of the catalog (`repository.ProductCopies`)."""

    async def get_many(self, product_ids: list[str]) -> dict[str, ProductCopy]: ...


CUSTOMER_EVENTS = (accounts_events.CustomerChanged, accounts_events.CustomerDeleted)
COPY_OUTCOMES = {
    CopyOutcome.APPLIED: Outcome.APPLIED,
    CopyOutcome.DUPLICATE: Outcome.DUPLICATE,
    CopyOutcome.STALE: Outcome.STALE,
}


async def apply_copies(copies: Copies[C], changes: list[CopyChange[C]]) -> list[Outcome]:
    """Write what the changes make of the copies, with each change's outcome as
    `domain.copy_outcomes` decides it.

    A copy changed once in the batch is written straight away, without reading it first, by a
    write that lands only over an older version or none: when it lands, the change was newer
    than what was held, which the domain applies whatever else it held. The other changes, and
    those whose write was refused (the copy held is as new or newer: a duplicate, a late
    arrival or a repair), are decided on the copies held; those whose write then loses to a
    concurrent newer one are decided again on what is then held."""
    outcomes: list[Outcome | None] = [None] * len(changes)
    times = Counter(cid for cid, _, _ in changes)
    newer = {cid: HeldCopy(v, content) for cid, v, content in changes if times[cid] == 1}
    refused = await copies.put(newer, newer_only=True)
    pending = []
    for i, (cid, _, _) in enumerate(changes):
        if cid in newer and cid not in refused:
            outcomes[i] = Outcome.APPLIED
        else:
            pending.append(i)

    async def attempt() -> list[Outcome] | Lost:
        nonlocal pending
        batch = [changes[i] for i in pending]
        held = await copies.held(list(dict.fromkeys(cid for cid, _, _ in batch)))
        decided, writes = domain.copy_outcomes(held, batch)
        lost = await copies.put(writes)
        again = []
        for i, outcome in zip(pending, decided, strict=True):
            if outcome is CopyOutcome.APPLIED and changes[i][0] in lost:
                again.append(i)
            else:
                outcomes[i] = COPY_OUTCOMES[outcome]
        pending = again
        return saved(not again, [o or Outcome.DUPLICATE for o in outcomes])

    if not pending:
        return [o or Outcome.APPLIED for o in outcomes]
    ids = ", ".join(dict.fromkeys(changes[i][0] for i in pending))
    return await until_saved(attempt, what=f"copies of {ids}")


class OrdersHandlers:
    def __init__(
        self,
        orders: Orders,
        customers: CustomerCopies,
        products: Catalog,
        relay: Notifier,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.orders = orders
        self.customers = customers
        self.products = products
        self.relay = relay
        self.clock = clock

    @staticmethod
    def _to_fulfillment(order: Order, event: Message) -> Document:
        return outbox_entry(TO_FULFILLMENT, order.order_id, event, source=SOURCE, seq=order.version)

    @staticmethod
    def _facts(order: Order) -> list[Document]:
        """What every change of an order queues: the order's new state, for any consumer."""
        event = domain.order_changed(order)
        return [outbox_entry(FACTS, order.order_id, event, source=SOURCE, seq=order.version)]

    # --- RPC use cases -------------------------------------------------------------

    async def create_order(self, customer_id: str, draft: Order, order_id: str = "") -> Order:
        domain.check_draft(draft)
        oid = domain.chosen_order_id(customer_id, order_id) if order_id else new_id()
        if await self.customers.get(customer_id) is None:
            raise FailedPrecondition(
                f"customer {customer_id!r} is not known to orders (yet)",
                subject=f"customers/{customer_id}",
            )
        open_orders = await self.orders.count_open(customer_id)
        catalog = await self.products.get_many(domain.ordered_product_ids(draft))
        order = domain.new_order(
            customer_id, draft, catalog, oid, self.clock(), open_orders=open_orders
        )
        await self.orders.insert(order, self._facts(order))
        self.relay.notify(order.order_id)
        return order

    async def get_order(self, order_id: str) -> Order:
        order = await self.orders.get(order_id)
        if order is None:
            raise NotFound(f"order {order_id!r} not found")
        return order

    async def owner_of(self, order_id: str) -> str | None:
        """Who placed the order, for the access policy (None: no such order)."""
        order = await self.orders.get(order_id)
        return order.customer_id if order is not None else None

    async def list_orders(
        self, customer_id: str, status: int | None, page: Page
    ) -> tuple[list[Order], str | None]:
        """One page of orders (the customer's or all; in `status` or any) and the id the
        next one starts after (None: the end)."""
        query: dict[str, object] = {}
        if customer_id:
            query["customer_id"] = customer_id
        if status is not None:
            query["status"] = statuses.status_name(status)
        return await self.orders.page(query, after=page.after, limit=page.limit)

    async def get_customer_orders(
        self, customer_id: str, page: Page
    ) -> tuple[orders_pb2.CustomerOrders, str | None]:
        """The customer's copy with one page of their orders (bounded like every page), and
        the id the next page starts after (None: the end)."""
        copy = await self.customers.get(customer_id)
        if copy is None:
            raise NotFound(f"customer {customer_id!r} not found in orders")
        found, last = await self.orders.page(
            {"customer_id": customer_id}, after=page.after, limit=page.limit
        )
        copy.orders.extend(found)
        return copy, last

    def _change(self, after: Order, events: list[Document]) -> Change:
        """A decided change of an order: its events plus, always, its new state as a fact."""
        return Change(after, [*events, *self._facts(after)])

    async def _customer_of(self, order: Order) -> CustomerCopy:
        customer = await self.customers.get(order.customer_id)
        if customer is None:
            raise FailedPrecondition(
                f"customer {order.customer_id} is gone", subject=f"customers/{order.customer_id}"
            )
        return customer

    async def approve_order(self, order_id: str, note: str = "") -> Order:

        async def attempt() -> Order | Lost:
            order = await self.get_order(order_id)
            approved = domain.transition(
                order, domain.Status.ORDER_STATUS_APPROVED, self.clock(), note
            )
            event = domain.fulfillment_requested(approved, await self._customer_of(order))
            decided = self._change(approved, [self._to_fulfillment(approved, event)])
            landed = await self.orders.update(approved, order.version, decided.events)
            return saved(landed, approved)

        approved = await until_saved(attempt, what=f"order {order_id}")
        self.relay.notify(order_id)
        return approved

    async def reject_order(self, order_id: str, reason: str = "") -> Order:

        def decide(order: Order) -> Change:
            rejected = domain.transition(
                order, domain.Status.ORDER_STATUS_REJECTED, self.clock(), reason
            )
            return self._change(rejected, [])

        return await self._changed(order_id, decide)

    async def cancel_order(self, order_id: str, reason: str = "") -> Order:

        def decide(order: Order) -> Change:
            cancelled = domain.transition(
                order, domain.Status.ORDER_STATUS_CANCELLED, self.clock(), reason
            )
            events = []
            if order.status in domain.FULFILLMENT_REQUESTED:
                event = domain.fulfillment_cancelled(cancelled, reason)
                events.append(self._to_fulfillment(cancelled, event))
            return self._change(cancelled, events)

        return await self._changed(order_id, decide)

    async def _changed(self, order_id: str, decide: Callable[[Order], Change]) -> Order:
        order = await change(
            self.orders, lambda: self.get_order(order_id), decide, what=f"order {order_id}"
        )
        self.relay.notify(order_id)
        return order

    # --- Event use cases -----------------------------------------------------------

    async def apply_customer_changed(self, envelope: Envelope) -> Outcome:
        return (await self.apply_customer_events([envelope]))[0]

    async def apply_customer_deleted(self, envelope: Envelope) -> Outcome:
        return (await self.apply_customer_events([envelope]))[0]

    async def apply_customer_events(self, envelopes: list[Envelope]) -> list[Outcome]:
        """A run of CustomerChanged / CustomerDeleted, one by one or as a batch (same outcomes:
        the domain decides each on top of the ones before it)."""
        changes: list[CopyChange[CustomerCopy]] = []
        for envelope in envelopes:
            event = envelope.message
            if not isinstance(event, CUSTOMER_EVENTS):
                raise PoisonEvent(f"{envelope.type} is not a customer event")
            domain.check_customer_event(event)
            if isinstance(event, accounts_events.CustomerChanged):
                changes.append((event.customer_id, event.version, domain.customer_copy(event)))
            else:
                changes.append((event.customer_id, event.version, None))
        return await apply_copies(self.customers, changes)

    async def apply_product_changed(self, envelope: Envelope) -> Outcome:
        event = envelope.payload(catalog_events.ProductChanged)
        domain.check_product_event(event)
        copy = domain.product_copy(event)
        return (await apply_copies(self.products, [(copy.product_id, copy.version, copy)]))[0]

    async def apply_order_status_changed(self, envelope: Envelope) -> Outcome:
        """Append the change to the order's history once, whatever the redeliveries."""
        event = envelope.payload(fulfillment_events.OrderStatusChanged)
        domain.check_status_event(event)

        async def attempt() -> Outcome | Lost:
            found = await self.orders.get_with_applied(event.order_id)
            if found is None:
                log.warning("status change for unknown order %s ignored", event.order_id)
                return Outcome.IGNORED
            order, applied = found
            decided = domain.apply_fulfillment_status(order, applied, event, self.clock())
            if decided is None:
                return Outcome.DUPLICATE
            updated, now_applied = decided
            landed = await self.orders.save_applied(
                updated, order.version, now_applied, self._facts(updated)
            )
            return saved(landed, Outcome.APPLIED)  # lost: an RPC changed the order meanwhile

        outcome = await until_saved(attempt, what=f"order {event.order_id}")
        if outcome is Outcome.APPLIED:
            self.relay.notify(event.order_id)
        return outcome

    async def _strip_fulfillment_history(self) -> int:
        """Remove what fulfillment's events added to every order, before a rebuild; each order
        so changed states its new self as a fact."""

        async def strip(order_id: str) -> bool | Lost:
            found = await self.orders.get_with_applied(order_id)
            if found is None or not found[1]:
                return False
            order = found[0]
            stripped = domain.without_fulfillment_history(order, self.clock())
            landed = await self.orders.save_applied(
                stripped, order.version, [], self._facts(stripped)
            )
            return saved(landed, True)

        done = 0
        for order_id in await self.orders.ids_with_applied():
            if await until_saved(partial(strip, order_id), what=f"order {order_id}"):
                self.relay.notify(order_id)
                done += 1
        return done

    async def forget(self, topic: str) -> int:
        """Drop what orders derived from `topic`, so a replay rebuilds it from scratch."""
        if topic == topology.CUSTOMER_CHANGES:
            return await self.customers.clear()
        if topic == topology.ORDER_STATUS:
            return await self._strip_fulfillment_history()
        if topic == topology.PRODUCT_CHANGES:
            return await self.products.clear()
        raise ValueError(f"orders does not consume {topic}")

    # --- Operator use cases (svckit.admin) ---------------------------------------------

    async def republish(self, ids: Sequence[str]) -> Republished:
        """Repairs: tell fulfillment again what each order's current status means for it, and
        every follower of the facts the order's current state."""
        return await republish_each(ids, self._republish, self.relay.notify)

    async def _republish(self, order_id: str) -> Verdict | Lost:
        order = await self.orders.get(order_id)
        if order is None:
            return Verdict.NOT_FOUND
        customer = await self.customers.get(order.customer_id)
        event = domain.fulfillment_should_know(order, customer)
        entries = [] if event is None else [self._to_fulfillment(order, event)]
        entries += self._facts(order)
        return saved(await self.orders.republish(order_id, order.version, entries), Verdict.QUEUED)

    def batch_handlers(self) -> dict[str, BatchHandler]:
        """Customer events share one version sequence, so one handler takes runs of both."""
        return {
            accounts_events.CustomerChanged.DESCRIPTOR.full_name: self.apply_customer_events,
            accounts_events.CustomerDeleted.DESCRIPTOR.full_name: self.apply_customer_events,
        }

    def event_handlers(self) -> dict[str, EventHandler]:
        return {
            accounts_events.CustomerChanged.DESCRIPTOR.full_name: self.apply_customer_changed,
            accounts_events.CustomerDeleted.DESCRIPTOR.full_name: self.apply_customer_deleted,
            fulfillment_events.OrderStatusChanged.DESCRIPTOR.full_name: (
                self.apply_order_status_changed
            ),
            catalog_events.ProductChanged.DESCRIPTOR.full_name: self.apply_product_changed,
        }
