"""`storefront watch`: the event topics tailed, decoded, one line per event, so a flow can be
followed across services as it happens (`tail` and `event_row` are the same as data, for the
console).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from google.protobuf import json_format, text_format

import topology
from storefront_cli import endpoints
from storefront_cli.tables import Log, json_flag, json_line
from storefront_cli.where import quiet_clients
from svckit import names
from svckit.envelope import PoisonEvent, decode, format_time, header_map
from svckit.kafka import KafkaConnection


def event_types(system: topology.System = topology.SYSTEM) -> frozenset[str]:
    """Every event message the topology says the services publish, their generated modules
    imported (`<proto package>.events_pb2`, where each service's events.proto is generated)
    so the envelope codec can decode them."""
    names = frozenset(e for s in system for t in s.publishes for e in t.events)
    for package in {n.rpartition(".")[0] for n in names}:
        importlib.import_module(f"{package}.events_pb2")
    return names


EVENT_TYPES = event_types()
"""Every event message the services publish; `watch` decodes any of them."""


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


def event_data(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    """The row `event_line` prints, as data: the event as proto JSON under "message" (null
    when undecodable)."""
    row = event_row(record)
    message = None if row.message is None else json_format.MessageToDict(row.message)
    return {**dataclasses.asdict(dataclasses.replace(row, message=None)), "message": message}


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
    as_json: bool = False,
) -> int:
    """Print events as they arrive (a line each, or with `as_json` a JSON object each) until
    `limit` events, `timeout` seconds, or Ctrl-C."""
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
            log(json_line(event_data(record)) if as_json else event_line(record, width))
            shown += 1
            if limit and shown >= limit:
                return 0
    except LookupError as exc:
        say(str(exc))
        return 1
    finally:
        await records.aclose()
    return 0 if not limit else 1  # a limit not reached in time is a failure for scripts


def _cmd_watch(args: argparse.Namespace) -> int:
    quiet_clients()
    ep = endpoints.load(Path(args.run_dir))
    topics = args.topic or list(topology.SYSTEM.all_topics)
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
                as_json=args.json,
            )
        )
    except KeyboardInterrupt:
        return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `watch` to the `storefront` command."""
    p = sub.add_parser("watch", help="tail the event topics, decoded, one line per event")
    p.add_argument("--run-dir", default=str(endpoints.RUN_DIR), help="where stack.env is")
    p.add_argument("--kafka", help="bootstrap servers (default: stack.env, then 127.0.0.1:9092)")
    p.add_argument("--topic", action="append", help="only this topic (repeatable)")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    p.add_argument("--key", help="only events with this key (a customer or order id)")
    p.add_argument("--limit", type=int, default=0, help="stop after N events (0: never)")
    p.add_argument("--timeout", type=float, default=0.0, help="stop after S seconds (0: never)")
    p.add_argument("--width", type=int, default=160, help="cut summaries to N chars (0: never)")
    json_flag(p, "one JSON object per event, a line each")
    p.set_defaults(func=_cmd_watch)
