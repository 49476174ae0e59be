"""`storefront replay | dlq`: have the consuming service re-apply a topic to its read model,
or the events parked in its dead-letter queue, through its own handlers (the admin service,
svckit.admin); and list what is parked."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from aiokafka import TopicPartition

import topology
from storefront.admin.v1 import admin_pb2
from storefront_cli import endpoints
from storefront_cli.clients import Clients, with_clients
from storefront_cli.tables import Log, json_flag, json_line, render, say
from svckit import dlq, names

REPLAY_DEADLINE = 3600.0


def _read_models() -> list[tuple[str, str]]:
    """(consumer, topic): each read model a service builds from a topic."""
    return [(s.name, t) for s in topology.SYSTEM.consumers for t in s.consumes]


def _builds(service: str, topic: str, log: Log) -> bool:
    if (service, topic) not in _read_models():
        known = ", ".join(f"{s} {t}" for s, t in _read_models())
        log(f"unknown read model {service} {topic}; one of: {known}")
        return False
    return True


async def replay(clients: Clients, service: str, topic: str, *, rebuild: bool, log: Log) -> int:
    """Have `service` re-apply `topic` (exit 0: its read model came out identical)."""
    if not _builds(service, topic, log):
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


def _queues(topic: str | None) -> list[topology.DeadLetters]:
    """The DLQs of every consumer of `topic` (default: of every topic)."""
    return [d for d in topology.SYSTEM.dead_letters if topic in (None, d.topic)]


async def _replayed(
    ep: endpoints.Endpoints, records: list[dlq.Parked]
) -> Mapping[TopicPartition, int]:
    """Per DLQ partition, how far its consumer's "replay everything" got."""
    upto: dict[TopicPartition, int] = {}
    for queue in topology.SYSTEM.dead_letters:
        mine = [r.tp for r in records if r.dlq_topic == queue.name]
        if mine:
            group = names.dlq_replay_group(names.consumer_group(queue.consumer, ep.db_prefix))
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
    """Every parked record of the DLQs of `topic`'s consumers (default: every DLQ), oldest
    first per partition."""
    records = await dlq.parked(ep.kafka, [d.name for d in _queues(topic)])
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


async def dlq_list(
    ep: endpoints.Endpoints, topic: str | None, log: Log, *, as_json: bool = False
) -> int:
    parked = await dlq_rows(ep, topic)
    if as_json:
        log(json_line({"records": parked}))
        return 0
    rows = [
        (r.id, r.type, r.key, r.attempts, "yes" if r.replayed else "no", r.error[:70])
        for r in parked
    ]
    log(
        render(
            ("id", "type", "key", "attempts", "replayed", "error"),
            rows,
            title=f"{len(rows)} dead-lettered events",
        )
    )
    return 0


async def dlq_replay(
    clients: Clients, topic: str | None, ids: list[str], log: Log, *, queue: str | None = None
) -> int:
    """Have each consuming service apply its parked records in place: the given ids, or
    without ids everything it has not replayed before (of `topic`'s DLQs, or of the DLQ
    `queue`, default all).
    Exit 1 if any failed again, 2 on bad ids."""
    queues = {d.name: d for d in _queues(topic) if queue in (None, d.name)}
    if not queues:
        log(f"no such dead-letter queue: {queue or topic}")
        return 2
    wanted: dict[str, list[str]] = {}
    for record_id in ids:
        queue = record_id.split(":", 1)[0]
        if queue not in queues:
            log(f"no such DLQ record: {record_id}")
            return 2
        wanted.setdefault(queue, []).append(record_id)
    failed = total = 0
    for q in [queues[name] for name in wanted] or list(queues.values()):
        try:
            reply = await clients.admin[q.consumer].ReplayParked(
                admin_pb2.ReplayParkedRequest(topic=q.topic, ids=wanted.get(q.name, [])),
                timeout=REPLAY_DEADLINE,
            )
        except grpc.aio.AioRpcError as exc:
            log(f"[dlq] {q.consumer} cannot replay {q.name}: {exc.details()}")
            return 2 if exc.code() == grpc.StatusCode.NOT_FOUND else 1
        for r in reply.results:
            total += 1
            failed += r.outcome == dlq.FAILED
            log(f"[dlq] {r.id}: {r.outcome}{f' ({r.error})' if r.error else ''}")
    log(f"[dlq] {total - failed} replayed, {failed} failed")
    return 1 if failed else 0


async def dlq_migrate(clients: Clients, log: Log) -> int:
    """Have each consumer move what it parked under a topic's old DLQ name (`<topic>.dlq`)
    to its own DLQ of the topic; exit 1 if an old DLQ holds records no declared consumer
    claims (they stay where they are)."""
    unclaimed = 0
    for topic in topology.SYSTEM.topics:
        consumers = topology.SYSTEM.consumers_of(topic)
        replies = [
            await clients.admin[s.name].MigrateParked(
                admin_pb2.MigrateParkedRequest(topic=topic), timeout=REPLAY_DEADLINE
            )
            for s in consumers
        ]
        for s, r in zip(consumers, replies, strict=True):
            if r.moved or r.already:
                log(
                    f"[dlq] {s.name}: {r.moved} moved from {r.old_dlq} to {r.dlq}, "
                    f"{r.already} moved before"
                )
        if replies:
            theirs = sum(r.moved + r.already for r in replies)
            left = replies[0].others + replies[0].moved + replies[0].already - theirs
            if left:
                log(f"[dlq] {replies[0].old_dlq}: {left} records no declared consumer parked")
            unclaimed += left
    log(
        "[dlq] every record parked under an old name is in its consumer's DLQ"
        if not unclaimed
        else f"[dlq] {unclaimed} records left under old names"
    )
    return 1 if unclaimed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `replay` and `dlq` to the `storefront` command."""
    p = sub.add_parser("replay", help="have a service re-apply a topic to its read model")
    p.add_argument("service", choices=[s.name for s in topology.SYSTEM.consumers])
    p.add_argument("topic", choices=sorted({t for _, t in _read_models()}))
    p.add_argument("--rebuild", action="store_true", help="forget the derived state first")
    p.set_defaults(
        func=lambda a: asyncio.run(
            with_clients(
                endpoints.load(),
                lambda c: replay(c, a.service, a.topic, rebuild=a.rebuild, log=say),
            )
        )
    )

    dlq_cmd = sub.add_parser("dlq", help="list or replay dead-lettered events")
    dsub = dlq_cmd.add_subparsers(dest="dlq_command", required=True)
    p = dsub.add_parser("list")
    p.add_argument("--topic", choices=list(topology.SYSTEM.topics))
    json_flag(p)
    p.set_defaults(
        func=lambda a: asyncio.run(dlq_list(endpoints.load(), a.topic, say, as_json=a.json))
    )
    p = dsub.add_parser("replay", help="have the consuming service apply parked events")
    p.add_argument("--topic", choices=sorted({t for _, t in _read_models()}))
    p.add_argument("ids", nargs="*", help="ids from `dlq list` (topic:partition:offset)")
    p.set_defaults(
        func=lambda a: asyncio.run(
            with_clients(endpoints.load(), lambda c: dlq_replay(c, a.topic, a.ids, say))
        )
    )
    p = dsub.add_parser("migrate", help="move records parked under the old <topic>.dlq names")
    p.set_defaults(
        func=lambda a: asyncio.run(with_clients(endpoints.load(), lambda c: dlq_migrate(c, say)))
    )
