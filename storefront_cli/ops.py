"""`storefront status | watch`: what an operator looks at first.

`status` answers "is every part up, is anything falling behind, is anything
stuck?" in one screen: health of Kafka, MongoDB, each service (grpc.health.v1)
and Envoy; consumer lag per group and partition (committed vs end offsets);
outbox backlog per service (events committed but not yet published); and the
dead-letter queues. Its exit code is 0 only when every required part is up, so
scripts can wait on it.

`watch` tails the event topics, decoded, one line per event, so a flow can be
followed across services as it happens.

Both find the system through `.run/stack.env` (storefront_cli.endpoints) and
the default SystemPorts; flags point them anywhere else (the e2e tests use
free ports and a database prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from aiokafka import ConsumerRecord, TopicPartition
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from storefront.accounts.v1 import events_pb2 as accounts_events
from storefront.fulfillment.v1 import events_pb2 as fulfillment_events
from storefront.orders.v1 import events_pb2 as orders_events
from storefront_cli import endpoints, system
from storefront_cli.tables import render
from svckit import logs, mongo, names
from svckit.app import EVENTS_HEALTH
from svckit.envelope import PoisonEvent, decode, format_time, header_map
from svckit.kafka import KafkaConnection
from svckit.outbox import scan_backlog

Log = Callable[[str], None]
Document = dict[str, Any]

EVENT_TYPES = frozenset(
    message.full_name
    for module in (accounts_events, orders_events, fulfillment_events)
    for message in module.DESCRIPTOR.message_types_by_name.values()
)
"""Every event message the services publish; `watch` decodes any of them."""


@dataclass(frozen=True)
class Where:
    """Where the running system listens."""

    ep: endpoints.Endpoints
    ports: system.SystemPorts
    host: str = "127.0.0.1"
    prometheus_port: int = 9090

    def group(self, service: str) -> str:
        return names.consumer_group(service, self.ep.db_prefix)  # as system starts them


# --- health ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    part: str
    endpoint: str
    ok: bool
    detail: str
    required: bool = True

    @property
    def state(self) -> str:
        if self.ok:
            return "UP"
        return "DOWN" if self.required else "down (optional)"


def _error(exc: BaseException | str) -> str:
    """The first line, cut: the table stays readable and the cause is still named."""
    text = logs.redacted(str(exc)) or type(exc).__name__
    return text.splitlines()[0].split(" (configured timeouts")[0][:80]


async def kafka_health(kafka: KafkaConnection, timeout: float) -> Health:
    admin = kafka.admin(request_timeout_ms=int(timeout * 1000))
    bootstrap = kafka.bootstrap_servers
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        brokers = len(cluster["brokers"])
        return Health("kafka", bootstrap, True, f"{brokers} broker{'s' * (brokers != 1)}")
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Health("kafka", bootstrap, False, _error(exc))
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def mongodb_health(uri: str, timeout: float) -> Health:
    client = mongo.connect(uri, timeout_ms=int(timeout * 1000))
    try:
        info = await client.admin.command("buildInfo")
        detail = f"version {info.get('version', '?')}"
        if "ferretdb" in info:
            detail += " (FerretDB)"
        return Health("mongodb", logs.redacted(uri), True, detail)
    except Exception as exc:  # noqa: BLE001
        return Health("mongodb", logs.redacted(uri), False, _error(exc))
    finally:
        await client.close()


async def service_health(service: str, target: str, timeout: float) -> Health:
    """grpc.health.v1: "" SERVING means RPCs are served (MongoDB reachable); ``events`` says
    whether the Kafka side flows (broker reachable, no consumer waiting out an outage)."""
    part = f"{service}_svc"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            rpc, events = await asyncio.gather(
                stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout),
                stub.Check(health_pb2.HealthCheckRequest(service=EVENTS_HEALTH), timeout=timeout),
            )
        name = health_pb2.HealthCheckResponse.ServingStatus.Name
        detail = f"{name(rpc.status)}, events {name(events.status)}"
        return Health(part, target, rpc.status == health_pb2.HealthCheckResponse.SERVING, detail)
    except grpc.aio.AioRpcError as exc:
        return Health(part, target, False, _error(f"{exc.code().name}: {exc.details() or ''}"))


def _http_get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read(200).decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(200).decode(errors="replace").strip()


async def http_health(part: str, url: str, timeout: float, *, required: bool = True) -> Health:
    """Envoy's admin /ready answers 200 LIVE; Prometheus' /-/ready 200 once its TSDB is up."""
    try:
        status, body = await asyncio.to_thread(_http_get, url, timeout)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Health(part, url, False, _error(reason), required)
    return Health(part, url, status == 200, f"HTTP {status} {body[:60]}".strip(), required)


async def health(where: Where, timeout: float) -> list[Health]:
    """Every part, checked concurrently so a dead one costs one timeout, not one each."""
    checks = [
        kafka_health(where.ep.kafka, timeout),
        mongodb_health(where.ep.mongodb, timeout),
        *(
            service_health(s, f"{where.host}:{where.ports.grpc(s)}", timeout)
            for s in names.SERVICES
        ),
        http_health("envoy", f"http://{where.host}:{where.ports.envoy_admin}/ready", timeout),
        http_health(
            "prometheus",
            f"http://{where.host}:{where.prometheus_port}/-/ready",
            timeout,
            required=False,
        ),
    ]
    return list(await asyncio.gather(*checks))


# --- Kafka offsets -----------------------------------------------------------------------


@dataclass(frozen=True)
class Lag:
    group: str
    topic: str
    partition: int
    committed: int | None
    """None: the group never committed here, so it (re)starts from the earliest offset."""
    end: int
    lag: int


@dataclass(frozen=True)
class DeadLetters:
    topic: str
    records: int
    not_replayed: int


class KafkaOffsets:
    """Partitions, log start/end offsets and group commits, read without joining any group."""

    def __init__(self, kafka: KafkaConnection, timeout: float) -> None:
        ms = int(timeout * 1000)
        self._admin = kafka.admin(request_timeout_ms=ms)
        self._consumer = kafka.consumer(
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=ms,
            client_id=f"storefront-status-{uuid.uuid4().hex[:6]}",
        )

    async def __aenter__(self) -> KafkaOffsets:
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        described = await self._admin.describe_topics(list(topics))
        return sorted(
            TopicPartition(d["topic"], p["partition"])
            for d in described
            if not d["error_code"]
            for p in d["partitions"]
        )

    async def bounds(
        self, partitions: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(log start, log end) offset of each partition."""
        if not partitions:
            return {}, {}
        starts = await self._consumer.beginning_offsets(partitions)
        ends = await self._consumer.end_offsets(partitions)
        return starts, ends

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        offsets = await self._admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def consumer_lag(kafka: KafkaOffsets, groups: Mapping[str, Sequence[str]]) -> list[Lag]:
    """Lag = end offset - committed offset, per group and partition of its topics."""
    rows: list[Lag] = []
    for group, topics in groups.items():
        partitions = await kafka.partitions(topics)
        starts, ends = await kafka.bounds(partitions)
        committed = await kafka.committed(group)
        for tp in partitions:
            done = committed.get(tp)
            position = done if done is not None else starts[tp]
            rows.append(
                Lag(group, tp.topic, tp.partition, done, ends[tp], max(0, ends[tp] - position))
            )
    return rows


async def dead_letters(kafka: KafkaOffsets, replay_groups: Mapping[str, str]) -> list[DeadLetters]:
    """Records retained in each DLQ (topic -> the group recording its replays), and how many
    `storefront dlq replay` has not applied yet."""
    topics = list(replay_groups)
    partitions = await kafka.partitions(topics)
    starts, ends = await kafka.bounds(partitions)
    replayed: dict[TopicPartition, int] = {}
    for group in set(replay_groups.values()):
        replayed.update(await kafka.committed(group))
    rows = []
    for topic in topics:
        mine = [tp for tp in partitions if tp.topic == topic]
        records = sum(ends[tp] - starts[tp] for tp in mine)
        waiting = sum(ends[tp] - max(starts[tp], replayed.get(tp, 0)) for tp in mine)
        rows.append(DeadLetters(topic, records, waiting))
    return rows


# --- outbox ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    service: str
    collection: str
    documents: int
    events: int
    oldest_age_s: float | None


async def outbox_backlog(
    ep: endpoints.Endpoints, timeout: float, now: datetime | None = None
) -> list[Backlog]:
    """Entries still inside the aggregates: committed, not yet acknowledged by Kafka."""
    client = mongo.connect(ep.mongodb, timeout_ms=int(timeout * 1000))
    now = now or datetime.now(UTC)
    rows = []
    try:
        for service, name in names.AGGREGATES.items():
            found = await scan_backlog(client[ep.database(service)][name])
            rows.append(
                Backlog(service, name, found.documents, found.events, found.age_seconds(now))
            )
    finally:
        await client.close()
    return rows


# --- status ------------------------------------------------------------------------------


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


async def snapshot(where: Where, *, timeout: float = 3.0) -> Snapshot:
    """Health, consumer lag, dead-letter queues and outbox backlog; a section whose
    dependency is down is None, with the reason in `unavailable`."""
    parts = await health(where, timeout)
    lags = dlqs = backlog = None
    unavailable: dict[str, str] = {}
    groups = {where.group(s): topics for s, topics in names.CONSUMES.items()}
    replay_groups = {
        names.dlq_topic(t): names.dlq_replay_group(where.group(s))
        for t, s in names.CONSUMER_OF.items()
    }
    if parts[0].ok:
        try:
            async with KafkaOffsets(where.ep.kafka, timeout) as kafka:
                lags = await consumer_lag(kafka, groups)
                dlqs = await dead_letters(kafka, replay_groups)
        except Exception as exc:  # noqa: BLE001 - report, keep going with MongoDB
            unavailable["offsets"] = _error(exc)
    else:
        unavailable["offsets"] = "kafka is down"
    if parts[1].ok:
        try:
            backlog = await outbox_backlog(where.ep, timeout)
        except Exception as exc:  # noqa: BLE001
            unavailable["outbox"] = _error(exc)
    else:
        unavailable["outbox"] = "mongodb is down"
    return Snapshot(parts, lags, dlqs, backlog, unavailable)


async def status(where: Where, *, timeout: float = 3.0, log: Log = print) -> int:
    """Print the four tables; 0 if every required part is up, else 1."""
    snap = await snapshot(where, timeout=timeout)
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
                ("service", "collection", "documents", "events", "oldest"),
                [
                    (b.service, b.collection, b.documents, b.events, _age(b.oldest_age_s))
                    for b in backlog
                ],
                title=f"Outbox backlog (total {sum(b.events for b in backlog)} events)",
            )
        )
    else:
        log(f"\nOutbox backlog: unavailable ({snap.unavailable['outbox']})")
    return 0 if snap.ok else 1


# --- watch -------------------------------------------------------------------------------


def summarize(message: Any, width: int) -> str:
    """The message as one line of protobuf text format, cut to `width` (0: whole)."""
    text = text_format.MessageToString(message, as_one_line=True)
    return text if width <= 0 or len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class EventRow:
    """One record of a topic or DLQ, decoded: what `watch` prints and the console lists."""

    time: str
    topic: str
    partition: int
    offset: int
    type: str
    """The event's short type name ("CustomerChanged"), "?" when it cannot be decoded."""
    key: str
    message: Any | None
    """The decoded event (personal data: names, contacts), None when undecodable."""
    error: str = ""
    """Why it could not be decoded, or a DLQ record's dlq_error."""


def event_row(record: ConsumerRecord[bytes, bytes]) -> EventRow:
    key = (record.key or b"").decode(errors="replace")
    at = (record.topic, record.partition, record.offset)
    try:
        envelope = decode(record.value, record.headers, key=record.key, accepted_types=EVENT_TYPES)
    except PoisonEvent as exc:
        when = format_time(datetime.fromtimestamp(record.timestamp / 1000, UTC))
        return EventRow(when, *at, "?", key, None, f"undecodable: {exc}")
    error = ""
    if record.topic.endswith(names.DLQ_SUFFIX):
        try:
            error = header_map(record.headers).get("dlq_error", "")
        except PoisonEvent:
            error = "?"
    short = envelope.type.rsplit(".", 1)[-1]
    return EventRow(format_time(envelope.time), *at, short, envelope.key, envelope.message, error)


def event_line(record: ConsumerRecord[bytes, bytes], width: int = 160) -> str:
    """time  topic  partition@offset  type  key  summary (DLQ records add their error)."""
    row = event_row(record)
    where = f"{row.topic}  {row.partition}@{row.offset}"
    if row.message is None:
        return f"{row.time}  {where}  ?  {row.key}  {row.error}"
    line = f"{row.time}  {where}  {row.type}  {row.key}  {summarize(row.message, width)}"
    if row.topic.endswith(names.DLQ_SUFFIX):
        line += f"  dlq_error={row.error[:100]!r}"
    return line


async def tail(
    kafka: KafkaConnection,
    topics: Sequence[str],
    *,
    from_beginning: bool = False,
    note: Log,
) -> AsyncGenerator[ConsumerRecord[bytes, bytes] | None, None]:
    """Records of `topics` as they arrive, oldest first per poll, until the caller stops;
    None after a poll that brought nothing.

    "From the end" means the end offsets at start-up, pinned explicitly, so an event
    produced right after "watching" is noted is never skipped. Raises LookupError when
    none of the topics exist.
    """
    consumer = kafka.consumer(
        group_id=None,
        enable_auto_commit=False,
        client_id=f"storefront-watch-{uuid.uuid4().hex[:6]}",
    )
    admin = kafka.admin()
    await consumer.start()
    try:
        await admin.start()
        try:
            described = await admin.describe_topics(list(topics))
        finally:
            await admin.close()
        partitions = [
            TopicPartition(d["topic"], p["partition"])
            for d in described
            if not d["error_code"]
            for p in d["partitions"]
        ]
        if not partitions:
            raise LookupError(f"none of these topics exist: {', '.join(topics)}")
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            for tp, end in (await consumer.end_offsets(partitions)).items():
                consumer.seek(tp, end)
        start = "the beginning" if from_beginning else "the end"
        note(f"watching {len(partitions)} partitions of {len(topics)} topics from {start}")
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for record in sorted(
                (r for batch in batches.values() for r in batch), key=lambda r: r.timestamp
            ):
                yield record
            if not batches:
                yield None  # a quiet poll: the caller may check its clock
    finally:
        await consumer.stop()


async def watch(
    kafka: KafkaConnection,
    topics: Sequence[str],
    *,
    from_beginning: bool = False,
    limit: int = 0,
    timeout: float = 0.0,
    key: str | None = None,
    width: int = 160,
    log: Log = print,
    note: Log | None = None,
) -> int:
    """Print events as they arrive until `limit` lines, `timeout` seconds, or Ctrl-C."""
    say = note or (lambda msg: print(msg, file=sys.stderr, flush=True))
    shown = 0
    deadline: float | None = None

    def started(msg: str) -> None:
        nonlocal deadline  # the timeout counts from when watching begins
        deadline = time.monotonic() + timeout if timeout > 0 else None
        say(msg)

    records = tail(kafka, topics, from_beginning=from_beginning, note=started)
    try:
        async for record in records:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if record is None:
                continue
            if key is not None and (record.key or b"").decode(errors="replace") != key:
                continue
            log(event_line(record, width))
            shown += 1
            if limit and shown >= limit:
                return 0
    except LookupError as exc:
        say(str(exc))
        return 1
    finally:
        await records.aclose()
    return 0 if not limit else 1  # a limit not reached in time is a failure for scripts


# --- CLI ---------------------------------------------------------------------------------


def where_of(args: argparse.Namespace) -> Where:
    """The Where of `where_flags`' arguments."""
    ep = endpoints.load(Path(args.run_dir), db_prefix=args.db_prefix)
    ep = dataclasses.replace(
        ep, kafka=ep.kafka.with_bootstrap(args.kafka), mongodb=args.mongodb or ep.mongodb
    )
    overrides = {
        field: value
        for field in ("accounts", "orders", "fulfillment", "envoy_admin")
        if (value := getattr(args, f"{field}_port")) is not None
    }
    ports = dataclasses.replace(system.SystemPorts(), **overrides)
    return Where(ep, ports, args.host, args.prometheus_port)


def _location_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default=str(endpoints.RUN_DIR), help="where stack.env is")
    p.add_argument("--kafka", help="bootstrap servers (default: stack.env, then 127.0.0.1:9092)")
    p.add_argument("--mongodb", help="MongoDB URI (default: stack.env, then 127.0.0.1:27017)")
    p.add_argument("--db-prefix", default=None, help="database/group name prefix (tests)")


def _quiet_clients() -> None:
    """aiokafka logs every refused connection; the tables already say what is down."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _cmd_status(args: argparse.Namespace) -> int:
    _quiet_clients()
    return asyncio.run(status(where_of(args), timeout=args.timeout))


def _cmd_watch(args: argparse.Namespace) -> int:
    _quiet_clients()
    ep = endpoints.load(Path(args.run_dir))
    topics = args.topic or list(names.ALL_TOPICS)
    try:
        return asyncio.run(
            watch(
                ep.kafka.with_bootstrap(args.kafka),
                topics,
                from_beginning=args.from_beginning,
                limit=args.limit,
                timeout=args.timeout,
                key=args.key,
                width=args.width,
                log=lambda line: print(line, flush=True),
            )
        )
    except KeyboardInterrupt:
        return 0


def where_flags(p: argparse.ArgumentParser) -> None:
    """Where the system is, for `status` (and the console): `where_of` reads them."""
    _location_flags(p)
    defaults = system.SystemPorts()
    p.add_argument("--host", default="127.0.0.1", help="where the services and Envoy listen")
    for service in names.SERVICES:
        p.add_argument(
            f"--{service}-port",
            type=int,
            help=f"{service}_svc gRPC port (default {defaults.grpc(service)})",
        )
    p.add_argument("--envoy-admin-port", type=int, help=f"default {defaults.envoy_admin}")
    p.add_argument("--prometheus-port", type=int, default=9090)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `status` and `watch` to the `storefront` command."""
    p = sub.add_parser("status", help="health, consumer lag, outbox backlog and DLQs")
    where_flags(p)
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("watch", help="tail the event topics, decoded, one line per event")
    p.add_argument("--run-dir", default=str(endpoints.RUN_DIR), help="where stack.env is")
    p.add_argument("--kafka", help="bootstrap servers (default: stack.env, then 127.0.0.1:9092)")
    p.add_argument("--topic", action="append", help="only this topic (repeatable)")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    p.add_argument("--key", help="only events with this key (a customer or order id)")
    p.add_argument("--limit", type=int, default=0, help="stop after N events (0: never)")
    p.add_argument("--timeout", type=float, default=0.0, help="stop after S seconds (0: never)")
    p.add_argument("--width", type=int, default=160, help="cut summaries to N chars (0: never)")
    p.set_defaults(func=_cmd_watch)
