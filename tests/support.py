"""Helpers shared by integration, end-to-end and fault tests (no fixtures here)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stack.embedded import EmbeddedStack
from storefront_cli import system
from storefront_cli.clients import eventually  # noqa: F401 - re-exported for tests
from svckit.app import ServiceApp
from svckit.envelope import Envelope, decode
from svckit.settings import Settings


def settings_for(
    stack: EmbeddedStack, service: str, database: str, **overrides: object
) -> Settings:
    """Settings for an in-process service on the test stack: own database and group, port 0."""
    base = Settings.from_env(service, grpc_port=0, metrics_port=0)
    return dataclasses.replace(
        base,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        mongodb_uri=stack.mongodb_uri,
        mongodb_database=database,
        kafka_bootstrap_servers=stack.kafka_bootstrap,
        consumer_group=f"{database}-{service}",
        shutdown_grace_seconds=1.0,
        **overrides,
    )


@asynccontextmanager
async def running(
    build: Callable[[Settings], ServiceApp], settings: Settings
) -> AsyncIterator[ServiceApp]:
    app = build(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def read_topic(
    bootstrap: str, topic: str, accepted_types: list[str], *, key: str | None = None
) -> list[Envelope]:
    """Every event on `topic` from offset 0 to the current end (optionally one key's)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        client_id=f"test-reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partition_ids(bootstrap, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[Envelope] = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.offset >= ends[tp]:
                        break
                    if key is not None and record.key != key.encode():
                        continue
                    out.append(
                        decode(
                            record.value,
                            record.headers,
                            key=record.key,
                            accepted_types=accepted_types,
                        )
                    )
        return out
    finally:
        await consumer.stop()


async def read_raw(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` from offset 0 to the current end, undecoded."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = [TopicPartition(topic, p) for p in await partition_ids(bootstrap, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out += [r for r in batch.get(tp, []) if r.offset < ends[tp]]
        return out
    finally:
        await consumer.stop()


async def partition_ids(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class System:
    stack: EmbeddedStack
    ports: system.SystemPorts
    db_prefix: str

    def target(self, service: str) -> str:
        return system.grpc_target(self.ports, service)

    @property
    def envoy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.envoy}"

    def database(self, service: str) -> str:
        return f"{self.db_prefix}{service}"
