"""`storefront check | replay | dlq`: find and repair divergence, rebuild read
models from their topics, and work the dead-letter queues.

Each system of record is compared with the copies others keep of it:
accounts' customers vs orders' copies, and fulfillment's shipping history vs
the orders' status histories (plus: every approved order has a fulfillment,
and a cancellation reached fulfillment). The check only reads the databases. Every
write is a use case of the owning service, called through its internal admin service
(svckit.admin) as staff: `--repair` never edits a copy, it asks the owner to queue its
current state in its outbox again (the owner's relay and the consumers do the rest, with
the usual idempotency rules); `replay` and `dlq replay` ask the consuming service to
re-apply a topic or its parked events through its own handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from aiokafka import TopicPartition
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from accounts_svc.repository import CustomerRepository
from fulfillment_svc import domain as fulfillment_domain
from fulfillment_svc.repository import FulfillmentRepository
from orders_svc import domain as orders_domain
from orders_svc.repository import APPLIED, CustomerCopies, OrderRepository
from stack import issuer
from storefront.admin.v1 import admin_pb2
from storefront.common.v1 import common_pb2
from storefront_cli import endpoints
from storefront_cli.clients import Clients, TokenFor, acting_as_needed, fixed
from storefront_cli.tables import render
from svckit import dlq, mongo, names
from svckit.admin import MAX_IDS
from svckit.outbox import OUTBOX

Document = dict[str, Any]
Status = common_pb2.OrderStatus
Log = Callable[[str], None]
REPLAY_DEADLINE = 3600.0


@dataclass
class Divergence:
    kind: str
    subject: str
    detail: str
    owner: str | None = None
    """The service that republishes `subject` to repair it; None: not repairable."""


class Storefront:
    """The three databases, read through each service's own repositories."""

    def __init__(self, ep: endpoints.Endpoints) -> None:
        self.ep = ep
        self.client: AsyncMongoClient[Document] = mongo.connect(ep.mongodb)
        self.dbs: dict[str, AsyncDatabase[Document]] = {
            s: self.client[ep.database(s)] for s in names.SERVICES
        }
        self.customers = CustomerRepository(self.dbs["accounts"])
        self.orders = OrderRepository(self.dbs["orders"])
        self.copies = CustomerCopies(self.dbs["orders"])
        self.fulfillments = FulfillmentRepository(self.dbs["fulfillment"])

    async def close(self) -> None:
        await self.client.close()


def tokens() -> TokenFor:
    """`STOREFRONT_TOKEN` (a staff token of the deployment's issuer), else tokens minted from
    the local run dir's issuer."""
    token = os.environ.get("STOREFRONT_TOKEN")
    return fixed(token) if token else acting_as_needed(issuer.for_run_dir(endpoints.RUN_DIR))


def connect(ep: endpoints.Endpoints) -> Clients:
    return Clients.connect(*(ep.grpc[s] for s in names.SERVICES), tokens=tokens())


# --- check ---------------------------------------------------------------------------


def _copy_fields(doc: Document) -> Document:
    return {k: doc.get(k) for k in ("name", "contact", "addresses")}


async def customer_divergences(sf: Storefront) -> list[Divergence]:
    found: list[Divergence] = []
    copies = {d["_id"]: d async for d in sf.copies.collection.find({})}
    async for doc in sf.customers.collection.find({}, {OUTBOX: 0}):
        cid, version = doc["_id"], doc["version"]
        copy = copies.pop(cid, None)
        if doc.get("deleted"):
            if copy is not None and not copy.get("deleted"):
                found.append(
                    Divergence("deleted customer still copied", cid, f"v{version}", "accounts")
                )
            continue
        if copy is None:
            found.append(
                Divergence("missing customer copy", cid, f"accounts v{version}", "accounts")
            )
        elif copy.get("deleted"):
            found.append(Divergence("copy deleted, customer live", cid, f"v{version}", "accounts"))
        elif copy["version"] < version:
            found.append(
                Divergence(
                    "stale customer copy", cid, f"copy v{copy['version']} < v{version}", "accounts"
                )
            )
        elif _copy_fields(copy) != _copy_fields(doc):
            found.append(Divergence("customer copy differs", cid, f"both v{version}", "accounts"))
    for cid, copy in copies.items():
        if not copy.get("deleted"):
            found.append(
                Divergence("copy of unknown customer", cid, "accounts has no such customer")
            )
    return found


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
            # Orders decides what to send: for a cancelled order the cancellation (which
            # leaves fulfillment a CANCELLED tombstone), never a request that would ship it.
            kind = (
                "cancelled order unknown to fulfillment"
                if order.status == Status.ORDER_STATUS_CANCELLED
                else "approved order without fulfillment"
            )
            found.append(Divergence(kind, oid, "", "orders"))
            continue
        for change in fulfillment_domain.published_changes(f):
            if change.version not in applied:
                name = orders_domain.status_name(change.status)
                found.append(
                    Divergence(
                        "status change missing in order",
                        oid,
                        f"{name} (v{change.version})",
                        "fulfillment",
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
                    "orders",
                )
            )
    for oid in fulfillments:
        found.append(Divergence("fulfillment of unknown order", oid, "orders has no such order"))
    return found


async def divergences(sf: Storefront) -> list[Divergence]:
    return [*await customer_divergences(sf), *await order_divergences(sf)]


async def republish(clients: Clients, found: list[Divergence], log: Log) -> int:
    """Ask each owner to republish its subjects; returns how many it queued."""
    subjects: dict[str, list[str]] = {}
    for d in found:
        if d.owner:
            subjects.setdefault(d.owner, [])
            if d.subject not in subjects[d.owner]:
                subjects[d.owner].append(d.subject)
    queued = 0
    for owner, ids in subjects.items():
        for i in range(0, len(ids), MAX_IDS):
            reply = await clients.admin[owner].Republish(
                admin_pb2.RepublishRequest(ids=ids[i : i + MAX_IDS]), timeout=120
            )
            queued += len(reply.queued)
            for what, which in (
                ("nothing to publish", reply.nothing_to_publish),
                ("not found", reply.not_found),
            ):
                if which:
                    log(f"[repair] {owner}: {what} for {', '.join(which[:10])}")
    return queued


async def check(
    ep: endpoints.Endpoints,
    *,
    repair: bool,
    wait: float,
    log: Log,
    clients: Clients | None = None,
) -> int:
    """Report divergence (exit 1 if any); with `repair`, have the owners republish (through
    `clients`' admin stubs) and wait up to `wait` seconds for it to converge."""
    sf = Storefront(ep)
    try:
        found = await divergences(sf)
        _report(found, log)
        if not found or not repair:
            return 1 if found else 0
        if clients is None:
            raise ValueError("repairing needs clients of the services' admin service")
        queued = await republish(clients, found, log)
        log(
            f"[repair] {len(found)} divergences: their owners queued {queued} aggregates "
            "for republishing; waiting ..."
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
    rows = [(d.kind, d.subject, d.detail, d.owner or "no") for d in found]
    log(
        render(
            ("divergence", "subject", "detail", "repaired by"),
            rows,
            title=f"{when}{len(found)} divergences",
        )
    )


# --- replay ----------------------------------------------------------------------------


def _consumer_of(topic: str, service: str | None, log: Log) -> str | None:
    owner = names.CONSUMER_OF.get(topic)
    if owner is None or (service is not None and service != owner):
        known = ", ".join(f"{s} {t}" for t, s in names.CONSUMER_OF.items())
        log(f"unknown read model {service or '?'} {topic}; one of: {known}")
        return None
    return owner


async def replay(clients: Clients, service: str, topic: str, *, rebuild: bool, log: Log) -> int:
    """Have `service` re-apply `topic` (exit 0: its read model came out identical)."""
    if _consumer_of(topic, service, log) is None:
        return 2
    log(f"[replay] {service} re-applies {topic}{' after forgetting it' if rebuild else ''} ...")
    try:
        reply = await clients.admin[service].ReplayTopic(
            admin_pb2.ReplayTopicRequest(topic=topic, rebuild=rebuild), timeout=REPLAY_DEADLINE
        )
    except grpc.aio.AioRpcError as exc:
        log(f"cannot replay: {exc.details()}")
        return 2
    if rebuild:
        log(f"[replay] forgot {reply.forgotten} documents derived from {topic}")
    log(f"[replay] {topic}: {reply.records} records, {dict(reply.outcomes)}")
    if reply.changed_count:
        log(
            f"[replay] {reply.changed_count} documents differ from before the replay: "
            + ", ".join(reply.changed[:10])
        )
        return 1
    log(f"[replay] {service}: {reply.documents} documents, identical to before the replay")
    return 0


# --- DLQ -----------------------------------------------------------------------------


def _topics(topic: str | None) -> list[str]:
    return [topic] if topic else list(names.TOPICS)


async def _replayed(
    ep: endpoints.Endpoints, records: list[dlq.Parked]
) -> Mapping[TopicPartition, int]:
    """Per DLQ partition, how far its consumer's "replay everything" got."""
    upto: dict[TopicPartition, int] = {}
    for topic, service in names.CONSUMER_OF.items():
        mine = [r.tp for r in records if r.dlq_topic == names.dlq_topic(topic)]
        if mine:
            group = names.dlq_replay_group(names.consumer_group(service, ep.db_prefix))
            upto.update(await dlq.replayed_upto(ep.kafka, group, mine))
    return upto


@dataclass(frozen=True)
class ParkedRow:
    """One dead-lettered event, as `dlq list` shows it (and the console)."""

    id: str
    type: str
    key: str
    attempts: str
    replayed: bool
    """Below how far "replay everything" got (a replay by id does not move that)."""
    error: str
    time: str
    """When it was parked (dlq_time), "" if the header is missing."""


async def dlq_rows(ep: endpoints.Endpoints, topic: str | None = None) -> list[ParkedRow]:
    """Every parked record of `topic`'s DLQ (default: every DLQ), oldest first per partition."""
    records = await dlq.parked(ep.kafka, [names.dlq_topic(t) for t in _topics(topic)])
    done = await _replayed(ep, records)
    return [
        ParkedRow(
            r.id,
            r.meta.get("ce_type", "?"),
            (r.key or b"").decode(errors="replace"),
            r.meta.get("dlq_attempts", ""),
            r.offset < done.get(r.tp, 0),
            r.meta.get("dlq_error", ""),
            r.meta.get("dlq_time", ""),
        )
        for r in records
    ]


async def dlq_list(ep: endpoints.Endpoints, topic: str | None, log: Log) -> int:
    rows = [
        (r.id, r.type, r.key, r.attempts, "yes" if r.replayed else "no", r.error[:70])
        for r in await dlq_rows(ep, topic)
    ]
    log(
        render(
            ("id", "type", "key", "attempts", "replayed", "error"),
            rows,
            title=f"{len(rows)} dead-lettered events",
        )
    )
    return 0


async def dlq_replay(clients: Clients, topic: str | None, ids: list[str], log: Log) -> int:
    """Have the consuming service apply parked records in place: the given ids, or without
    ids everything it has not replayed before. Exit 1 if any failed again, 2 on bad ids."""
    wanted: dict[str, list[str]] = {}
    for record_id in ids:
        origin = dlq.origin_of(record_id.split(":", 1)[0])
        if origin not in names.CONSUMER_OF or (topic and origin != topic):
            log(f"no such DLQ record: {record_id}")
            return 2
        wanted.setdefault(origin, []).append(record_id)
    failed = total = 0
    for t in wanted or [t for t in _topics(topic) if t in names.CONSUMER_OF]:
        service = names.CONSUMER_OF[t]
        try:
            reply = await clients.admin[service].ReplayParked(
                admin_pb2.ReplayParkedRequest(topic=t, ids=wanted.get(t, [])),
                timeout=REPLAY_DEADLINE,
            )
        except grpc.aio.AioRpcError as exc:
            log(f"[dlq] {service} cannot replay {t}: {exc.details()}")
            return 2 if exc.code() == grpc.StatusCode.NOT_FOUND else 1
        for r in reply.results:
            total += 1
            failed += r.outcome == dlq.FAILED
            log(f"[dlq] {r.id}: {r.outcome}{f' ({r.error})' if r.error else ''}")
    log(f"[dlq] {total - failed} replayed, {failed} failed")
    return 1 if failed else 0


# --- CLI -----------------------------------------------------------------------------


async def _with_clients(ep: endpoints.Endpoints, use: Callable[[Clients], Any]) -> int:
    clients = connect(ep)
    try:
        return int(await use(clients))
    finally:
        await clients.close()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db-prefix", default=None, help="database name prefix (tests)")

    def cmd_check(a: argparse.Namespace) -> int:
        ep = endpoints.load(db_prefix=a.db_prefix)
        return asyncio.run(
            _with_clients(
                ep, lambda c: check(ep, repair=a.repair, wait=a.wait, log=_say, clients=c)
            )
        )

    p = sub.add_parser("check", help="compare each system of record with its copies")
    p.add_argument("--repair", action="store_true", help="make owners republish current state")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for repairs to land")
    common(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("replay", help="have a service re-apply a topic to its read model")
    p.add_argument("service", choices=sorted(set(names.CONSUMER_OF.values())))
    p.add_argument("topic", choices=list(names.CONSUMER_OF))
    p.add_argument("--rebuild", action="store_true", help="forget the derived state first")
    p.set_defaults(
        func=lambda a: asyncio.run(
            _with_clients(
                endpoints.load(),
                lambda c: replay(c, a.service, a.topic, rebuild=a.rebuild, log=_say),
            )
        )
    )

    dlq_cmd = sub.add_parser("dlq", help="list or replay dead-lettered events")
    dsub = dlq_cmd.add_subparsers(dest="dlq_command", required=True)
    p = dsub.add_parser("list")
    p.add_argument("--topic", choices=list(names.TOPICS))
    p.set_defaults(func=lambda a: asyncio.run(dlq_list(endpoints.load(), a.topic, _say)))
    p = dsub.add_parser("replay", help="have the consuming service apply parked events")
    p.add_argument("--topic", choices=list(names.CONSUMER_OF))
    p.add_argument("ids", nargs="*", help="ids from `dlq list` (topic:partition:offset)")
    p.set_defaults(
        func=lambda a: asyncio.run(
            _with_clients(endpoints.load(), lambda c: dlq_replay(c, a.topic, a.ids, _say))
        )
    )


def _say(msg: str) -> None:
    print(msg, flush=True)
