"""`storefront check [--repair]`: find divergence between each system of record and the copies
others keep of it, and have the owners repair it.

accounts' customers vs orders' copies, catalog's products vs orders' copy of the catalog, and
fulfillment's shipping history vs the orders' status histories (plus: every approved order has
a fulfillment, and a cancellation reached fulfillment). The check only reads the databases.
`--repair` never edits a copy: it asks the owner, through its internal admin service
(svckit.admin) as staff, to queue its current state in its outbox again; the owner's relay and
the consumers do the rest, with the usual idempotency rules.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

import topology
from accounts_svc.repository import CustomerRepository
from catalog_svc.repository import ProductRepository
from fulfillment_svc import domain as fulfillment_domain
from fulfillment_svc.repository import FulfillmentRepository
from orders_svc import domain as orders_domain
from orders_svc.repository import APPLIED, CustomerCopies, OrderRepository, ProductCopies
from storefront.admin.v1 import admin_pb2
from storefront.common.v1 import common_pb2
from storefront_cli import endpoints
from storefront_cli.clients import Clients, with_clients
from storefront_cli.tables import Log, json_flag, json_line, render, say, stderr
from svckit import mongo
from svckit.admin import MAX_IDS
from svckit.outbox import OUTBOX

Document = dict[str, Any]
Status = common_pb2.OrderStatus


@dataclass
class Divergence:
    kind: str
    subject: str
    detail: str
    owner: str | None = None
    """The service that republishes `subject` to repair it; None: not repairable."""


class Storefront:
    """The services' databases, read through each service's own repositories."""

    def __init__(self, ep: endpoints.Endpoints) -> None:
        self.ep = ep
        self.client: AsyncMongoClient[Document] = mongo.connect(ep.mongodb)
        self.dbs: dict[str, AsyncDatabase[Document]] = {
            s: self.client[ep.database(s)] for s in topology.SYSTEM.names
        }
        self.customers = CustomerRepository(self.dbs["accounts"])
        self.orders = OrderRepository(self.dbs["orders"])
        self.copies = CustomerCopies(self.dbs["orders"])
        self.fulfillments = FulfillmentRepository(self.dbs["fulfillment"])
        self.products = ProductRepository(self.dbs[topology.CATALOG])
        self.product_copies = ProductCopies(self.dbs[topology.ORDERS])

    async def close(self) -> None:
        await self.client.close()


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


async def product_divergences(sf: Storefront) -> list[Divergence]:
    """Catalog's products vs the copy orders prices from: a missing or older copy, or one
    that differs at the same version, is repaired by the catalog republishing the product."""
    found: list[Divergence] = []
    held = sf.product_copies
    copies = {d["_id"]: held.load(d) async for d in held.collection.find()}
    async for doc in sf.products.collection.find({}, {OUTBOX: 0}):
        product = sf.products.load(doc)
        pid, version = product.id, product.version
        copy = copies.pop(pid, None)
        if copy is None:
            found.append(Divergence("missing product copy", pid, f"catalog v{version}", "catalog"))
        elif copy.version < version:
            detail = f"copy v{copy.version} < v{version}"
            found.append(Divergence("stale product copy", pid, detail, "catalog"))
        elif (copy.title, copy.description, copy.price, copy.state) != (
            product.title,
            product.description,
            product.price,
            product.state,
        ):
            found.append(Divergence("product copy differs", pid, f"both v{version}", "catalog"))
    for pid in copies:
        found.append(Divergence("copy of unknown product", pid, "catalog has no such product"))
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
    return [
        *await customer_divergences(sf),
        *await product_divergences(sf),
        *await order_divergences(sf),
    ]


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
    as_json: bool = False,
    note: Log | None = None,
) -> int:
    """Report divergence (exit 1 if any); with `repair`, have the owners republish (through
    `clients`' admin stubs) and wait up to `wait` seconds for it to converge. Each report is a
    table, or with `as_json` one JSON object per line; repair progress goes to `note`."""
    note = note or log
    sf = Storefront(ep)
    try:
        found = await divergences(sf)
        _report(found, log, as_json=as_json)
        if not found or not repair:
            return 1 if found else 0
        if clients is None:
            raise ValueError("repairing needs clients of the services' admin service")
        queued = await republish(clients, found, note)
        note(
            f"[repair] {len(found)} divergences: their owners queued {queued} aggregates "
            "for republishing; waiting ..."
        )
        deadline = time.monotonic() + wait
        while found and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            found = await divergences(sf)
        _report(found, log, after_repair=True, as_json=as_json)
        return 1 if found else 0
    finally:
        await sf.close()


def _report(
    found: list[Divergence], log: Log, *, after_repair: bool = False, as_json: bool = False
) -> None:
    if as_json:
        log(json_line({"after_repair": after_repair, "divergences": found}))
        return
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db-prefix", default=None, help="database name prefix (tests)")
        p.add_argument(
            "--run-dir",
            default=str(endpoints.RUN_DIR),
            help="where stack.env and the started replicas' ports are",
        )

    def cmd_check(a: argparse.Namespace) -> int:
        ep = endpoints.load(Path(a.run_dir), db_prefix=a.db_prefix)
        return asyncio.run(
            with_clients(
                ep,
                lambda c: check(
                    ep,
                    repair=a.repair,
                    wait=a.wait,
                    log=say,
                    clients=c,
                    as_json=a.json,
                    note=stderr if a.json else say,
                ),
            )
        )

    p = sub.add_parser("check", help="compare each system of record with its copies")
    p.add_argument("--repair", action="store_true", help="make owners republish current state")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for repairs to land")
    json_flag(p, "one JSON object per report (and one more after a repair)")
    common(p)
    p.set_defaults(func=cmd_check)
