"""Extension proven (issue 21, item 6): one more consumer, declared under tests/ (the status
counter of tests/counter), gets its Kafka ACLs, its own DLQ, its lag in `storefront status`,
its node in the console graph, its Prometheus target and its mesh manifests (KafkaUser, DLQ
KafkaTopic, Deployment) from its topology entry alone.

The counter runs for real on the embedded broker (as the tooling identity, which may use any
group: the broker's SCRAM users are the declared system's, made when the stack was formatted;
the operator's only reads).
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from google.protobuf.timestamp_pb2 import Timestamp

import topology
from stack import kafka_security, prometheus
from stack.embedded import EmbeddedStack, ensure_topics, free_ports
from stack.kafka_security import Acl, Op, Pattern, Resource
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import events_pb2
from storefront_cli import endpoints, status, system
from storefront_cli.clients import eventually
from storefront_cli.console import graph
from storefront_cli.where import Where
from svckit import names
from svckit.consumer import EventConsumer
from svckit.envelope import encode
from svckit.kafka import EventProducer
from tests.counter import COUNTER, StatusCounter
from tests.support import unique

pytestmark = pytest.mark.integration
GROWN = topology.SYSTEM.adding(COUNTER)
TOPIC = topology.ORDER_STATUS
ISTIO = Path(__file__).resolve().parents[2] / "istio"


def test_its_acls_are_its_topic_its_dlq_and_its_group() -> None:
    acls = set(kafka_security.all_acls(GROWN))
    mine = {a for a in acls if a.user == COUNTER.name}
    dlq = COUNTER.dlq(TOPIC)

    def grant(resource: Resource, name: str, op: Op) -> Acl:
        return Acl(COUNTER.name, resource, name, Pattern.LITERAL, op)

    assert grant(Resource.TOPIC, TOPIC, Op.READ) in mine
    assert {grant(Resource.TOPIC, dlq, op) for op in (Op.READ, Op.WRITE)} <= mine
    assert grant(Resource.GROUP, "counter-svc", Op.READ) in mine
    assert not any(a.op == Op.WRITE and a.name != dlq for a in mine)  # publishes nothing
    before = set(kafka_security.all_acls())
    assert acls - before == mine  # nobody else's grants changed


def test_its_node_and_edge_are_in_the_console_graph_laid_out() -> None:
    nodes, edges = graph.build({}, GROWN)
    assert COUNTER.name in {n.id for n in nodes}
    assert f"topic:{TOPIC}>{COUNTER.name}" in {e.id for e in edges}
    at = graph.layout(nodes, edges)
    assert (at.x[COUNTER.name], at.y[COUNTER.name]) not in {
        (at.x[n.id], at.y[n.id]) for n in nodes if n.id != COUNTER.name
    }


def test_prometheus_scrapes_it(tmp_path: Path) -> None:
    ports = system.SystemPorts.declared(GROWN)
    config = yaml.safe_load(
        prometheus.render_config(tmp_path / "prometheus.yml", ports, system=GROWN).read_text()
    )
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "storefront"]
    targets = {t["labels"]["app"]: t["targets"] for t in job["static_configs"]}
    assert targets[COUNTER.name] == [f"127.0.0.1:{COUNTER.metrics_port}"]
    assert set(targets) == set(GROWN.names)


@pytest.fixture
async def counting(stack: EmbeddedStack) -> AsyncIterator[tuple[StatusCounter, str]]:
    """The counter consuming for real, in a group of this run (as `storefront run` names
    them: `counter-svc.<run>`)."""
    run = unique("ext")
    await ensure_topics(stack.kafka, GROWN.all_topics)  # the stack's topics, from the system
    counter = StatusCounter()
    producer = EventProducer(stack.kafka, "test-extension")
    await producer.start()
    consumer = EventConsumer(
        kafka=stack.kafka,
        group_id=names.consumer_group(COUNTER.name, run),
        topics=list(COUNTER.consumes),
        handlers=counter.event_handlers(),
        producer=producer,
        service=COUNTER.name,
    )
    await consumer.start()
    try:
        yield counter, run
    finally:
        await consumer.stop()
        await producer.stop()


async def test_it_consumes_and_its_lag_and_dlq_show_in_status(
    stack: EmbeddedStack, counting: tuple[StatusCounter, str]
) -> None:
    counter, run = counting
    order_id = f"o-{uuid.uuid4().hex}"
    event = events_pb2.OrderStatusChanged(
        order_id=order_id,
        version=1,
        status=common_pb2.ORDER_STATUS_SHIPPED,
        change_time=Timestamp(),
    )
    value, headers = encode(event, source=names.source(topology.FULFILLMENT), key=order_id)
    raw = stack.kafka.producer(acks="all")
    await raw.start()
    try:
        await raw.send_and_wait(TOPIC, value, key=order_id.encode(), headers=headers)
    finally:
        await raw.stop()

    async def counted() -> int | None:
        return counter.statuses[order_id] or None

    await eventually(counted, timeout=60, what="the counter counted it")

    where = Where(
        endpoints.Endpoints(stack.kafka, stack.mongodb_uri, db_prefix=run),
        system.SystemPorts.declared(GROWN),
        prometheus_port=free_ports(1)[0],
        system=GROWN,
    )

    async def drained() -> status.Snapshot | None:
        snap = await status.snapshot(where, timeout=10.0)
        mine = [r for r in snap.lags or [] if r.group == where.group(COUNTER.name)]
        return snap if mine and all(r.lag == 0 for r in mine) else None

    snap = await eventually(drained, timeout=60, what="the counter's lag at zero in status")
    rows = [r for r in snap.lags or [] if r.group == f"counter-svc.{run}"]
    assert {r.topic for r in rows} == {TOPIC}
    assert COUNTER.dlq(TOPIC) in {d.topic for d in snap.dead_letters or []}
    assert "counter_svc" in {h.part for h in snap.health}


def test_the_mesh_gets_its_manifest_its_kafka_user_and_its_dlq_topic() -> None:
    spec = importlib.util.spec_from_file_location("gen_topology", ISTIO / "gen_topology.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    files = {path.name: text for path, text in gen.rendered(GROWN).items()}
    assert "counter.yaml" in files and "  - counter.yaml" in files["kustomization.yaml"]
    users = {d["metadata"]["name"]: d for d in yaml.safe_load_all(files["kafka-users.yaml"])}
    granted = {r["resource"]["name"] for r in users[COUNTER.name]["spec"]["authorization"]["acls"]}
    # Its topic, its DLQ, its groups; and, read only, the topic's DLQ under its old name (to
    # move out what it parked there before the DLQs were per group: `storefront dlq migrate`).
    legacy = names.legacy_dlq_topic(TOPIC)
    assert granted == {TOPIC, COUNTER.dlq(TOPIC), legacy, "counter-svc", "counter-svc.dlq-replay"}
    topics = [d["spec"]["topicName"] for d in yaml.safe_load_all(files["kafka-topics.yaml"])]
    assert COUNTER.dlq(TOPIC) in topics
    [_, routes] = yaml.safe_load_all(files["gateway.yaml"])
    assert not [r for r in routes["spec"]["http"] if COUNTER.name in r["name"]]  # internal
