"""`storefront status` and `storefront watch` against the running system, run as an
operator runs them (the CLI in a subprocess), plus the counting behind them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

import topology
from stack.embedded import EmbeddedStack, free_ports
from storefront.accounts.v1 import accounts_pb2, events_pb2
from storefront_cli import endpoints, offsets, status
from storefront_cli.clients import CLIENT_SERVICES, Clients
from storefront_cli.demo import PEOPLE, customer_draft, demo_loop
from storefront_cli.where import Where
from svckit.names import consumer_group
from svckit.outbox import OUTBOX, PENDING, outbox_entry
from tests.e2e.conftest import System
from tests.support import eventually, tokens_of

pytestmark = pytest.mark.e2e
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT[\d:.]+Z  (?P<topic>[a-z.]+)  (?P<partition>\d+)@(?P<offset>\d+)  "
    r"(?P<type>\w+|\?)  (?P<key>\S*)  (?P<summary>.*)$"
)


def location_flags(s: System) -> list[str]:
    [nothing_there] = free_ports(1)  # no Prometheus: status must still pass
    return [
        "--kafka",
        s.stack.kafka_bootstrap,
        "--db-prefix",
        s.db_prefix,
        "--accounts-port",
        str(s.ports.grpc(topology.ACCOUNTS)),
        "--orders-port",
        str(s.ports.grpc(topology.ORDERS)),
        "--fulfillment-port",
        str(s.ports.grpc(topology.FULFILLMENT)),
        "--catalog-port",
        str(s.ports.grpc(topology.CATALOG)),
        *(f"--{n}-admin-port={s.ports.admin(n)}" for n in topology.SYSTEM.names),
        "--envoy-admin-port",
        str(s.ports.envoy_admin),
        "--prometheus-port",
        str(nothing_there),
    ]


def operator_env(s: System) -> dict[str, str]:
    """The CLI's environment: the test stack's operator identity, as stack.env gives it
    (its MongoDB password in a file: none on the CLI's command line)."""
    return {**os.environ, **s.stack.env()}


async def cli(s: System, *args: str, timeout: float = 90.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "storefront_cli",
        *args,
        env=operator_env(s),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def where(s: System) -> Where:
    ep = endpoints.Endpoints(s.stack.kafka, s.stack.mongodb_uri, s.db_prefix)
    return Where(ep, s.ports, prometheus_port=free_ports(1)[0])


async def test_status_shows_every_part_up_and_the_tables(running_system: System) -> None:
    code, out, err = await cli(running_system, "status", *location_flags(running_system))
    assert code == 0, out + err
    health = out.split("\n\n")[0].splitlines()
    for part in ("kafka", "mongodb", *(f"{n}_svc" for n in topology.SYSTEM.names), "envoy"):
        [row] = [line for line in health if line.startswith(part + " ")]
        assert " UP " in row, row
    assert "down (optional)" in out  # the absent Prometheus is reported, not fatal
    p = running_system.db_prefix
    for group, topics in ((s.name, s.consumes) for s in topology.SYSTEM.consumers):
        for topic in topics:
            rows = [
                line for line in out.splitlines() if line.startswith(f"{consumer_group(group, p)} ")
            ]
            assert len([r for r in rows if f" {topic} " in r]) == 3  # one per partition
    for title in ("Consumer lag (total", "Dead-letter queues (total", "Outbox backlog (total"):
        assert title in out
    for service, collection in ((s.name, s.aggregate) for s in topology.SYSTEM.publishers):
        assert re.search(rf"^{service} +{re.escape(collection)} +\d+ +\d+ ", out, re.M), out


async def test_status_shows_database_credentials_redacted(running_system: System) -> None:
    """A URI with a (wrong) password, which the database refuses: the table names the user,
    never the password, whatever the answer."""
    port = running_system.stack.ports.mongodb
    uri = f"mongodb://shop:hunter2@127.0.0.1:{port}/?authMechanism=PLAIN&authSource=%24external"
    flags = [*location_flags(running_system), "--mongodb", uri]
    code, out, err = await cli(running_system, "status", *flags, "--timeout", "1")
    assert "hunter2" not in out + err
    [row] = [line for line in out.splitlines() if line.startswith("mongodb ")]
    assert "mongodb://shop:***@" in row, row


async def test_status_fails_when_a_service_is_down(running_system: System) -> None:
    [dead] = free_ports(1)
    flags = location_flags(running_system)
    flags[flags.index("--orders-port") + 1] = str(dead)
    code, out, _ = await cli(running_system, "status", *flags, "--timeout", "1")
    assert code == 1
    [row] = [line for line in out.splitlines() if line.startswith("orders_svc ")]
    assert " DOWN " in row and "UNAVAILABLE" in row


async def test_consumer_lag_drains_to_zero_after_a_flow(
    running_system: System, clients: Clients
) -> None:
    customer = await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[2]))
    )
    assert customer.id
    w = where(running_system)
    groups = {
        w.group(s): topics
        for s, topics in ((s.name, s.consumes) for s in topology.SYSTEM.consumers)
    }

    async def drained() -> list[offsets.Lag] | None:
        async with offsets.KafkaOffsets(w.ep.kafka, 10.0) as kafka:
            rows = await offsets.consumer_lag(kafka, groups)
        return rows if rows and all(r.lag == 0 for r in rows) else None

    rows = await eventually(drained, timeout=60, what="zero lag")
    orders_rows = [r for r in rows if r.group == w.group("orders")]
    assert {r.topic for r in orders_rows} == set(topology.SYSTEM.service(topology.ORDERS).consumes)
    assert any(r.committed for r in orders_rows if r.topic == topology.CUSTOMER_CHANGES)


async def test_outbox_backlog_counts_entries_still_in_aggregates(stack: EmbeddedStack) -> None:
    prefix = f"ops{uuid.uuid4().hex[:8]}_"  # no service runs here, so nothing drains it
    ep = endpoints.Endpoints(stack.kafka, stack.mongodb_uri, prefix)
    now = datetime.now(UTC)
    event = events_pb2.CustomerChanged(customer_id="c", version=1)
    entries = [
        outbox_entry(topology.CUSTOMER_CHANGES, "c", event, source="//t", seq=i, now=now - age)
        for i, age in enumerate((timedelta(minutes=5), timedelta(seconds=3)))
    ]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongodb_uri)
    try:
        accounts = client[ep.database("accounts")][topology.CUSTOMERS]
        await accounts.insert_many(
            [
                {"_id": "c", OUTBOX: entries, PENDING: True},
                {"_id": "d", OUTBOX: entries[:1], PENDING: True},
                {"_id": "e"},
            ]
        )
        rows = {b.service: b for b in await status.outbox_backlog(ep, 10.0, now=now)}
    finally:
        for service in topology.SYSTEM.names:
            await client.drop_database(ep.database(service))
        await client.close()
    assert (rows["accounts"].documents, rows["accounts"].events) == (2, 3)
    assert rows["accounts"].oldest_age_s == pytest.approx(300, abs=1)
    assert (rows["orders"].events, rows["orders"].oldest_age_s) == (0, None)


async def test_watch_prints_the_next_event_decoded(
    running_system: System, clients: Clients
) -> None:
    cid = f"watch-{uuid.uuid4().hex[:12]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "storefront_cli",
        "watch",
        "--kafka",
        running_system.stack.kafka_bootstrap,
        "--key",
        cid,
        "--limit",
        "1",
        "--timeout",
        "60",
        env=operator_env(running_system),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        banner = b""
        while b"watching" not in banner:  # anything else on stderr first is not ours to judge
            banner = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert banner, "watch exited before it started watching"
        assert b"from the end" in banner
        await clients.accounts.CreateCustomer(
            accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[0]), customer_id=cid)
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    [line] = out.decode().splitlines()
    m = LINE.match(line)
    assert m, line
    assert (m["topic"], m["type"], m["key"]) == (topology.CUSTOMER_CHANGES, "CustomerChanged", cid)
    assert f'customer_id: "{cid}"' in m["summary"] and "version: 1" in m["summary"]
    assert "4111" not in line  # the event never carries card numbers


async def test_watch_from_the_beginning_stops_at_the_limit(
    running_system: System, clients: Clients
) -> None:
    for person in PEOPLE[:2]:  # at least two events, whatever ran before
        await clients.accounts.CreateCustomer(
            accounts_pb2.CreateCustomerRequest(customer=customer_draft(person))
        )
    code, out, err = await cli(
        running_system,
        "watch",
        "--kafka",
        running_system.stack.kafka_bootstrap,
        "--topic",
        topology.CUSTOMER_CHANGES,
        "--from-beginning",
        "--limit",
        "2",
        "--timeout",
        "60",
    )
    assert code == 0, err  # 1 would mean it ran into the timeout instead
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        m = LINE.match(line)
        assert m and m["topic"] == topology.CUSTOMER_CHANGES, line


async def test_status_json_is_the_data_of_the_tables(running_system: System) -> None:
    flags = location_flags(running_system)
    code, out, err = await cli(running_system, "status", *flags, "--json")
    assert code == 0, err
    [line] = out.splitlines()  # one object, nothing else on stdout
    data = json.loads(line)
    assert data["ok"] is True
    code, table, err = await cli(running_system, "status", *flags)
    assert code == 0, err
    for h in data["health"]:
        [row] = [r for r in table.splitlines() if r.startswith(h["part"] + " ")]
        assert h["endpoint"] in row and (" UP " in row) == h["ok"], row
    p = running_system.db_prefix
    groups = tuple(consumer_group(g, p) + " " for g in (s.name for s in topology.SYSTEM.consumers))
    rows = {tuple(r.split()[:3]) for r in table.splitlines() if r.startswith(groups)}
    json_rows = {
        (g["group"], g["topic"], str(g["partition"]))
        for g in data["lags"]
        if g["group"] + " " in groups
    }
    assert rows and rows == json_rows
    for b in data["backlog"]:
        assert re.search(rf"^{b['service']} +{re.escape(b['collection'])} +\d+ +\d+ ", table, re.M)


async def test_watch_json_is_one_object_per_event_as_the_lines_show(
    running_system: System, clients: Clients
) -> None:
    cid = f"watchjson-{uuid.uuid4().hex[:12]}"
    await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[1]), customer_id=cid)
    )
    flags = ["watch", "--kafka", running_system.stack.kafka_bootstrap, "--topic",
             topology.CUSTOMER_CHANGES, "--from-beginning", "--key", cid, "--limit", "1",
             "--timeout", "60"]
    code, out, err = await cli(running_system, *flags, "--json")
    assert code == 0, err
    [line] = out.splitlines()
    event = json.loads(line)
    code, text, err = await cli(running_system, *flags)
    assert code == 0, err
    m = LINE.match(text.strip())
    assert m, text
    assert (event["topic"], str(event["partition"]), str(event["offset"])) == (
        m["topic"], m["partition"], m["offset"]
    )
    assert (event["type"], event["key"]) == (m["type"], m["key"]) == ("CustomerChanged", cid)
    assert event["message"]["customerId"] == cid and event["message"]["version"] == "1"


async def test_demo_loop_goes_through_every_flow_round_after_round(running_system: System) -> None:
    lines: list[str] = []

    def connect() -> Clients:
        return Clients.connect(
            *(running_system.target(s) for s in CLIENT_SERVICES),
            tokens=tokens_of(running_system.stack),
        )

    # A round completes only once orders holds the customer's copy, fulfillment the approved
    # order, and orders the fulfillment's statuses: each flow delivered. The catalog is loaded
    # once, before the first round (its products are kept as they are when already there).
    done = await demo_loop(connect, lines.append, interval=0.1, rounds=2)
    assert done == 2, lines
    assert [line.split(":")[0] for line in lines] == [
        "[demo] catalog",
        "[demo] round 0",
        "[demo] round 1",
    ]
