"""`storefront check [--repair]`: find divergence between each system of record and the copies
others keep of it, and have the owners repair it.

The CLI only orchestrates. Each service answers for its own data through its admin service
(svckit.admin `ListSummaries`: a summary per document, in id order), and each consuming
service declares in its own folder (`<package>/checks.py`, `COMPARISONS`) which copy it keeps
of which source and the rule comparing them (svckit.checks). The check merges the two
streams of each comparison, so its memory does not grow with the collections.
`--repair` never edits a copy: it asks the owner, through its admin service as the
operator, to queue its current state in its outbox again; the owner's relay and the
consumers do the rest, with the usual idempotency rules.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from google.protobuf import json_format

import topology
from storefront.admin.v1 import admin_pb2, admin_pb2_grpc
from storefront_cli import endpoints
from storefront_cli.clients import Clients, with_clients
from storefront_cli.tables import Log, json_flag, json_line, render, say, stderr
from svckit.admin import MAX_IDS
from svckit.checks import Comparison, Divergence, Side, Summary, merge

__all__ = ["Divergence", "check", "comparisons", "divergences"]

Admins = Mapping[str, admin_pb2_grpc.AdminServiceStub]
PAGE = 500
"""Summaries per page (the admin service's most)."""


def comparisons(system: topology.System = topology.SYSTEM) -> tuple[Comparison, ...]:
    """Every comparison the consuming services declare (`<package>.checks.COMPARISONS`); a
    service without a checks module keeps no copy to compare."""
    found: list[Comparison] = []
    for service in system:
        try:
            module = importlib.import_module(f"{service.package}.checks")
        except ModuleNotFoundError as exc:
            if exc.name != f"{service.package}.checks":
                raise
            continue
        found.extend(module.COMPARISONS)
    return tuple(found)


async def summaries(admins: Admins, side: Side) -> AsyncIterator[Summary]:
    """The summaries `side`'s owner lists, a page at a time (one page held at once)."""
    request = admin_pb2.ListSummariesRequest(collection=side.collection, page_size=PAGE)
    while True:
        page = await admins[side.service].ListSummaries(request, timeout=60)
        for s in page.summaries:
            yield Summary(s.id, s.version, s.digest, json_format.MessageToDict(s.facts))
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


async def divergences(
    admins: Admins, compared: tuple[Comparison, ...] | None = None
) -> list[Divergence]:
    """What every comparison finds, in declaration order."""
    found: list[Divergence] = []
    for c in comparisons() if compared is None else compared:
        async for d in merge(summaries(admins, c.source), summaries(admins, c.copy), c.rule):
            found.append(d)
    return found


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
    """Report divergence (exit 1 if any) from what the services' admin services answer
    (`clients`, default: those `ep` names, as the operator); with `repair`, have the owners
    republish and wait up to `wait` seconds for it to converge. Each report is a table, or
    with `as_json` one JSON object per line; repair progress goes to `note`."""
    if clients is None:
        return await with_clients(
            ep,
            lambda c: check(
                ep, repair=repair, wait=wait, log=log, clients=c, as_json=as_json, note=note
            ),
        )
    note = note or log
    found = await divergences(clients.admin)
    _report(found, log, as_json=as_json)
    if not found or not repair:
        return 1 if found else 0
    queued = await republish(clients, found, note)
    note(
        f"[repair] {len(found)} divergences: their owners queued {queued} aggregates "
        "for republishing; waiting ..."
    )
    deadline = time.monotonic() + wait
    while found and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        found = await divergences(clients.admin)
    _report(found, log, after_repair=True, as_json=as_json)
    return 1 if found else 0


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
    def cmd_check(a: argparse.Namespace) -> int:
        ep = endpoints.load(Path(a.run_dir))
        return asyncio.run(
            check(
                ep,
                repair=a.repair,
                wait=a.wait,
                log=say,
                as_json=a.json,
                note=stderr if a.json else say,
            )
        )

    p = sub.add_parser("check", help="compare each system of record with its copies")
    p.add_argument("--repair", action="store_true", help="make owners republish current state")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for repairs to land")
    p.add_argument(
        "--run-dir",
        default=str(endpoints.RUN_DIR),
        help="where stack.env and the started replicas' ports are",
    )
    json_flag(p, "one JSON object per report (and one more after a repair)")
    p.set_defaults(func=cmd_check)
