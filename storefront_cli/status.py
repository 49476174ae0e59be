"""`storefront status`: is every part up, is anything falling behind, is anything stuck? In
one screen: health of every part, consumer lag, outbox backlog per service (events committed
but not yet published) and the dead-letter queues. Exit 0 only when every required part is
up, so scripts can wait on it. `snapshot` is the same as data (the console serves it).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import topology
from storefront_cli import endpoints
from storefront_cli.health import Health, health, short_error
from storefront_cli.offsets import DeadLetters, KafkaOffsets, Lag, consumer_lag, dead_letters
from storefront_cli.tables import Log, json_flag, json_line, render
from storefront_cli.where import Where, quiet_clients, where_flags, where_of
from svckit import mongo, names
from svckit.outbox import scan_backlog


@dataclass(frozen=True)
class Backlog:
    service: str
    collection: str
    documents: int
    events: int
    oldest_age_s: float | None
    parked: int = 0
    """Entries the broker refused for good, set aside (svckit.outbox.PARKED) for a person."""


async def outbox_backlog(
    ep: endpoints.Endpoints,
    timeout: float,
    now: datetime | None = None,
    system: topology.System = topology.SYSTEM,
) -> list[Backlog]:
    """Entries still inside the aggregates: committed, not yet acknowledged by Kafka."""
    client = mongo.connect(ep.mongodb, timeout_ms=int(timeout * 1000))
    now = now or datetime.now(UTC)
    rows = []
    try:
        for s in system.publishers:
            found = await scan_backlog(client[ep.database(s.database)][s.aggregate])
            rows.append(
                Backlog(
                    s.name,
                    s.aggregate,
                    found.documents,
                    found.events,
                    found.age_seconds(now),
                    found.parked,
                )
            )
    finally:
        await client.close()
    return rows


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str) -> str:
    return "\n".join(line.rstrip() for line in render(headers, rows, title).splitlines())


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


@dataclass(frozen=True)
class Snapshot:
    """What `status` shows, as data (the console serves the same)."""

    health: list[Health]
    lags: list[Lag] | None
    dead_letters: list[DeadLetters] | None
    backlog: list[Backlog] | None
    unavailable: dict[str, str]
    """Section ("offsets", "outbox") -> why it could not be read."""

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.health if h.required)

    def data(self) -> dict[str, object]:
        """What `status --json` prints and the console serves: the tables' rows and `ok`."""
        return {**asdict(self), "ok": self.ok}


def consumer_groups(where: Where) -> dict[str, tuple[str, ...]]:
    """Each consumer's group and the topics it reads: the lag table's rows."""
    return {where.group(s.name): s.consumes for s in where.system.consumers}


async def snapshot(where: Where, *, timeout: float = 3.0) -> Snapshot:
    """Health, consumer lag, dead-letter queues and outbox backlog; a section whose
    dependency is down is None, with the reason in `unavailable`."""
    parts = await health(where, timeout)
    lags = dlqs = backlog = None
    unavailable: dict[str, str] = {}
    groups = consumer_groups(where)
    replay_groups = {
        d.name: names.dlq_replay_group(where.group(d.consumer)) for d in where.system.dead_letters
    }
    if parts[0].ok:
        try:
            async with KafkaOffsets(where.ep.kafka, timeout) as kafka:
                lags = await consumer_lag(kafka, groups)
                dlqs = await dead_letters(kafka, replay_groups)
        except Exception as exc:  # noqa: BLE001 - report, keep going with MongoDB
            unavailable["offsets"] = short_error(exc)
    else:
        unavailable["offsets"] = "kafka is down"
    if parts[1].ok:
        try:
            backlog = await outbox_backlog(where.ep, timeout, system=where.system)
        except Exception as exc:  # noqa: BLE001
            unavailable["outbox"] = short_error(exc)
    else:
        unavailable["outbox"] = "mongodb is down"
    return Snapshot(parts, lags, dlqs, backlog, unavailable)


async def status(
    where: Where, *, timeout: float = 3.0, log: Log = print, as_json: bool = False
) -> int:
    """Print the four tables (or their data as one JSON object); 0 if every required part is
    up, else 1."""
    snap = await snapshot(where, timeout=timeout)
    if as_json:
        log(json_line(snap.data()))
    else:
        show(snap, log)
    return 0 if snap.ok else 1


def show(snap: Snapshot, log: Log) -> None:
    """The snapshot as the four tables."""
    log(
        _table(
            ("part", "endpoint", "state", "detail"),
            [(h.part, h.endpoint, h.state, h.detail) for h in snap.health],
            title="Health",
        )
    )
    if snap.lags is not None and snap.dead_letters is not None:
        lags, dlqs = snap.lags, snap.dead_letters
        total = sum(row.lag for row in lags)
        log("")
        log(
            _table(
                ("group", "topic", "partition", "committed", "end", "lag"),
                [
                    (
                        r.group,
                        r.topic,
                        r.partition,
                        "-" if r.committed is None else r.committed,
                        r.end,
                        r.lag,
                    )
                    for r in lags
                ],
                title=f"Consumer lag (total {total})",
            )
        )
        log("")
        log(
            _table(
                ("topic", "records", "not replayed"),
                [(d.topic, d.records, d.not_replayed) for d in dlqs],
                title=f"Dead-letter queues (total {sum(d.records for d in dlqs)})",
            )
        )
    else:
        log(f"\nConsumer lag / dead-letter queues: unavailable ({snap.unavailable['offsets']})")
    if snap.backlog is not None:
        backlog = snap.backlog
        log("")
        log(
            _table(
                ("service", "collection", "documents", "events", "oldest", "set aside"),
                [
                    (
                        b.service,
                        b.collection,
                        b.documents,
                        b.events,
                        _age(b.oldest_age_s),
                        b.parked,
                    )
                    for b in backlog
                ],
                title=f"Outbox backlog (total {sum(b.events for b in backlog)} events)",
            )
        )
    else:
        log(f"\nOutbox backlog: unavailable ({snap.unavailable['outbox']})")


def _cmd_status(args: argparse.Namespace) -> int:
    quiet_clients()
    return asyncio.run(status(where_of(args), timeout=args.timeout, as_json=args.json))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `status` to the `storefront` command."""
    p = sub.add_parser("status", help="health, consumer lag, outbox backlog and DLQs")
    where_flags(p)
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    json_flag(p)
    p.set_defaults(func=_cmd_status)
