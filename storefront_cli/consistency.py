"""`storefront check | replay | dlq`: find and repair divergence, rebuild read
models from their topics, and work the dead-letter queues.

Each system of record is compared with the copies others keep of it:
accounts' customers vs orders' copies, and fulfillment's shipping history vs
the orders' status histories (plus: every approved order has a fulfillment,
and a cancellation reached fulfillment). `--repair` never edits a copy: it
makes the owner queue its current state in its outbox again, and the owner's
relay and the consumers do the rest, with the usual idempotency rules.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from accounts_svc import domain as accounts_domain
from accounts_svc import handlers as accounts_handlers
from accounts_svc.repository import CustomerRepository
from fulfillment_svc import domain as fulfillment_domain
from fulfillment_svc import handlers as fulfillment_handlers
from fulfillment_svc.handlers import FulfillmentHandlers
from fulfillment_svc.repository import FulfillmentRepository
from orders_svc import domain as orders_domain
from orders_svc import handlers as orders_handlers
from orders_svc.handlers import OrdersHandlers
from orders_svc.repository import APPLIED, CustomerCopies, OrderRepository
from storefront.common.v1 import common_pb2
from storefront_cli import endpoints
from storefront_cli.tables import render
from svckit import mongo
from svckit.consumer import DLQ_SUFFIX, EventHandler
from svckit.envelope import header_map
from svckit.outbox import OUTBOX, NullNotifier, outbox_entry
from svckit.replay import partitions_of, replay_topic

Document = dict[str, Any]
Status = common_pb2.OrderStatus
Log = Callable[[str], None]
TOPICS = ("accounts.customer.change", "orders.order.fulfill", "fulfillment.order.change")


@dataclass
class Divergence:
    kind: str
    subject: str
    detail: str
    repair: Callable[[], Awaitable[bool]] | None = None


class Storefront:
    """The three databases, with each service's own repositories over them."""

    def __init__(self, ep: endpoints.Endpoints) -> None:
        self.ep = ep
        self.client: AsyncMongoClient[Document] = mongo.connect(ep.mongodb)
        self.dbs: dict[str, AsyncDatabase[Document]] = {
            s: self.client[ep.database(s)] for s in endpoints.SERVICES
        }
        self.customers = CustomerRepository(self.dbs["accounts"])
        self.orders = OrderRepository(self.dbs["orders"])
        self.copies = CustomerCopies(self.dbs["orders"])
        self.fulfillments = FulfillmentRepository(self.dbs["fulfillment"])

    async def close(self) -> None:
        await self.client.close()

    def handlers(self, service: str) -> OrdersHandlers | FulfillmentHandlers:
        if service == "orders":
            return OrdersHandlers(self.orders, self.copies, NullNotifier())  # type: ignore[arg-type]
        if service == "fulfillment":
            return FulfillmentHandlers(self.fulfillments, NullNotifier())  # type: ignore[arg-type]
        raise ValueError(f"{service} consumes no topic")


# --- check ---------------------------------------------------------------------------


def _copy_fields(doc: Document) -> Document:
    return {k: doc.get(k) for k in ("name", "contact", "addresses")}


async def customer_divergences(sf: Storefront) -> list[Divergence]:
    found: list[Divergence] = []
    copies = {d["_id"]: d async for d in sf.copies.collection.find({})}
    async for doc in sf.customers.collection.find({}, {OUTBOX: 0}):
        cid, version = doc["_id"], doc["version"]
        copy = copies.pop(cid, None)
        repair = _republish_customer(sf, cid, version)
        if doc.get("deleted"):
            if copy is not None and not copy.get("deleted"):
                found.append(
                    Divergence("deleted customer still copied", cid, f"v{version}", repair)
                )
            continue
        if copy is None:
            found.append(Divergence("missing customer copy", cid, f"accounts v{version}", repair))
        elif copy.get("deleted"):
            found.append(Divergence("copy deleted, customer live", cid, f"v{version}", repair))
        elif copy["version"] < version:
            found.append(
                Divergence(
                    "stale customer copy", cid, f"copy v{copy['version']} < v{version}", repair
                )
            )
        elif _copy_fields(copy) != _copy_fields(doc):
            found.append(Divergence("customer copy differs", cid, f"both v{version}", repair))
    for cid, copy in copies.items():
        if not copy.get("deleted"):
            found.append(
                Divergence("copy of unknown customer", cid, "accounts has no such customer")
            )
    return found


def _republish_customer(sf: Storefront, cid: str, version: int) -> Callable[[], Awaitable[bool]]:
    async def repair() -> bool:
        doc = await sf.customers.collection.find_one({"_id": cid}, {OUTBOX: 0})
        if doc is None:
            return False
        now = datetime.now(UTC)
        if doc.get("deleted"):
            event: Any = accounts_domain.customer_deleted(sf.customers.load(doc), now)
            event.version = doc["version"]
        else:
            event = accounts_domain.customer_changed(sf.customers.load(doc))
        entry = outbox_entry(
            accounts_handlers.TOPIC, cid, event, source=accounts_handlers.SOURCE, seq=doc["version"]
        )
        return await sf.customers.republish(cid, doc["version"], [entry])

    return repair


async def order_divergences(sf: Storefront) -> list[Divergence]:
    found: list[Divergence] = []
    fulfillments = {
        d["_id"]: sf.fulfillments.load(d)
        async for d in sf.fulfillments.collection.find({}, {OUTBOX: 0})
    }
    async for doc in sf.orders.collection.find({}, {OUTBOX: 0}):
        order = sf.orders.load(doc)
        oid = order.order_id
        applied = set(doc.get(APPLIED, []))
        statuses = [e.status for e in order.status_events]
        f = fulfillments.pop(oid, None)
        if Status.ORDER_STATUS_APPROVED not in statuses:
            if f is not None:
                found.append(
                    Divergence("fulfillment of unapproved order", oid, "orders never approved it")
                )
            continue
        if f is None:
            if order.status == Status.ORDER_STATUS_CANCELLED:
                # Re-requesting would start shipping a cancelled order: send the cancellation,
                # which leaves fulfillment a CANCELLED tombstone that any late request hits.
                found.append(
                    Divergence(
                        "cancelled order unknown to fulfillment", oid, "", _recancel(sf, oid)
                    )
                )
            else:
                found.append(
                    Divergence("approved order without fulfillment", oid, "", _rerequest(sf, oid))
                )
            continue
        for change in fulfillment_domain.published_changes(f):
            if change.version not in applied:
                name = orders_domain.status_name(change.status)
                found.append(
                    Divergence(
                        "status change missing in order",
                        oid,
                        f"{name} (v{change.version})",
                        _republish_statuses(sf, oid),
                    )
                )
        if (
            order.status == Status.ORDER_STATUS_CANCELLED
            and f.status in fulfillment_domain.CANCELLABLE
        ):
            found.append(
                Divergence(
                    "cancellation not applied",
                    oid,
                    f"fulfillment {orders_domain.status_name(f.status)}",
                    _recancel(sf, oid),
                )
            )
    for oid in fulfillments:
        found.append(Divergence("fulfillment of unknown order", oid, "orders has no such order"))
    return found


def _republish_statuses(sf: Storefront, oid: str) -> Callable[[], Awaitable[bool]]:
    async def repair() -> bool:
        f = await sf.fulfillments.get(oid)
        if f is None:
            return False
        entries = [
            outbox_entry(
                fulfillment_handlers.TOPIC,
                oid,
                e,
                source=fulfillment_handlers.SOURCE,
                seq=e.version,
            )
            for e in fulfillment_domain.published_changes(f)
        ]
        return await sf.fulfillments.republish(oid, f.version, entries)

    return repair


def _rerequest(sf: Storefront, oid: str) -> Callable[[], Awaitable[bool]]:
    async def repair() -> bool:
        order = await sf.orders.get(oid)
        copy = await sf.copies.get(order.customer_id) if order else None
        if order is None or copy is None:
            return False
        event = orders_domain.fulfillment_requested(order, copy)
        entry = outbox_entry(
            orders_handlers.TOPIC, oid, event, source=orders_handlers.SOURCE, seq=order.version
        )
        return await sf.orders.republish(oid, order.version, [entry])

    return repair


def _recancel(sf: Storefront, oid: str) -> Callable[[], Awaitable[bool]]:
    async def repair() -> bool:
        order = await sf.orders.get(oid)
        if order is None:
            return False
        event = orders_domain.fulfillment_cancelled(order, order.status_events[-1].note)
        entry = outbox_entry(
            orders_handlers.TOPIC, oid, event, source=orders_handlers.SOURCE, seq=order.version
        )
        return await sf.orders.republish(oid, order.version, [entry])

    return repair


async def divergences(sf: Storefront) -> list[Divergence]:
    return [*await customer_divergences(sf), *await order_divergences(sf)]


async def check(ep: endpoints.Endpoints, *, repair: bool, wait: float, log: Log) -> int:
    sf = Storefront(ep)
    try:
        found = await divergences(sf)
        _report(found, log)
        if not found or not repair:
            return 1 if found else 0
        repaired = 0
        for d in found:
            if d.repair and await d.repair():
                repaired += 1
        log(
            f"[repair] {repaired} of {len(found)} queued for republishing by their owners; "
            "waiting ..."
        )
        deadline = time.monotonic() + wait
        while found and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            found = await divergences(sf)
        _report(found, log, after_repair=True)
        return 1 if found else 0
    finally:
        await sf.close()


def _report(found: list[Divergence], log: Log, *, after_repair: bool = False) -> None:
    when = "after repair: " if after_repair else ""
    if not found:
        log(f"{when}no divergence: every copy agrees with its system of record")
        return
    rows = [(d.kind, d.subject, d.detail, "yes" if d.repair else "no") for d in found]
    log(
        render(
            ("divergence", "subject", "detail", "repairable"),
            rows,
            title=f"{when}{len(found)} divergences",
        )
    )


# --- replay ----------------------------------------------------------------------------

COMPARE_IGNORES = {"_outbox", "version", "update_time"}


async def _snapshot(
    db: AsyncDatabase[Document], collection: str, ignore: set[str]
) -> dict[str, Document]:
    return {
        d["_id"]: {k: v for k, v in d.items() if k not in ignore}
        async for d in db[collection].find({})
    }


READ_MODELS = {
    ("orders", "accounts.customer.change"): ("customers", {"_outbox"}),
    ("orders", "fulfillment.order.change"): ("customer.orders", COMPARE_IGNORES),
    ("fulfillment", "orders.order.fulfill"): ("fulfillment.requests", {"_outbox"}),
}


async def replay(
    ep: endpoints.Endpoints, service: str, topic: str, *, rebuild: bool, log: Log
) -> int:
    if (service, topic) not in READ_MODELS:
        known = ", ".join(f"{s} {t}" for s, t in READ_MODELS)
        log(f"unknown read model {service} {topic}; one of: {known}")
        return 2
    collection, ignore = READ_MODELS[(service, topic)]
    sf = Storefront(ep)
    try:
        db = sf.dbs[service]
        handlers = sf.handlers(service)
        before = await _snapshot(db, collection, ignore)
        if rebuild:
            try:
                dropped = await handlers.forget(topic)
            except ValueError as exc:
                log(f"cannot rebuild: {exc}")
                return 2
            log(f"[replay] forgot {dropped} documents derived from {topic}")
        handler_map: dict[str, EventHandler] = handlers.event_handlers()
        await replay_topic(ep.kafka, topic, handler_map, log=log)
        after = await _snapshot(db, collection, ignore)
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if differ:
            log(
                f"[replay] {len(differ)} documents differ from before the replay: "
                + ", ".join(differ[:10])
            )
            return 1
        log(
            f"[replay] {service}/{collection}: {len(after)} documents, "
            "identical to before the replay"
        )
        return 0
    finally:
        await sf.close()


# --- DLQ -----------------------------------------------------------------------------

REPLAY_GROUP = "storefront-dlq-replay"


@dataclass
class Parked:
    id: str
    dlq_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def meta(self) -> dict[str, str]:
        return header_map(self.headers)


async def parked(ep: endpoints.Endpoints, topics: list[str]) -> list[Parked]:
    """Every record in the given DLQ topics, oldest first per partition."""
    consumer = ep.kafka.consumer(group_id=None, enable_auto_commit=False)
    await consumer.start()
    out: list[Parked] = []
    try:
        partitions = [tp for t in topics for tp in await partitions_of(ep.kafka, t)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                for r in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    out.append(
                        Parked(
                            f"{r.topic}:{r.partition}:{r.offset}",
                            r.topic,
                            r.partition,
                            r.offset,
                            r.key,
                            r.value,
                            list(r.headers or ()),
                        )
                    )
    finally:
        await consumer.stop()
    return out


async def _replayed_upto(
    ep: endpoints.Endpoints, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    consumer = ep.kafka.consumer(group_id=REPLAY_GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: (await consumer.committed(tp)) or 0 for tp in partitions}
    finally:
        await consumer.stop()


async def dlq_list(ep: endpoints.Endpoints, topic: str | None, log: Log) -> int:
    topics = [f"{topic or t}{DLQ_SUFFIX}" for t in ([topic] if topic else TOPICS)]
    records = await parked(ep, topics)
    done = await _replayed_upto(ep, [TopicPartition(r.dlq_topic, r.partition) for r in records])
    rows = []
    for r in records:
        m = r.meta
        replayed = r.offset < done.get(TopicPartition(r.dlq_topic, r.partition), 0)
        rows.append(
            (
                r.id,
                m.get("ce_type", "?"),
                (r.key or b"").decode(errors="replace"),
                m.get("dlq_attempts", ""),
                "yes" if replayed else "no",
                m.get("dlq_error", "")[:70],
            )
        )
    log(
        render(
            ("id", "type", "key", "attempts", "replayed", "error"),
            rows,
            title=f"{len(rows)} dead-lettered events",
        )
    )
    return 0


async def dlq_replay(ep: endpoints.Endpoints, topic: str | None, ids: list[str], log: Log) -> int:
    """Send parked records back to their original topic, original headers restored.

    Without ids, replays everything not replayed before (progress is the
    committed offset of the `storefront-dlq-replay` group).
    """
    topics = [f"{topic or t}{DLQ_SUFFIX}" for t in ([topic] if topic else TOPICS)]
    records = await parked(ep, topics)
    done = await _replayed_upto(ep, [TopicPartition(r.dlq_topic, r.partition) for r in records])
    if ids:
        unknown = set(ids) - {r.id for r in records}
        if unknown:
            log(f"no such DLQ record: {', '.join(sorted(unknown))}")
            return 2
        chosen = [r for r in records if r.id in ids]
    else:
        chosen = [
            r for r in records if r.offset >= done.get(TopicPartition(r.dlq_topic, r.partition), 0)
        ]
    producer = ep.kafka.producer(acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for r in chosen:
            origin = r.meta.get("dlq_topic") or r.dlq_topic.removesuffix(DLQ_SUFFIX)
            headers = [(k, v) for k, v in r.headers if not k.startswith("dlq_")]
            await producer.send_and_wait(origin, r.value, key=r.key, headers=headers)
            log(f"[dlq] replayed {r.id} -> {origin}")
    finally:
        await producer.stop()
    if not ids and chosen:
        await _commit_replayed(ep, chosen)
    log(f"[dlq] {len(chosen)} replayed")
    return 0


async def _commit_replayed(ep: endpoints.Endpoints, replayed: list[Parked]) -> None:
    upto: dict[TopicPartition, int] = {}
    for r in replayed:
        tp = TopicPartition(r.dlq_topic, r.partition)
        upto[tp] = max(upto.get(tp, 0), r.offset + 1)
    consumer = ep.kafka.consumer(group_id=REPLAY_GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(upto))
        await consumer.commit(upto)
    finally:
        await consumer.stop()


# --- CLI -----------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db-prefix", default=None, help="database name prefix (tests)")

    p = sub.add_parser("check", help="compare each system of record with its copies")
    p.add_argument("--repair", action="store_true", help="make owners republish current state")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for repairs to land")
    common(p)
    p.set_defaults(
        func=lambda a: asyncio.run(
            check(endpoints.load(db_prefix=a.db_prefix), repair=a.repair, wait=a.wait, log=_say)
        )
    )

    p = sub.add_parser("replay", help="re-apply a topic from offset 0 to a service's read model")
    p.add_argument("service", choices=["orders", "fulfillment"])
    p.add_argument("topic", choices=list(TOPICS))
    p.add_argument("--rebuild", action="store_true", help="forget the derived state first")
    common(p)
    p.set_defaults(
        func=lambda a: asyncio.run(
            replay(
                endpoints.load(db_prefix=a.db_prefix),
                a.service,
                a.topic,
                rebuild=a.rebuild,
                log=_say,
            )
        )
    )

    dlq = sub.add_parser("dlq", help="list or replay dead-lettered events")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True)
    p = dsub.add_parser("list")
    p.add_argument("--topic", choices=list(TOPICS))
    p.set_defaults(func=lambda a: asyncio.run(dlq_list(endpoints.load(), a.topic, _say)))
    p = dsub.add_parser("replay")
    p.add_argument("--topic", choices=list(TOPICS))
    p.add_argument("ids", nargs="*", help="ids from `dlq list` (topic:partition:offset)")
    p.set_defaults(func=lambda a: asyncio.run(dlq_replay(endpoints.load(), a.topic, a.ids, _say)))


def _say(msg: str) -> None:
    print(msg, flush=True)



