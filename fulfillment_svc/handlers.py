"""Fulfillment use cases: one function each, reading like the use case."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import topology
from fulfillment_svc import domain
from fulfillment_svc.domain import Fulfillment, Status
from svckit import names
from svckit.admin import Republished, Verdict, republish_each
from svckit.consumer import EventHandler, Outcome
from svckit.envelope import Envelope
from svckit.errors import AlreadyExists, NotFound
from svckit.outbox import Notifier, outbox_entry
from svckit.saving import LOST, Change, Lost, change, saved, until_saved
from svckit.shape import Page
from svckit.store import Store

TOPIC = topology.ORDER_STATUS
SOURCE = names.source(topology.FULFILLMENT)


# How the consumer should count a cancellation that changes nothing.
CANCELLATION_OUTCOMES = {
    domain.Cancellation.ALREADY_CANCELLED: Outcome.DUPLICATE,
    domain.Cancellation.TOO_LATE: Outcome.IGNORED,
}


class Fulfillments(Store[Fulfillment], Protocol):
    """Fulfillment's store (`FulfillmentRepository`; a fake in unit tests)."""

    async def page_by_status(
        self, status: Status | None, after: str | None, limit: int
    ) -> tuple[list[Fulfillment], str | None]: ...


class FulfillmentHandlers:
    def __init__(
        self,
        fulfillments: Fulfillments,
        relay: Notifier,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.fulfillments = fulfillments
        self.relay = relay
        self.clock = clock

    def _event(self, fulfillment: Fulfillment) -> dict[str, Any]:
        return outbox_entry(
            TOPIC,
            fulfillment.order_id,
            domain.order_status_changed(fulfillment),
            source=SOURCE,
            seq=fulfillment.version,
        )

    async def get_fulfillment(self, order_id: str) -> Fulfillment:
        fulfillment = await self.fulfillments.get(order_id)
        if fulfillment is None:
            raise NotFound(f"fulfillment for order {order_id!r} not found")
        return fulfillment

    async def owner_of(self, order_id: str) -> str | None:
        """Whose order is being fulfilled, for the access policy (None: no such fulfillment)."""
        fulfillment = await self.fulfillments.get(order_id)
        return fulfillment.customer_id if fulfillment is not None else None

    async def list_fulfillments(
        self, status: int | None, page: Page
    ) -> tuple[list[Fulfillment], str | None]:
        """One page of fulfillments (in `status`, or any) and the id the next one starts
        after (None: the end)."""
        wanted = Status(status) if status is not None else None
        return await self.fulfillments.page_by_status(wanted, page.after, page.limit)

    async def process_fulfillment(self, order_id: str, note: str = "") -> Fulfillment:
        return await self._advance(order_id, domain.PROCESSING, note)

    async def ship_fulfillment(self, order_id: str, note: str = "") -> Fulfillment:
        return await self._advance(order_id, domain.SHIPPED, note)

    async def mark_in_transit(self, order_id: str, note: str = "") -> Fulfillment:
        return await self._advance(order_id, domain.IN_TRANSIT, note)

    async def confirm_received(self, order_id: str, note: str = "") -> Fulfillment:
        return await self._advance(order_id, domain.RECEIVED, note)

    async def _advance(self, order_id: str, target: Status, note: str) -> Fulfillment:
        """Every shipping step: one transition and its OrderStatusChanged, in one write."""

        def decide(current: Fulfillment) -> Change:
            fulfillment = domain.transition(current, target, self.clock(), note)
            return Change(fulfillment, [self._event(fulfillment)])

        fulfillment = await change(
            self.fulfillments,
            lambda: self.get_fulfillment(order_id),
            decide,
            what=f"fulfillment {order_id}",
        )
        self.relay.notify(order_id)
        return fulfillment

    async def apply_fulfillment_requested(self, envelope: Envelope) -> Outcome:
        """One fulfillment per approved order; orders already knows it is APPROVED, so no event.

        The order id is the document id, so a redelivered request, even after the
        fulfillment moved on or was cancelled, can only collide and is a duplicate.
        """
        requested = envelope.payload(domain.FulfillmentRequested)
        fulfillment = domain.new_fulfillment(requested, self.clock())
        try:
            await self.fulfillments.insert(fulfillment, [])
        except AlreadyExists:
            return Outcome.DUPLICATE
        return Outcome.APPLIED

    async def apply_fulfillment_cancelled(self, envelope: Envelope) -> Outcome:
        """Stop a fulfillment that has not shipped; orders set CANCELLED itself, so no event.

        For an order never seen here (its request parked in the DLQ, or still to come after a
        replay) the cancellation leaves a CANCELLED tombstone, which that request then hits
        as a duplicate: a cancelled order is never shipped, whatever the arrival order.
        """
        event = envelope.payload(domain.FulfillmentCancelled)
        domain.validate_cancelled(event)

        async def attempt() -> Outcome | Lost:
            current = await self.fulfillments.get(event.order_id)
            if current is None:
                try:
                    tombstone = domain.cancelled_before_requested(event, self.clock())
                    await self.fulfillments.insert(tombstone, [])
                except AlreadyExists:
                    return LOST  # the request landed meanwhile: decide again on it
                return Outcome.APPLIED
            verdict = domain.cancellation(current)
            if verdict in CANCELLATION_OUTCOMES:
                return CANCELLATION_OUTCOMES[verdict]
            fulfillment = domain.cancelled(current, event, self.clock())
            landed = await self.fulfillments.update(fulfillment, current.version, [])
            return saved(landed, Outcome.APPLIED)  # lost: a shipping step won, decide again

        return await until_saved(attempt, what=f"fulfillment {event.order_id}")

    def event_handlers(self) -> dict[str, EventHandler]:
        return {
            domain.FulfillmentRequested.DESCRIPTOR.full_name: self.apply_fulfillment_requested,
            domain.FulfillmentCancelled.DESCRIPTOR.full_name: self.apply_fulfillment_cancelled,
        }

    async def forget(self, topic: str) -> int:
        """Fulfillment is the system of record for shipping: nothing here is only derived."""
        raise ValueError(
            "fulfillment owns its state; replay orders.order.fulfill without --rebuild"
        )

    async def republish(self, ids: Sequence[str]) -> Republished:
        """Repairs: queue every status change each fulfillment has published, again."""
        return await republish_each(ids, self._republish, self.relay.notify)

    async def _republish(self, order_id: str) -> Verdict | Lost:
        fulfillment = await self.fulfillments.get(order_id)
        if fulfillment is None:
            return Verdict.NOT_FOUND
        entries = [
            outbox_entry(TOPIC, order_id, change, source=SOURCE, seq=change.version)
            for change in domain.published_changes(fulfillment)
        ]
        if not entries:
            return Verdict.NOTHING_TO_PUBLISH
        landed = await self.fulfillments.republish(order_id, fulfillment.version, entries)
        return saved(landed, Verdict.QUEUED)
