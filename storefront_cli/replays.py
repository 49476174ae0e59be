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

from storefront.admin.v1 import admin_pb2
from storefront_cli import endpoints
from storefront_cli.clients import Clients, with_clients
from storefront_cli.tables import Log, json_flag, json_line, render, say
from svckit import dlq, names

REPLAY_DEADLINE = 3600.0




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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `replay` and `dlq` to the `storefront` command."""
    p = sub.add_parser("replay", help="have a service re-apply a topic to its read model")
    p.add_argument("service", choices=sorted(set(names.CONSUMER_OF.values())))
    p.add_argument("topic", choices=list(names.CONSUMER_OF))
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
    p.add_argument("--topic", choices=list(names.TOPICS))
    json_flag(p)
    p.set_defaults(
        func=lambda a: asyncio.run(dlq_list(endpoints.load(), a.topic, say, as_json=a.json))
    )
    p = dsub.add_parser("replay", help="have the consuming service apply parked events")
    p.add_argument("--topic", choices=list(names.CONSUMER_OF))
    p.add_argument("ids", nargs="*", help="ids from `dlq list` (topic:partition:offset)")
    p.set_defaults(
        func=lambda a: asyncio.run(
            with_clients(endpoints.load(), lambda c: dlq_replay(c, a.topic, a.ids, say))
        )
    )


