"""The embedded broker's identities and ACLs, against the real broker: each service may do what
its role needs and nothing else (stack.kafka_security), and nobody gets in without a password."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)

import topology
from stack.embedded import EmbeddedStack
from stack.kafka_security import (
    BROKER,
    OPERATOR,
    all_acls,
    describe_acls,
    roles,
    sync_acls,
)
from svckit.kafka import KafkaConnection
from svckit.names import consumer_group

pytestmark = pytest.mark.integration

CUSTOMERS = "accounts.customer.change"
FULFIL = "orders.order.fulfill"
STATUS = "fulfillment.order.change"


@pytest.fixture(autouse=True)
def embedded(stack: EmbeddedStack) -> None:
    if stack.external_kafka:
        pytest.skip("Kafka is external: its identities and ACLs are its own")


async def produce(kafka: KafkaConnection, topic: str, *, idempotent: bool = True) -> None:
    """One record; `idempotent=False` for an identity with no Write anywhere, which an
    idempotent producer's InitProducerId would refuse before any topic is named."""
    producer = kafka.producer(acks="all", enable_idempotence=idempotent, request_timeout_ms=10_000)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"acl-test", key=b"acl"), 20)
    finally:
        await producer.stop()


async def consume_one_poll(kafka: KafkaConnection, topic: str, group: str) -> None:
    """Join `group` on `topic` and poll once (errors of the poll are raised)."""
    consumer = kafka.consumer(
        topic, group_id=group, enable_auto_commit=False, auto_offset_reset="latest"
    )
    try:
        await consumer.start()
        await asyncio.wait_for(consumer.getmany(timeout_ms=2000), 30)
    finally:
        await consumer.stop()


async def test_each_service_produces_to_its_own_topic(stack: EmbeddedStack) -> None:
    for role in roles():
        for topic in role.produces:
            await produce(stack.kafka_as(role.user), topic)


async def test_accounts_cannot_produce_to_orders_topic(stack: EmbeddedStack) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(stack.kafka_as("accounts"), FULFIL)


async def test_orders_cannot_write_accounts_topic(stack: EmbeddedStack) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(stack.kafka_as("orders"), CUSTOMERS)


async def test_consumers_write_only_their_own_dlq(stack: EmbeddedStack) -> None:
    orders, fulfillment = (topology.SYSTEM.service(s) for s in ("orders", "fulfillment"))
    await produce(stack.kafka_as("orders"), orders.dlq(CUSTOMERS))
    await produce(stack.kafka_as("fulfillment"), fulfillment.dlq(FULFIL))
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(stack.kafka_as("fulfillment"), orders.dlq(CUSTOMERS))
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(stack.kafka_as("accounts"), orders.dlq(STATUS))


async def test_orders_consumes_with_its_own_group(stack: EmbeddedStack) -> None:
    run = uuid.uuid4().hex[:8]
    await consume_one_poll(stack.kafka_as("orders"), CUSTOMERS, consumer_group("orders", run))


async def test_orders_cannot_consume_with_fulfillments_group(stack: EmbeddedStack) -> None:
    with pytest.raises(GroupAuthorizationFailedError):
        await consume_one_poll(stack.kafka_as("orders"), STATUS, consumer_group("fulfillment"))


async def test_fulfillment_cannot_read_customers(stack: EmbeddedStack) -> None:
    """Names, contacts and addresses are for orders only."""
    group = consumer_group("fulfillment", uuid.uuid4().hex[:8])
    with pytest.raises(TopicAuthorizationFailedError):
        await consume_one_poll(stack.kafka_as("fulfillment"), CUSTOMERS, group)


async def test_a_service_cannot_create_topics(stack: EmbeddedStack) -> None:
    from stack.embedded import ensure_topics

    topic = f"acl-test-{uuid.uuid4().hex}"
    with pytest.raises(TimeoutError, match="code 29"):  # TOPIC_AUTHORIZATION_FAILED
        await ensure_topics(stack.kafka_as("accounts"), [topic], max_wait=5)
    with pytest.raises(TimeoutError, match="code 29"):
        await ensure_topics(stack.kafka_as(OPERATOR), [topic], max_wait=5)
    assert await ensure_topics(stack.kafka, [topic], max_wait=30) == [topic]  # tooling may


async def test_operator_cannot_forge_a_customer_change(stack: EmbeddedStack) -> None:
    """The operator's password opens the console and every CLI command: it must not be
    enough to publish an attacker's shipping address as accounts."""
    orders_dlq = topology.SYSTEM.service(topology.ORDERS).dlq(CUSTOMERS)
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(stack.kafka_as(OPERATOR), CUSTOMERS, idempotent=False)
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(stack.kafka_as(OPERATOR), orders_dlq, idempotent=False)


async def test_operator_cannot_join_a_service_group(stack: EmbeddedStack) -> None:
    """Joining orders-svc would take partitions from orders and skip its records."""
    with pytest.raises(GroupAuthorizationFailedError):
        await consume_one_poll(stack.kafka_as(OPERATOR), CUSTOMERS, consumer_group("orders"))


async def test_operator_reads_topics_and_group_offsets(stack: EmbeddedStack) -> None:
    """What status, dlq list, watch and the console need: read records (no group) and the
    services' committed offsets."""
    from svckit.dlq import replayed_upto
    from svckit.replay import TopicReader, partitions_of

    operator = stack.kafka_as(OPERATOR)
    await produce(stack.kafka, CUSTOMERS)  # something to read, written as tooling
    async with TopicReader(operator, [CUSTOMERS]) as reader:
        assert reader.total >= 1
    group = consumer_group("orders")
    dlq = topology.SYSTEM.service(topology.ORDERS).dlq(CUSTOMERS)
    partitions = await partitions_of(operator, dlq)
    assert set(await replayed_upto(operator, group, partitions)) == set(partitions)


async def test_unauthenticated_client_is_refused(stack: EmbeddedStack) -> None:
    anonymous = KafkaConnection(bootstrap_servers=stack.kafka_bootstrap)  # PLAINTEXT
    admin = anonymous.admin(request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(admin.start(), 30)
    await admin.close()


async def test_wrong_password_is_refused(stack: EmbeddedStack) -> None:
    impostor = dataclasses.replace(stack.kafka_as("accounts"), password="not-the-password")
    admin = impostor.admin(request_timeout_ms=5000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(admin.start(), 30)
    await admin.close()


async def test_broker_holds_exactly_the_acl_table(stack: EmbeddedStack) -> None:
    """The stack syncs ACLs at start: a stale one from an older table is removed, not kept."""
    broker = stack.kafka_as(BROKER)
    wanted = await describe_acls(broker)
    assert {rule[:6] for rule in wanted} == {
        (a.resource, a.name, a.pattern, a.principal, "*", a.op) for a in all_acls()
    }
    accounts_write = next(a for a in all_acls() if a.user == "accounts" and a.op.name == "WRITE")
    extra = dataclasses.replace(accounts_write, name=FULFIL)  # accounts writing orders' topic
    assert await sync_acls(broker, [*all_acls(), extra]) == (1, 0)
    await produce(stack.kafka_as("accounts"), FULFIL)
    assert await sync_acls(broker, all_acls()) == (0, 1)
    assert await describe_acls(broker) == wanted
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(stack.kafka_as("accounts"), FULFIL)


def test_acl_table_gives_services_no_wildcards() -> None:
    services = [a for a in all_acls() if a.user in {r.user for r in roles()}]
    assert services and all(a.name != "*" for a in services)
