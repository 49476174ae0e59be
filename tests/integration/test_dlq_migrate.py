"""Moving records parked under a DLQ's old name (`<topic>.dlq`, one per topic) to the DLQ of
the consumer group that parked them (`<topic>.<group>.dlq`), against the real broker: once,
however often it runs or wherever a run stopped; through the consuming service's admin
service, with its own Kafka identity (`storefront dlq migrate`)."""

from __future__ import annotations

import pytest

import topology
from orders_svc.main import build
from stack.embedded import EmbeddedStack, ensure_topics
from storefront.admin.v1 import admin_pb2, admin_pb2_grpc
from storefront_cli.clients import channel
from svckit import dlq, names
from tests.support import running, settings_for, tokens_of, unique

pytestmark = pytest.mark.integration


async def park(stack: EmbeddedStack, queue: str, groups: list[str], *, tag: str = "v") -> None:
    producer = stack.kafka.producer(acks="all")
    await producer.start()
    try:
        for i, group in enumerate(groups):
            headers = [("dlq_error", b"boom"), ("dlq_group", group.encode())]
            await producer.send_and_wait(
                queue, f"{tag}{i}".encode(), key=f"k{i}".encode(), headers=headers
            )
    finally:
        await producer.stop()


async def values(stack: EmbeddedStack, queue: str) -> list[bytes | None]:
    return [r.value for r in await dlq.parked(stack.kafka, [queue])]


def alphas(group: str) -> bool:
    return group == "alpha-svc" or group.startswith("alpha-svc.")


async def test_a_consumers_records_move_once(stack: EmbeddedStack) -> None:
    topic = unique("migrate") + ".change"
    old, new = names.legacy_dlq_topic(topic), names.dlq_topic(topic, "alpha-svc")
    await ensure_topics(stack.kafka, [old, new], partitions=1)
    # Its own group, one of its per-run groups, and another consumer's.
    await park(stack, old, ["alpha-svc", "alpha-svc.run7", "beta-svc"])

    first = await dlq.move_parked(stack.kafka, old, new, alphas)
    assert first == dlq.Moved(moved=2, already=0, others=1)
    assert await values(stack, new) == [b"v0", b"v1"]
    [moved, _] = await dlq.parked(stack.kafka, [new])
    assert moved.key == b"k0" and moved.meta["dlq_error"] == "boom"
    assert moved.meta[dlq.MIGRATED_FROM] == f"{old}:0:0"

    again = await dlq.move_parked(stack.kafka, old, new, alphas)
    assert again == dlq.Moved(moved=0, already=2, others=1)
    assert await values(stack, new) == [b"v0", b"v1"]  # not copied twice
    assert await values(stack, old) == [b"v0", b"v1", b"v2"]  # beta's is still there


async def test_an_interrupted_move_is_finished(stack: EmbeddedStack) -> None:
    topic = unique("migrate") + ".change"
    old, new = names.legacy_dlq_topic(topic), names.dlq_topic(topic, "alpha-svc")
    await ensure_topics(stack.kafka, [old, new], partitions=1)
    await park(stack, old, ["alpha-svc", "alpha-svc"])
    producer = stack.kafka.producer(acks="all")  # a run that stopped after the first record
    await producer.start()
    try:
        mark = (dlq.MIGRATED_FROM, f"{old}:0:0".encode())
        await producer.send_and_wait(new, b"v0", key=b"k0", headers=[mark])
    finally:
        await producer.stop()
    assert await dlq.move_parked(stack.kafka, old, new, alphas) == dlq.Moved(1, 1, 0)
    assert await values(stack, new) == [b"v0", b"v1"]


async def test_no_old_dlq_is_nothing_to_move(stack: EmbeddedStack) -> None:
    topic = unique("migrate") + ".change"
    new = names.dlq_topic(topic, "alpha-svc")
    await ensure_topics(stack.kafka, [new], partitions=1)
    moved = await dlq.move_parked(stack.kafka, names.legacy_dlq_topic(topic), new, alphas)
    assert moved == dlq.Moved(0, 0, 0)


async def test_the_consuming_service_moves_its_own(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """orders, with its own Kafka identity (it may read the old name, write only its own
    DLQ), moves what it parked from accounts' topic; another group's record stays."""
    topic = topology.CUSTOMER_CHANGES
    old = names.legacy_dlq_topic(topic)
    mine = topology.SYSTEM.service(topology.ORDERS).dlq(topic)
    await ensure_topics(stack.kafka, [old], partitions=1)
    tag = unique("t")
    settings = settings_for(stack, topology.ORDERS, mongo_db_name)
    await park(stack, old, [settings.consumer_group, "audit-svc"], tag=tag)
    async with running(build, settings) as app:
        admin = channel(f"127.0.0.1:{app.admin_port}", tokens_of(stack))
        try:
            stub = admin_pb2_grpc.AdminServiceStub(admin)
            request = admin_pb2.MigrateParkedRequest(topic=topic)
            first = await stub.MigrateParked(request)
            again = await stub.MigrateParked(request)
        finally:
            await admin.close()
    assert (first.old_dlq, first.dlq) == (old, mine)
    assert (first.moved, first.already, first.others) == (1, 0, 1)
    assert (again.moved, again.already, again.others) == (0, 1, 1)
    assert (await values(stack, mine)).count(f"{tag}0".encode()) == 1
